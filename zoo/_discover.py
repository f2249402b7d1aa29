"""Lazy package exports: ``from zoo.models import GAN`` imports only ``zoo/models/gan.py``.

Each module's literal ``__all__`` is read from its source on first use (no import), so adding a module needs no
edit here and ``import zoo.models`` costs nothing until a name is used.
"""
from __future__ import annotations

import ast
import functools
import importlib
import pkgutil
from pathlib import Path
from typing import Any, Callable, Iterable


def _literal_all(path: Path) -> list[str]:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return []


def lazy_exports(package: str, path: Iterable[str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose public names are its modules' ``__all__``."""
    folders = list(path)

    @functools.cache
    def table() -> dict[str, str]:
        names: dict[str, str] = {}
        for info in sorted(pkgutil.iter_modules(folders), key=lambda m: m.name):
            if not info.name.startswith("_"):
                names.update(dict.fromkeys(_literal_all(Path(info.module_finder.path) / f"{info.name}.py"), info.name))
        return names

    def __getattr__(name: str) -> Any:
        if name == "__all__":
            return list(table())
        if name in table():
            return getattr(importlib.import_module(f"{package}.{table()[name]}"), name)
        if any(info.name == name for info in pkgutil.iter_modules(folders)):
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module '{package}' has no attribute '{name}'")

    def __dir__() -> list[str]:
        return sorted(table())

    return __getattr__, __dir__


def import_submodules(package: str, path: Iterable[str], namespace: dict[str, Any]) -> list[str]:
    """Import ``package.<module>`` for each module on ``path``; copy their ``__all__`` into ``namespace``."""
    exported: list[str] = []
    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        for name in getattr(module, "__all__", []):
            namespace[name] = getattr(module, name)
            exported.append(name)
    return exported
