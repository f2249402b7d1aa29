"""The default run: LightningCLI builds model, data and trainer; fit with early stopping and
checkpoints, test the best checkpoint, write ``metrics.json``.

Example:
    >>> fit_and_test("cnn", None, zoo_parser().parse_args([]), ["--trainer.max_epochs=1"])  # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import errno
import inspect
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import callbacks as cb
from lightning.pytorch.cli import LightningCLI
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.model_helpers import is_overridden

from zoo.callbacks.curves import MetricCurves
from zoo.callbacks.health import ActivationStats, GradientHealth
from zoo.callbacks.inspect_images import ImageInsight
from zoo.callbacks.nan_guard import NanGuard
from zoo.callbacks.run import AtomicCheckpointIO, EpochSeeder, InterruptCheckpoint, ScheduleLengthCheck, ZooMetadata
from zoo.devices import device_settings
from zoo.datamodules.interfaces import missing_members
from zoo.errors import ZooUserError
from zoo.precision import bf16_notice
from zoo.registry import ModelEntry, get_datamodule_class, get_model_entry
from zoo.runs import (atomic_write_text, build_logger, check_checkpoint, finish_logger, free_name, is_wandb,
                      global_rank, launched_run_dir, new_run_dir, remember_wandb_id, resolve_resume, write_metrics)

__all__ = ["ZooCLI", "fit_and_test", "test_run"]

UNTESTED = "train.py tune tests the study's best trial only"

RUN_DIR_ENV = "ZOO_RUN_DIR"
WRITE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EPERM)


class ZooCLI(LightningCLI):
    """LightningCLI for one registered model and DataModule: links data shapes into the model,
    applies the registered defaults, and creates the run folder once the arguments are valid."""

    def __init__(self, entry: ModelEntry, data_name: str, zoo_args: argparse.Namespace, **kwargs: Any) -> None:
        self.entry, self.data_name, self.zoo_args = entry, data_name, zoo_args
        self.run_dir: Path | None = None
        self.created_run_dir = False
        self.resume_ckpt: Path | None = None
        self.cli_args: list[str] = list(kwargs.get("args") or [])
        kwargs.setdefault("auto_configure_optimizers", False)  # one spelling: --model.optimizer (no --optimizer)
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
        from_model = [f for f in getattr(self.datamodule_class, "link_from_model", ())
                      if f in params and f in data_params]
        for field in from_model:  # e.g. --model.backbone also picks the DataModule's tokenizer
            parser.link_arguments(f"model.{field}", f"data.{field}", apply_on="parse")
        for field in getattr(self.datamodule_class, "link_fields", ()):
            if field in params and field not in from_model:
                parser.link_arguments(f"data.{field}", f"model.{field}", apply_on="instantiate")
        parser.set_defaults({f"model.{k}": v for k, v in self.entry.defaults.items()})
        for key, value in self.entry.cls.data_defaults.items():  # also arguments passed on through **kwargs
            with contextlib.suppress(KeyError):  # a DataModule without this argument keeps its own behaviour
                parser.set_defaults({f"data.{key}": value})

    def before_instantiate_classes(self) -> None:
        args, cfg = self.zoo_args, self.config
        devices = cfg.trainer.devices
        multi = cfg.trainer.num_nodes > 1 or (isinstance(devices, int) and devices > 1) or (
            isinstance(devices, (list, tuple)) and len(devices) > 1)
        if multi and not self.entry.cls.supports_multi_device:
            raise ZooUserError(f"model '{self.entry.name}' trains on a single device only; use --gpus 1 "
                              "(or one --trainer.devices)")
        if args.ckpt_path and args.output_dir:
            raise ZooUserError("--output-dir cannot be combined with --ckpt-path: a resume continues in the "
                               "checkpoint's own run folder; drop --output-dir")
        if args.ckpt_path:
            self.resume_ckpt, self.run_dir = resolve_resume(args.ckpt_path, args.runs_dir, self.entry.name,
                                                            self.data_name)
        elif os.environ.get(RUN_DIR_ENV) and int(os.environ.get("LOCAL_RANK", "0")) > 0:
            self.run_dir = Path(os.environ[RUN_DIR_ENV])  # a worker of Lightning's launcher joins rank 0's folder
        elif (launched := launched_run_dir(args.runs_dir, self.entry.name, args.output_dir)) is not None:
            self.run_dir = launched  # torchrun / SLURM: every rank in the folder global rank 0 made
            self.created_run_dir = global_rank() == 0
        else:
            self.run_dir = new_run_dir(args.runs_dir, self.entry.name, args.output_dir)
            self.created_run_dir = True
        os.environ[RUN_DIR_ENV] = str(self.run_dir)  # inherited by the DDP worker processes
        cfg.trainer.default_root_dir = str(self.run_dir)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, RuntimeError, TypeError, MisconfigurationException) as exc:
            self.cleanup()  # a value the constructors reject (dropout 2, channels -1, max_epochs -3): one line
            part = "trainer" if getattr(self, "model", None) is not None else "model/data"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ZooUserError(f"invalid {part} settings: {first} (see `python train.py --model {self.entry.name} "
                               "--help`)") from exc
        except BaseException:
            self.cleanup()
            raise

    def cleanup(self) -> None:
        """Remove the run folder this invocation created if nothing but its config (and the logger's copy of
        the hyperparameters) was written."""
        run = self.run_dir
        if self.created_run_dir and run is not None and run.is_dir():
            if all(p.name in ("config.yaml", "hparams.yaml") for p in run.rglob("*") if p.is_file()):
                shutil.rmtree(run)
                with contextlib.suppress(OSError):  # runs/<model> too, when this was its only run
                    run.parent.rmdir()

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        args, monitor, mode = self.zoo_args, self.model.monitor, self.model.monitor_mode  # may depend on the task
        need = self.model.data_interface
        if need is not None and (missing := missing_members(self.datamodule, need)):
            raise ZooUserError(f"data '{self.data_name}' does not give model '{self.entry.name}' what it needs "
                               f"({need.__name__}: no {', '.join(missing)}); use --data {self.entry.datamodule} "
                               "or a DataModule of that kind")
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
            ScheduleLengthCheck(),
            MetricCurves(),
            cb.Timer(duration=self.config.trainer.max_time),  # ours replaces Lightning's: it must keep the limit
        ]
        callbacks += list(getattr(args, "extra_callbacks", []))  # e.g. train.py tune's pruning callback
        if args.debug_stats:  # hooks only with this switch (zoo/callbacks/health.py, inspect_images.py)
            layers = None if args.debug_layers == "*" else args.debug_layers
            callbacks += [ActivationStats(args.debug_every, args.debug_layers),
                          GradientHealth(args.debug_every, args.debug_layers), ImageInsight(layers)]
        patience = args.patience if args.patience is not None else self.model.default_patience
        if monitor and patience > 0 and not args.no_early_stopping:
            # checked after validation only: a --trainer.max_steps end mid-epoch has no validation metric yet
            callbacks.append(cb.EarlyStopping(monitor=monitor, mode=mode, patience=patience, check_finite=True,
                                              check_on_train_epoch_end=False))
        user_logger = self.config.trainer.logger not in (None, True)
        logger = None if user_logger else build_logger(args, self.run_dir, self.entry.name)
        plugins = {} if self.config.trainer.plugins else {"plugins": [AtomicCheckpointIO()]}
        self.trainer_defaults = {**self.trainer_defaults, "callbacks": callbacks}
        refined = {k: v for k, v in self.model.trainer_defaults.items()  # e.g. GAT's longer budget than GCN's
                   if self.entry.cls.trainer_defaults.get(k) != v and not self.user_set_trainer(k)}
        loggers = {} if user_logger else {"logger": logger}
        # max_time is our Timer's duration (above); given to the Trainer too, Lightning would say it ignores it
        return super().instantiate_trainer(**loggers, **plugins, **refined, max_time=None, **kwargs)


def _trainer_defaults(entry: ModelEntry, args: argparse.Namespace) -> dict[str, Any]:
    settings = device_settings(args.gpus, args.num_nodes)
    return {"log_every_n_steps": 10, "max_epochs": 20, **entry.cls.trainer_defaults, **settings}


def _save_config(cli: ZooCLI) -> None:
    """``config.yaml`` (a resume writes ``config-resume-<k>.yaml`` beside it)."""
    if cli.trainer.is_global_zero:
        text = cli.parser.dump(cli.config, skip_none=False, skip_check=True)
        atomic_write_text(free_name(cli.run_dir, "config.yaml"), text)


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def fit_and_test(model_name: str, data_name: str | None, args: argparse.Namespace, cli_args: list[str]) -> int:
    """Fit, test the best checkpoint, write metrics.json; return the exit code."""
    entry = get_model_entry(model_name)
    data_name = data_name or entry.datamodule
    cli = _build_cli(entry, data_name, args, cli_args)
    trainer = cli.trainer
    if str(trainer.precision).startswith("bf16") and trainer.strategy.root_device.type == "cpu" \
            and trainer.is_global_zero and (notice := bf16_notice()):
        print(notice)
    try:
        found = _find_before_fit(cli, args) if (args.lr_find or args.batch_size_find) and not cli.resume_ckpt else {}
    except ValueError as exc:  # the finders step the model's own schedule; OneCycle ends after the planned steps
        cli.cleanup()
        raise ZooUserError(f"the finders ran past the model's LR schedule ({str(exc).splitlines()[0]}); give the run "
                           "more steps or pass --model.scheduler none") from None
    try:
        _writing(cli, _save_config, cli)
        if cli.resume_ckpt is not None:
            check_checkpoint(cli.resume_ckpt, cli.model, entry.name, data_name)
        for logger in trainer.loggers:
            logger.log_hyperparams({f"data/{k}": v for k, v in cli.datamodule.hparams.items()}
                                   | {"zoo/model": entry.name, "zoo/data": data_name})
        if trainer.is_global_zero and trainer.logger is not None:
            remember_wandb_id(trainer.logger, cli.run_dir)
        if args.wandb_watch and is_wandb(trainer.logger):
            trainer.logger.watch(cli.model, log="gradients")
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        start = time.perf_counter()
        _run_stage(cli, trainer.fit, ckpt_path=cli.resume_ckpt)
    except ZooUserError:
        cli.cleanup()
        raise
    if trainer.interrupted:
        return _report_interrupt(cli, entry.name)
    metrics = dict(trainer.callback_metrics)
    epochs, fit_time = trainer.current_epoch, time.perf_counter() - start
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    timer = next((c for c in trainer.callbacks if isinstance(c, cb.Timer)), None)
    extra = {"epochs": epochs, "fit_time_s": round(fit_time, 3),
             "train_time_s": round(timer.time_elapsed("train"), 3) if timer else None,
             "best_checkpoint": best or None, "model": entry.name, "data": data_name,
             "seed": cli.config.seed_everything, "global_step": trainer.global_step, **found}
    pruned = any(getattr(c, "pruned", False) for c in trainer.callbacks)  # train.py tune gave this trial up
    if pruned:
        extra["pruned"] = True
    elif getattr(args, "defer_test", False) and is_overridden("test_step", cli.model):
        extra["untested"] = UNTESTED  # train.py tune tests the study's best trial only, with test_run
    elif is_overridden("test_step", cli.model):
        for result in _run_stage(cli, trainer.test, ckpt_path=best or None) or []:
            metrics.update(result)
        if trainer.interrupted:
            extra["test_interrupted"] = True
    if trainer.is_global_zero:
        path = _writing(cli, write_metrics, cli.run_dir, metrics,
                        {**extra, "wall_time_s": round(time.perf_counter() - start, 3)})
        print(f"metrics: {path}")
        if trainer.interrupted:
            print("the test was interrupted: metrics.json holds the fit's metrics only; the best checkpoint is "
                  f"{best or 'the last one'}")
    finish_logger(trainer.logger)
    return 130 if trainer.interrupted else 0


def test_run(run: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Test a finished run's best checkpoint (its last without one) and add the test metrics to its
    ``metrics.json``; return that file's contents. ``train.py tune`` fits its trials untested and tests the
    study's best trial only, once, when the study ends.

    Example:
        >>> test_run(Path("runs/tune/cnn/<study>/trial-0007"), args)["test/acc"]  # doctest: +SKIP
    """
    done = json.loads((run / "metrics.json").read_text())
    ckpt = Path(done.get("best_checkpoint") or run / "checkpoints" / "last.ckpt")
    test_args = copy.copy(args)
    test_args.ckpt_path, test_args.output_dir, test_args.extra_callbacks = str(ckpt), None, []
    entry = get_model_entry(done["model"])
    cli = _build_cli(entry, done["data"], test_args, [f"--config={run / 'config.yaml'}"])
    check_checkpoint(ckpt, cli.model, entry.name, done["data"])
    start = time.perf_counter()
    results = _run_stage(cli, cli.trainer.test, ckpt_path=ckpt) or []
    finish_logger(cli.trainer.logger)
    if cli.trainer.interrupted:
        raise ZooUserError(f"the test of '{run}' was interrupted; its metrics.json is unchanged")
    tested = {k: v for result in results for k, v in result.items()}
    extra = {"test_time_s": round(time.perf_counter() - start, 3)}
    if cli.trainer.is_global_zero:
        write_metrics(run, tested, extra, add_to={k: v for k, v in done.items() if k != "untested"})
    return json.loads((run / "metrics.json").read_text())


def _build_cli(entry: ModelEntry, data_name: str, args: argparse.Namespace, cli_args: list[str]) -> ZooCLI:
    argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI reads `cli_args` only (DDP workers re-run argv)
    try:
        return ZooCLI(entry, data_name, args, run=False, args=cli_args, save_config_callback=None,
                      trainer_defaults=_trainer_defaults(entry, args), parser_kwargs={"exit_on_error": False},
                      seed_everything_default=42)
    finally:
        sys.argv = argv


def _find_before_fit(cli: ZooCLI, args: argparse.Namespace) -> dict[str, float]:
    """Lightning's batch-size and learning-rate finders (``--batch-size-find``, ``--lr-find``); the values found
    go into the model / DataModule, config.yaml and metrics.json, the LR finder's plot into ``artifacts/``."""
    from lightning.pytorch.tuner import Tuner

    from zoo.artifacts import log_figure

    tuner, found = Tuner(cli.trainer), {}
    if args.batch_size_find:
        size = tuner.scale_batch_size(cli.model, datamodule=cli.datamodule, mode="power", max_trials=6)
        found["batch_size_find/batch_size"] = cli.config.data.batch_size = int(size)
        print(f"batch-size finder: {size}")
    if args.lr_find:
        finder = tuner.lr_find(cli.model, datamodule=cli.datamodule, min_lr=1e-6, max_lr=1.0, num_training=50)
        lr = finder.suggestion() if finder is not None else None
        if lr is None:
            raise ZooUserError("the learning-rate finder found no suggestion (too few steps?); leave out --lr-find")
        found["lr_find/lr"] = cli.config.model.lr = float(lr)
        log_figure(cli.trainer, "lr_find", finder.plot(suggest=True))
        print(f"learning-rate finder: {lr:.3g}")
    return found


def _run_stage(cli: ZooCLI, stage: Any, ckpt_path: Any) -> Any:
    """``trainer.fit`` / ``trainer.test`` with checkpoints read as data only. Ctrl-C / SIGTERM end it gracefully
    (``trainer.interrupted``); a run folder that cannot be written (disk full, read-only) is a user error."""
    try:
        return _writing(cli, stage, cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit:  # Lightning exits with 1 after a graceful Ctrl-C / SIGTERM shutdown
        if not cli.trainer.interrupted:
            raise
    return None


def _writing(cli: ZooCLI, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; a write into the run folder that fails for lack of space or permission becomes
    one line naming the folder and the checkpoints still intact."""
    try:
        return fn(*args, **kwargs)
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        ckpts = sorted((cli.run_dir / "checkpoints").glob("*.ckpt"))
        kept = f"; intact checkpoints: {', '.join(p.name for p in ckpts)}" if ckpts else "; no checkpoint was saved"
        raise ZooUserError(f"cannot write into the run folder '{cli.run_dir}': {exc.strerror} ({exc.filename or ''}); "
                           f"free space or pass a writable --runs-dir{kept}") from None


def _report_interrupt(cli: ZooCLI, model: str) -> int:
    """Say what an interrupted fit saved: the resume command, or that nothing was saved."""
    saved = sorted((cli.run_dir / "checkpoints").glob("*.ckpt")) if cli.run_dir else []
    if not saved:
        if cli.created_run_dir and cli.run_dir is not None and cli.trainer.is_global_zero:
            shutil.rmtree(cli.run_dir, ignore_errors=True)  # only its config and an empty log were in it
        print("interrupted before the first training step: nothing was saved; start the run again")
    else:
        print(f"interrupted; checkpoint in {cli.run_dir / 'checkpoints'}; resume with "
              f"`python train.py --model {model} --ckpt-path {cli.run_dir}`")
    return 130
