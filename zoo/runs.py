"""Run folders, loggers, default callbacks, checkpoint resolution and ``metrics.json``.

Every run gets a new folder (``runs/<model>/<timestamp>`` by default) that is never reused by a
new run; resuming (``--ckpt-path``) continues in the folder the checkpoint belongs to.

Example:
    >>> folder = new_run_dir("runs", "cnn", None)  # doctest: +SKIP
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from zoo.errors import ZooUserError
from zoo.pretrained import state_dict_mismatch

__all__ = ["new_run_dir", "resolve_resume", "check_checkpoint", "build_logger", "write_metrics"]

CHECKPOINT_NAMES = ("last.ckpt", "interrupted.ckpt")


def new_run_dir(root: str | Path, model: str, output_dir: str | None) -> Path:
    """Create and return a fresh run folder; an existing ``output_dir`` is refused, never reused."""
    if output_dir is not None:
        path = Path(output_dir).expanduser()
        if path.exists():
            raise ZooUserError(f"output dir '{path}' already exists; choose a new --output-dir "
                               f"(runs are never overwritten) or leave it out for runs/{model}/<timestamp>")
        path.mkdir(parents=True)
        return path
    base = Path(root) / model / time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        path = base if i == 0 else base.with_name(f"{base.name}-{i}")
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise ZooUserError(f"cannot create a new run folder under '{base.parent}'")


def _newest_checkpoint(run: Path) -> Path | None:
    found = [run / "checkpoints" / n for n in CHECKPOINT_NAMES if (run / "checkpoints" / n).is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def resolve_resume(ckpt_path: str, root: str | Path, model: str) -> tuple[Path, Path]:
    """(checkpoint file, run folder) for ``--ckpt-path last`` (newest run of ``model``) or a path."""
    if ckpt_path == "last":
        runs = sorted((p for p in (Path(root) / model).glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
        for run in reversed(runs):
            ckpt = _newest_checkpoint(run)
            if ckpt is not None:
                return ckpt, run
        raise ZooUserError(f"--ckpt-path last: no checkpoint of model '{model}' under '{Path(root) / model}'; "
                           "train first or pass --ckpt-path PATH")
    path = Path(ckpt_path).expanduser()
    if path.is_dir():  # a run folder
        ckpt = _newest_checkpoint(path)
        if ckpt is None:
            raise ZooUserError(f"no last.ckpt in '{path}/checkpoints'; pass the .ckpt file itself")
        return ckpt, path
    if not path.is_file():
        raise ZooUserError(f"checkpoint '{path}' does not exist; pass an existing .ckpt file, a run folder or 'last'")
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return path, run


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # corrupt files raise many types
        raise ZooUserError(f"cannot read checkpoint '{path}': {str(exc).splitlines()[0][:200]}") from exc


def check_checkpoint(path: Path, model: torch.nn.Module, model_name: str) -> dict[str, Any]:
    """Load a checkpoint and refuse one written for another model or another architecture."""
    ckpt = load_checkpoint(path)
    if "state_dict" not in ckpt:
        raise ZooUserError(f"'{path}' is not a Lightning checkpoint (no state_dict)")
    saved = ckpt.get("zoo", {}).get("model")
    if saved is not None and saved != model_name:
        raise ZooUserError(f"checkpoint '{path}' is for model '{saved}', not '{model_name}'; use --model {saved}")
    detail = state_dict_mismatch(model.state_dict(), ckpt["state_dict"])
    if detail:
        raise ZooUserError(f"checkpoint '{path}' does not fit this {model_name} configuration ({detail}); "
                           "use the hyperparameters it was trained with (its run folder has config.yaml)")
    return ckpt


def build_logger(args: Any, run_dir: Path, model_name: str) -> Any:
    """A Lightning logger writing into ``run_dir`` for ``--logger csv|tensorboard|wandb``."""
    from lightning.pytorch import loggers

    kind = args.logger
    if kind == "csv":
        return loggers.CSVLogger(save_dir=run_dir, name="", version="logs")
    if kind == "tensorboard":
        try:
            return loggers.TensorBoardLogger(save_dir=run_dir, name="", version="tensorboard")
        except ModuleNotFoundError as exc:
            raise ZooUserError("--logger tensorboard needs tensorboard: pip install 'lightning-zoo[tensorboard]'") from exc
    if kind == "wandb":
        return _wandb_logger(run_dir, model_name, args.wandb_project, args.wandb_name, args.wandb_tags,
                             args.wandb_log_model)
    raise ZooUserError(f"unknown logger '{kind}'; choose csv, tensorboard or wandb")


def _wandb_logger(run_dir: Path, model_name: str, project: str | None, name: str | None,
                  tags: list[str] | None, log_model: bool) -> Any:
    """W&B logger; offline (with the sync command printed) when there is no API key. The key itself
    is never printed or written: it stays in the environment / netrc where wandb reads it."""
    try:
        import wandb  # noqa: F401
    except ModuleNotFoundError as exc:
        raise ZooUserError("--logger wandb needs the wandb package: pip install 'lightning-zoo[wandb]'") from exc
    from lightning.pytorch.loggers import WandbLogger

    id_file = run_dir / "wandb_run_id.txt"
    run_id = id_file.read_text().strip() if id_file.is_file() else None
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").is_file()
    offline = os.environ.get("WANDB_MODE") in ("offline", "disabled") or not has_key
    logger = WandbLogger(project=project or "lightning-zoo", name=name or f"{model_name}-{run_dir.name}",
                         tags=tags, save_dir=str(run_dir), offline=offline, id=run_id,
                         resume="allow" if run_id else None, log_model=log_model and not offline)
    if offline:
        print(f"W&B: no API key or WANDB_MODE=offline, logging offline; upload later with: "
              f"wandb sync {run_dir / 'wandb'}/offline-run-*")
    return logger


def is_wandb(logger: Any) -> bool:
    from lightning.pytorch.loggers import WandbLogger  # does not import wandb itself

    return isinstance(logger, WandbLogger)


def finish_logger(logger: Any) -> None:
    """Close a W&B run so its summary and files are complete on disk (a no-op for other loggers)."""
    if is_wandb(logger):
        import wandb

        wandb.finish()


def remember_wandb_id(logger: Any, run_dir: Path) -> None:
    """Store the W&B run id in the run folder so a resumed run continues the same W&B run."""
    if is_wandb(logger):
        (run_dir / "wandb_run_id.txt").write_text(str(logger.experiment.id))


def to_number(value: Any) -> float | int | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value if not (isinstance(value, float) and math.isnan(value)) else float("nan")
    return None


def write_metrics(run_dir: Path, metrics: dict[str, Any], extra: dict[str, Any]) -> Path:
    """Write the flat ``metrics.json`` (logged numbers plus run facts) and return its path."""
    flat = {k: v for k, v in ((k, to_number(v)) for k, v in metrics.items()) if v is not None}
    flat.update(extra)
    path = run_dir / "metrics.json"
    path.write_text(json.dumps(flat, indent=2, sort_keys=True, default=str) + "\n")
    return path
