"""Run-level callbacks the CLI adds to every fit: checkpoint metadata, per-epoch reseeding and a
checkpoint when the run is interrupted (Ctrl-C or SIGTERM).

Example:
    >>> trainer = L.Trainer(callbacks=[ZooMetadata("cnn", "digits"), EpochSeeder()])  # doctest: +SKIP
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from zoo.errors import ZooUserError

__all__ = ["ZooMetadata", "EpochSeeder", "InterruptCheckpoint", "ScheduleLengthCheck", "AtomicCheckpointIO"]


class ZooMetadata(Callback):
    """Stores the registered model and DataModule names in every checkpoint (``checkpoint["zoo"]``),
    so ``predict`` / ``export`` / resume know what they are loading."""

    def __init__(self, model: str, data: str) -> None:
        self.model, self.data = model, data

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["zoo"] = {"model": self.model, "data": self.data}


class EpochSeeder(Callback):
    """Reseeds Python, NumPy and torch from ``(global seed, epoch)`` at the start of every training
    epoch, so a run resumed from an epoch-end checkpoint draws the same random numbers (dropout,
    augmentation, noise) as an uninterrupted one."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        base = self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        seed = (base * 1_000_003 + trainer.current_epoch * 7919 + trainer.global_rank) % (2**31)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)


class InterruptCheckpoint(Callback):
    """Saves ``<dirpath>/interrupted.ckpt`` when training is stopped by Ctrl-C / SIGTERM (at most the
    current step is lost); other exceptions are left alone so a failed setup leaves no checkpoint.

    (Lightning's ``OnExceptionCheckpoint`` would also turn every later ``fit()`` into a resume.)
    """

    def __init__(self, dirpath: str | Path, filename: str = "interrupted") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt) and trainer.global_step > 0:
            trainer.save_checkpoint(self.path)


class ScheduleLengthCheck(Callback):
    """Refuses to resume a run whose per-step LR schedule (OneCycle, cosine) was sized for another number of
    steps: OneCycle would crash past its end and cosine would restart. Says how to fix it instead."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is None:
            return
        needed = trainer.estimated_stepping_batches
        for config in trainer.lr_scheduler_configs:
            sched = config.scheduler
            planned = getattr(sched, "total_steps", None) or getattr(sched, "T_max", None)
            if config.interval == "step" and planned is not None and planned != needed:
                raise ZooUserError(
                    f"the checkpoint's {type(sched).__name__} schedule was built for {planned} steps but this run "
                    f"needs {needed}; a resume keeps its schedule, so resume with the original --max-epochs (see "
                    "the run's config.yaml), or train a new run with the longer budget")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file and renames it into place, so a full disk or a crash
    mid-write never leaves a truncated ``.ckpt`` that looks valid (the previous one stays intact)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
