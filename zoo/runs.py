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
import pickle
import time
from pathlib import Path
from typing import Any

import torch

from zoo.errors import ZooUserError, unsafe_checkpoint_message
from zoo.pretrained import state_dict_mismatch

__all__ = ["new_run_dir", "resolve_resume", "check_checkpoint", "build_logger", "write_metrics", "free_name",
           "atomic_write_text"]

CHECKPOINT_NAMES = ("last.ckpt", "interrupted.ckpt")


def new_run_dir(root: str | Path, model: str, output_dir: str | None) -> Path:
    """Create and return a fresh run folder; an existing ``output_dir`` is refused, never reused."""
    if output_dir is not None:
        path = Path(output_dir).expanduser()
        if path.exists():
            raise ZooUserError(f"output dir '{path}' already exists; choose a new --output-dir "
                               f"(runs are never overwritten) or leave it out for runs/{model}/<timestamp>")
        _mkdir(path, "--output-dir")
        return path
    base = Path(root) / model / time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        path = base if i == 0 else base.with_name(f"{base.name}-{i}")
        try:
            _mkdir(path, "--runs-dir")
            return path
        except FileExistsError:
            continue
    raise ZooUserError(f"cannot create a new run folder under '{base.parent}'")


def global_rank() -> int:
    """This process's global rank as a launcher announces it (torchrun: ``RANK``, srun: ``SLURM_PROCID``,
    Lightning's own launcher: ``LOCAL_RANK`` on one node); 0 for a single process."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", os.environ.get("LOCAL_RANK", "0"))))


def launched_run_dir(root: str | Path, model: str, output_dir: str | None) -> Path | None:
    """The one run folder of a multi-process launch that started every rank itself (torchrun, SLURM's srun),
    or None for a single process / Lightning's own launcher. Global rank 0 creates the folder; the others learn
    its path from torchrun's store (``MASTER_ADDR:MASTER_PORT``), or derive the same name from the SLURM job."""
    world = int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")))
    if world <= 1:
        return None
    rank = global_rank()
    if os.environ.get("TORCHELASTIC_RUN_ID") is not None:
        from datetime import timedelta

        from torch.distributed import TCPStore

        store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                         timeout=timedelta(seconds=300))
        key = f"zoo/run_dir/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        if rank == 0:
            store.set(key, str(new_run_dir(root, model, output_dir)))
        return Path(store.get(key).decode())
    if os.environ.get("SLURM_JOB_ID") is not None:
        path = Path(output_dir).expanduser() if output_dir else \
            Path(root) / model / f"slurm-{os.environ['SLURM_JOB_ID']}-{os.environ.get('SLURM_STEP_ID', '0')}"
        if rank == 0:
            _mkdir(path, "--output-dir" if output_dir else "--runs-dir", exist_ok=True)
        return path
    return None


def _mkdir(path: Path, flag: str, exist_ok: bool = False) -> None:
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        raise
    except OSError as exc:
        raise ZooUserError(f"cannot create the run folder '{path}': {exc.strerror}; pass a writable {flag}") from None


def _newest_checkpoint(run: Path) -> Path | None:
    found = [run / "checkpoints" / n for n in CHECKPOINT_NAMES if (run / "checkpoints" / n).is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def run_data(run: Path) -> str | None:
    """The registered DataModule name a run folder was trained on (``zoo.data`` in its config.yaml)."""
    import yaml

    try:
        config = yaml.safe_load((run / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    return ((config.get("zoo") or {}) if isinstance(config, dict) else {}).get("data")


def resolve_resume(ckpt_path: str, root: str | Path, model: str, data: str | None = None) -> tuple[Path, Path]:
    """(checkpoint file, run folder) for ``--ckpt-path last`` (the newest run of ``model`` on ``data``) or a
    path. ``last`` never picks a run of other data, and refuses when the newest matching run has no checkpoint."""
    if ckpt_path == "last":
        folder = Path(root) / model
        runs = sorted((p for p in folder.glob("*") if p.is_dir() and (data is None or run_data(p) == data)),
                      key=lambda p: p.stat().st_mtime)
        on = f" on data '{data}'" if data else ""
        if not runs:
            raise ZooUserError(f"--ckpt-path last: no run of model '{model}'{on} under '{folder}'; "
                               "train first or pass --ckpt-path PATH")
        ckpt = _newest_checkpoint(runs[-1])
        if ckpt is None:
            raise ZooUserError(f"--ckpt-path last: the newest run of '{model}'{on}, '{runs[-1]}', has no checkpoint "
                               "(it stopped before its first save); start a new run or pass --ckpt-path PATH")
        print(f"resuming '{runs[-1]}' ({model}{on}) from {ckpt.name}")
        return ckpt, runs[-1]
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


def free_name(folder: Path, name: str) -> Path:
    """``folder/name`` if it is new, else ``folder/<stem>-resume-<k><suffix>`` with the first free k: a
    resumed run writes beside what an earlier process wrote and never over it."""
    path = folder / name
    k = 1
    while path.exists():
        path = folder / f"{Path(name).stem}-resume-{k}{Path(name).suffix}"
        k += 1
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temporary file and a rename, so a crash never leaves a truncated file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint read as data only (``weights_only=True``): tensors and plain Python types. One that
    holds anything else (a pickled object, which could run code while loading) is refused, never run."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ZooUserError(unsafe_checkpoint_message(path, exc)) from exc
    except Exception as exc:  # corrupt files raise many types
        raise ZooUserError(f"cannot read checkpoint '{path}': {str(exc).splitlines()[0][:200]}") from exc
    if not isinstance(ckpt, dict):
        raise ZooUserError(f"'{path}' is not a Lightning checkpoint (it holds a {type(ckpt).__name__}, not a dict)")
    return ckpt


def check_checkpoint(path: Path, model: torch.nn.Module, model_name: str,
                     data_name: str | None = None) -> dict[str, Any]:
    """Load a checkpoint and refuse one written for another model, other data or another architecture."""
    ckpt = load_checkpoint(path)
    if "state_dict" not in ckpt:
        raise ZooUserError(f"'{path}' is not a Lightning checkpoint (no state_dict)")
    saved = ckpt.get("zoo", {}).get("model")
    if saved is not None and saved != model_name:
        raise ZooUserError(f"checkpoint '{path}' is for model '{saved}', not '{model_name}'; use --model {saved}")
    saved_data = ckpt.get("zoo", {}).get("data")
    if data_name is not None and saved_data is not None and saved_data != data_name:
        raise ZooUserError(f"checkpoint '{path}' was trained on data '{saved_data}', not '{data_name}'; resume it with "
                           f"--data {saved_data} (a resume continues the same run)")
    detail = state_dict_mismatch(model.state_dict(), ckpt["state_dict"])
    if detail:
        raise ZooUserError(f"checkpoint '{path}' does not fit this {model_name} configuration ({detail}); "
                           "use the hyperparameters it was trained with (its run folder has config.yaml)")
    return ckpt


def build_logger(args: Any, run_dir: Path, model_name: str) -> Any:
    """A Lightning logger writing into ``run_dir`` for ``--logger csv|tensorboard|wandb``."""
    from lightning.pytorch import loggers

    kind = args.logger
    if kind == "csv":  # a resumed run logs beside the earlier process's metrics.csv (CSVLogger would replace it)
        version = free_name(run_dir, "logs").name if global_rank() == 0 else "logs"  # only rank 0 writes logs
        return loggers.CSVLogger(save_dir=run_dir, name="", version=version)
    if kind == "tensorboard":
        try:
            return loggers.TensorBoardLogger(save_dir=run_dir, name="", version="tensorboard")
        except ModuleNotFoundError as exc:
            raise ZooUserError("--logger tensorboard needs tensorboard: "
                               "pip install 'lightning-zoo[tensorboard]'") from exc
    if kind == "wandb":
        return _wandb_logger(run_dir, model_name, args.wandb_project, args.wandb_name, args.wandb_tags,
                             args.wandb_log_model, args.wandb_group)
    raise ZooUserError(f"unknown logger '{kind}'; choose csv, tensorboard or wandb")


def _wandb_logger(run_dir: Path, model_name: str, project: str | None, name: str | None,
                  tags: list[str] | None, log_model: bool, group: str | None) -> Any:
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
                         tags=tags, group=group, save_dir=str(run_dir), offline=offline, id=run_id,
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


def write_metrics(run_dir: Path, metrics: dict[str, Any], extra: dict[str, Any],
                  add_to: dict[str, Any] | None = None) -> Path:
    """Write the flat ``metrics.json`` (logged numbers plus run facts) and return its path. ``add_to`` is the
    run's own ``metrics.json``, completed in place by a later test; otherwise a resumed run writes
    ``metrics-resume-<k>.json`` beside the earlier one."""
    flat = {k: v for k, v in ((k, to_number(v)) for k, v in metrics.items()) if v is not None}
    flat.update(extra)
    if add_to is not None:
        flat = {**add_to, **flat}
    path = run_dir / "metrics.json" if add_to is not None else free_name(run_dir, "metrics.json")
    atomic_write_text(path, json.dumps(flat, indent=2, sort_keys=True, default=str) + "\n")
    return path
