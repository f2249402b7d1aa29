"""The benchmarks' one writer of ``benchmarks/results/*.json`` row lists: a run that measured some rows keeps the
other rows an earlier run wrote, so one command per part (or per seed) builds up the whole table.

    >>> merge_rows(Path("missing.json"), [{"data": "mnist", "seed": 1}], ("data", "seed"))  # doctest: +SKIP
    [{'data': 'mnist', 'seed': 1}]
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def merge_rows(path: Path, new: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """The rows of ``path`` whose ``keys`` no new row has, then ``new``."""
    fresh = {tuple(row[k] for k in keys) for row in new}
    old = json.loads(path.read_text()) if path.exists() else []
    return [row for row in old if tuple(row[k] for k in keys) not in fresh] + new


def write_rows(path: Path, new: list[dict[str, Any]], keys: tuple[str, ...]) -> Path:
    """Write ``merge_rows(path, new, keys)`` to ``path``; returns ``path``."""
    path.write_text(json.dumps(merge_rows(path, new, keys), indent=2) + "\n")
    return path
