"""Stop training as soon as a loss becomes NaN or infinite, before any checkpoint of broken weights.

Checks every floating tensor a ``training_step`` returns (a tensor, or a dict such as
``{"loss": ..., "d_loss": ...}``, automatic and manual optimisation alike) at the end of each batch.
Lightning runs checkpoint callbacks after all others, so the error is raised before
``ModelCheckpoint`` can save; the CLI prints it as one line and exits with code 2.

Example:
    >>> trainer = L.Trainer(callbacks=[NanGuard()])  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any, Mapping

import lightning as L
import torch

from zoo.errors import ZooUserError

__all__ = ["NanGuard", "NonFiniteLossError"]


class NonFiniteLossError(ZooUserError):
    """A training loss became NaN or infinite."""


class NanGuard(L.Callback):
    """Raise :class:`NonFiniteLossError` naming the step when a training loss is NaN/inf."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        items = outputs.items() if isinstance(outputs, Mapping) else [("loss", outputs)]
        for name, value in items:
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
                bad = "nan" if torch.isnan(value).any() else "inf"
                raise NonFiniteLossError(
                    f"training stopped: {name} became {bad} at step {trainer.global_step} (epoch "
                    f"{trainer.current_epoch}, batch {batch_idx}); no checkpoint was written for it - lower the "
                    f"learning rate (--model.lr), add --trainer.gradient_clip_val 1.0 or use --precision 32")
