"""User-facing errors: the CLI prints them as one line and exits with code 2."""
from __future__ import annotations

import re
from pathlib import Path


class ZooUserError(Exception):
    """A mistake in the user's input (name, path, value) with a message that says how to fix it."""


def unsafe_checkpoint_message(path: str | Path, exc: BaseException) -> str:
    """One line for a checkpoint that holds more than tensors and plain data (weights_only refused it)."""
    found = re.search(r"(GLOBAL|global) ([\w.]+)", str(exc))
    what = f" ({found.group(2)})" if found else ""
    return (f"checkpoint '{path}' holds Python objects{what} besides tensors and plain data, which could run code "
            "when loaded; the zoo loads checkpoints as data only (weights_only=True) and refuses it. Use a "
            "checkpoint written by the zoo, or re-save the state dict alone")
