"""The default run: LightningCLI builds model, data and trainer; fit with early stopping and
checkpoints, test the best checkpoint, write ``metrics.json``.

Example:
    >>> fit_and_test("cnn", None, zoo_parser().parse_args([]), ["--trainer.max_epochs=1"])  # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import inspect
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import callbacks as cb
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.model_helpers import is_overridden

from zoo.callbacks.nan_guard import NanGuard
from zoo.callbacks.run import EpochSeeder, InterruptCheckpoint, ZooMetadata
from zoo.cli import device_settings
from zoo.errors import ZooUserError
from zoo.registry import ModelEntry, get_datamodule_class, get_model_entry
from zoo.runs import (build_logger, check_checkpoint, finish_logger, is_wandb, new_run_dir, remember_wandb_id,
                      resolve_resume, write_metrics)

__all__ = ["ZooCLI", "fit_and_test"]

RUN_DIR_ENV = "ZOO_RUN_DIR"


class ZooCLI(LightningCLI):
    """LightningCLI for one registered model and DataModule: links data shapes into the model,
    applies the registered defaults, and creates the run folder once the arguments are valid."""

    def __init__(self, entry: ModelEntry, data_name: str, zoo_args: argparse.Namespace, **kwargs: Any) -> None:
        self.entry, self.data_name, self.zoo_args = entry, data_name, zoo_args
        self.run_dir: Path | None = None
        self.created_run_dir = False
        self.resume_ckpt: Path | None = None
        self.cli_args: list[str] = list(kwargs.get("args") or [])
        super().__init__(entry.cls, get_datamodule_class(data_name), **kwargs)

    def user_set_trainer(self, key: str) -> bool:
        """Whether the command line or a ``-c`` config sets ``trainer.<key>`` explicitly."""
        import yaml

        flag = f"--trainer.{key}"
        if any(a == flag or a.startswith(flag + "=") for a in self.cli_args):
            return True
        configs = [Path(a.split("=", 1)[1]) for a in self.cli_args if a.startswith("--config=")]
        return any(key in ((yaml.safe_load(c.read_text()) or {}).get("trainer") or {}) for c in configs)

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument("--zoo.model", default=self.entry.name, help="registered model name (informational)")
        parser.add_argument("--zoo.data", default=self.data_name, help="registered DataModule name (informational)")
        params = inspect.signature(self.entry.cls.__init__).parameters
        data_params = inspect.signature(self.datamodule_class.__init__).parameters
        from_model = [f for f in getattr(self.datamodule_class, "link_from_model", ()) if f in params and f in data_params]
        for field in from_model:  # e.g. --model.backbone also picks the DataModule's tokenizer
            parser.link_arguments(f"model.{field}", f"data.{field}", apply_on="parse")
        for field in getattr(self.datamodule_class, "link_fields", ()):
            if field in params and field not in from_model:
                parser.link_arguments(f"data.{field}", f"model.{field}", apply_on="instantiate")
        parser.set_defaults({f"model.{k}": v for k, v in self.entry.defaults.items()})
        parser.set_defaults({f"data.{k}": v for k, v in self.entry.cls.data_defaults.items() if k in data_params})

    def before_instantiate_classes(self) -> None:
        args, cfg = self.zoo_args, self.config
        devices = cfg.trainer.devices
        multi = cfg.trainer.num_nodes > 1 or (isinstance(devices, int) and devices > 1) or (
            isinstance(devices, (list, tuple)) and len(devices) > 1)
        if multi and not self.entry.cls.supports_multi_device:
            raise ZooUserError(f"model '{self.entry.name}' trains on a single device only; use --gpus 1 "
                              "(or one --trainer.devices)")
        if args.ckpt_path:
            self.resume_ckpt, self.run_dir = resolve_resume(args.ckpt_path, args.runs_dir, self.entry.name)
        elif os.environ.get(RUN_DIR_ENV) and int(os.environ.get("LOCAL_RANK", "0")) > 0:
            self.run_dir = Path(os.environ[RUN_DIR_ENV])  # a DDP worker joins the folder rank 0 made
        else:
            self.run_dir = new_run_dir(args.runs_dir, self.entry.name, args.output_dir)
            self.created_run_dir = True
        os.environ[RUN_DIR_ENV] = str(self.run_dir)  # inherited by the DDP worker processes
        cfg.trainer.default_root_dir = str(self.run_dir)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except BaseException:
            self.cleanup()
            raise

    def cleanup(self) -> None:
        """Remove the run folder this invocation created if no file but its config was written."""
        run = self.run_dir
        if self.created_run_dir and run is not None and run.is_dir():
            if all(p.name == "config.yaml" for p in run.rglob("*") if p.is_file()):
                shutil.rmtree(run)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        args, monitor, mode = self.zoo_args, self.model.monitor, self.model.monitor_mode  # may depend on the task
        if monitor and monitor.startswith("val/") and self.config.trainer.limit_val_batches == 0:
            rank_zero_warn(f"validation is off (limit_val_batches=0): no early stopping on {monitor}, and the "
                           "last checkpoint is the one tested")
            monitor = None
        ckpt_dir = self.run_dir / "checkpoints"
        callbacks: list[Any] = [
            cb.ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode=mode, save_last=True,
                               save_top_k=1 if monitor else 0, auto_insert_metric_name=False),
            InterruptCheckpoint(dirpath=ckpt_dir, filename="interrupted"),
            cb.LearningRateMonitor(logging_interval="epoch"),
            ZooMetadata(self.entry.name, self.data_name),
            EpochSeeder(),
            NanGuard(),
            cb.Timer(),
        ]
        patience = args.patience if args.patience is not None else self.model.default_patience
        if monitor and patience > 0 and not args.no_early_stopping:
            callbacks.append(cb.EarlyStopping(monitor=monitor, mode=mode, patience=patience, check_finite=True))
        user_logger = self.config.trainer.logger not in (None, True)
        logger = None if user_logger else build_logger(args, self.run_dir, self.entry.name)
        self.trainer_defaults = {**self.trainer_defaults, "callbacks": callbacks}
        refined = {k: v for k, v in self.model.trainer_defaults.items()  # e.g. GAT's longer budget than GCN's
                   if self.entry.cls.trainer_defaults.get(k) != v and not self.user_set_trainer(k)}
        return super().instantiate_trainer(**({} if user_logger else {"logger": logger}), **refined, **kwargs)


def _trainer_defaults(entry: ModelEntry, args: argparse.Namespace) -> dict[str, Any]:
    settings = device_settings(args.gpus, args.num_nodes)
    return {"log_every_n_steps": 10, "max_epochs": 20, **entry.cls.trainer_defaults, **settings}


def _save_config(cli: ZooCLI) -> None:
    name = "config.yaml" if not (cli.run_dir / "config.yaml").exists() else f"config-resume-{time.strftime('%Y%m%d-%H%M%S')}.yaml"
    if cli.trainer.is_global_zero:
        (cli.run_dir / name).write_text(cli.parser.dump(cli.config, skip_none=False, skip_check=True))


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def fit_and_test(model_name: str, data_name: str | None, args: argparse.Namespace, cli_args: list[str]) -> int:
    """Fit, test the best checkpoint, write metrics.json; return the exit code."""
    entry = get_model_entry(model_name)
    data_name = data_name or entry.datamodule
    argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI reads `cli_args` only (DDP workers re-run argv)
    try:
        cli = ZooCLI(entry, data_name, args, run=False, args=cli_args, save_config_callback=None,
                     trainer_defaults=_trainer_defaults(entry, args), parser_kwargs={"exit_on_error": False},
                     seed_everything_default=42)
    finally:
        sys.argv = argv
    trainer = cli.trainer
    try:
        _save_config(cli)
        if cli.resume_ckpt is not None:
            check_checkpoint(cli.resume_ckpt, cli.model, entry.name)
        for logger in trainer.loggers:
            logger.log_hyperparams({f"data/{k}": v for k, v in cli.datamodule.hparams.items()}
                                   | {"zoo/model": entry.name, "zoo/data": data_name})
        if trainer.is_global_zero and trainer.logger is not None:
            remember_wandb_id(trainer.logger, cli.run_dir)
        if args.wandb_watch and is_wandb(trainer.logger):
            trainer.logger.watch(cli.model, log="gradients")
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        start = time.perf_counter()
        try:
            trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.resume_ckpt)
        except SystemExit:  # Lightning exits with 1 after a graceful Ctrl-C / SIGTERM shutdown
            if not trainer.interrupted:
                raise
    except ZooUserError:
        cli.cleanup()
        raise
    if trainer.interrupted:
        print(f"interrupted; checkpoint in {cli.run_dir / 'checkpoints'}; resume with "
              f"`python train.py --model {entry.name} --ckpt-path {cli.run_dir}`")
        return 130
    metrics = dict(trainer.callback_metrics)
    epochs, fit_time = trainer.current_epoch, time.perf_counter() - start
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    timer = next((c for c in trainer.callbacks if isinstance(c, cb.Timer)), None)
    train_time = round(timer.time_elapsed("train"), 3) if timer else None
    if is_overridden("test_step", cli.model):
        for result in trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best or None):
            metrics.update(result)
    if trainer.is_global_zero:
        path = write_metrics(cli.run_dir, metrics, {
            "epochs": epochs, "wall_time_s": round(time.perf_counter() - start, 3), "fit_time_s": round(fit_time, 3),
            "train_time_s": train_time,
            "best_checkpoint": best or None, "model": entry.name, "data": data_name,
            "seed": cli.config.seed_everything, "global_step": trainer.global_step})
        print(f"metrics: {path}")
    finish_logger(trainer.logger)
    return 0
