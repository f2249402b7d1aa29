"""Import every module of a package and re-export the names each lists in ``__all__``."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Iterable


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
