"""The benchmarks' one reader of ``recipes/*.yaml``, the configurations behind the README's results rows.

A benchmark runs the zoo side with ``train.py -c <recipe>`` (or builds the zoo model, DataModule and Trainer
from the recipe's sections) and builds its plain-loop anchor from the same values, so users and benchmarks
train the same configuration. Import it from a script in this folder as ``from _recipes import load_recipe``.

    >>> cfg = load_recipe(recipe_path("cnn_mnist"))  # doctest: +SKIP
    >>> cfg["zoo"]["model"], cfg["data"]["batch_size"]  # doctest: +SKIP
    ('cnn', 128)
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
SECTIONS = ("model", "data", "trainer")
# Trainer arguments a benchmark's own Trainer always sets itself (CPU, quiet, its callbacks and folder)
BENCH_TRAINER = ("accelerator", "devices", "logger", "enable_checkpointing", "enable_progress_bar",
                 "enable_model_summary", "callbacks", "default_root_dir")


def recipe_path(name: str) -> Path:
    """``recipes/<name>.yaml`` of this checkout."""
    return RECIPES / f"{name}.yaml"


def load_recipe(path: str | Path, model: str | None = None) -> dict[str, Any]:
    """The recipe as a dict; ``model`` / ``data`` / ``trainer`` are always there (empty when the file has none)
    and ``seed_everything`` defaults to train.py's 42. ``model``: the model the caller needs it to train."""
    path = Path(path)
    cfg = yaml.safe_load(path.read_text()) if path.is_file() else None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("zoo"), dict) or "model" not in cfg["zoo"]:
        raise SystemExit(f"{path}: not a recipe (a YAML file with a zoo: section naming the model)")
    if model is not None and cfg["zoo"]["model"] != model:
        raise SystemExit(f"{path}: this benchmark needs a {model} recipe, not {cfg['zoo']['model']}")
    for key in SECTIONS:
        cfg[key] = dict(cfg.get(key) or {})
    cfg.setdefault("seed_everything", 42)
    return cfg


def given(**values: Any) -> dict[str, Any]:
    """The command-line values that were given (not None), to lay over a recipe section:
    ``{**cfg["model"], **given(lr=args.lr)}``."""
    return {k: v for k, v in values.items() if v is not None}


def trainer_settings(cfg: dict[str, Any], *also_fixed: str) -> dict[str, Any]:
    """The recipe's trainer section without what the benchmark's Trainer sets itself (``BENCH_TRAINER`` and
    ``also_fixed``): the budget, validation and logging settings that make the row."""
    return {k: v for k, v in cfg["trainer"].items() if k not in (*BENCH_TRAINER, *also_fixed)}


def max_time_seconds(value: str | dict[str, float] | None) -> float | None:
    """A Trainer ``max_time`` as written in a recipe (``"DD:HH:MM:SS"`` or ``{"minutes": 10}``) in seconds."""
    if value is None:
        return None
    if isinstance(value, dict):
        return timedelta(**value).total_seconds()
    days, hours, minutes, seconds = (float(part) for part in str(value).split(":"))
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds).total_seconds()
