"""Read the model registrations from source without importing torch, for a fast ``--list``.

The registry itself is filled by the ``@register_model`` decorators when ``zoo.models`` is
imported (which imports torch and Lightning, several seconds). Listing only needs the
decorators' literal arguments, so this module reads them with :mod:`ast`.

Example:
    >>> "cnn" in [e["name"] for e in scan_models()]
    True
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

MODELS_DIR = Path(__file__).parent / "models"
DATAMODULES_DIR = Path(__file__).parent / "datamodules"


def _first_sentence(doc: str) -> str:
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    return paragraph.split(". ")[0].rstrip(".") + "."


def _decorator_args(node: ast.ClassDef, decorator: str = "register_model") -> list[dict[str, Any]]:
    """One entry per ``@decorator(...)`` on the class (a class may be registered under several names)."""
    entries = []
    for deco in node.decorator_list:
        if isinstance(deco, ast.Call) and getattr(deco.func, "id", getattr(deco.func, "attr", "")) == decorator:
            entry = {"name": ast.literal_eval(deco.args[0]), "aliases": (), "defaults": {}, "class": node.name,
                     "summary": _first_sentence(ast.get_docstring(node) or node.name)}
            for kw in deco.keywords:
                value = ast.literal_eval(kw.value)
                if kw.arg in ("datamodule", "aliases"):
                    entry[kw.arg] = tuple(value) if kw.arg == "aliases" else value
                else:
                    entry["defaults"][kw.arg] = value
            entries.append(entry)
    return entries


def _scan(folder: Path, decorator: str) -> list[dict[str, Any]]:
    entries = []
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for entry in _decorator_args(node, decorator):
                    entries.append({**entry, "module": f"zoo.{folder.name}.{path.stem}"})
    return sorted(entries, key=lambda e: e["name"])


def scan_models(models_dir: Path = MODELS_DIR) -> list[dict[str, Any]]:
    """Registrations found in ``zoo/models/*.py``, sorted by name (name, aliases, datamodule, summary)."""
    return _scan(models_dir, "register_model")


def scan_datamodules(datamodules_dir: Path = DATAMODULES_DIR) -> list[dict[str, Any]]:
    """DataModule registrations found in ``zoo/datamodules/*.py`` (name, aliases, summary)."""
    return _scan(datamodules_dir, "register_datamodule")


def format_listing(entries: list[dict[str, Any]]) -> str:
    """A table of models with aliases, default data and a one-line summary."""
    rows = [("model", "aliases", "default data", "summary")]
    rows += [(e["name"], ",".join(e["aliases"]) or "-", e.get("datamodule", "-"), e["summary"]) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    table = "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}" for r in rows)
    return table + "\n\ndata (--data NAME): " + ", ".join(e["name"] for e in scan_datamodules())


def check_model_name(name: str) -> None:
    """Fail fast (before torch is imported) on a model name that is neither registered nor an alias."""
    from zoo.registry import UnknownNameError, close_matches_message

    entries = scan_models()
    known = {e["name"] for e in entries} | {a for e in entries for a in e["aliases"]}
    if name not in known:
        raise UnknownNameError(close_matches_message(name, sorted(known), "model"))
