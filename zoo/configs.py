"""YAML files the user hands the zoo (configs, search spaces), read without torch so the CLI answers fast.

Example:
    >>> load_yaml_mapping("recipes/gpt_tinyshakespeare.yaml", "config file")["zoo"]["model"]  # doctest: +SKIP
    'gpt'
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.errors import ZooUserError

__all__ = ["load_yaml_mapping"]


def load_yaml_mapping(path: str, what: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping (a config, a search space): its dict ({} when empty), or one line
    naming the file, the line and the problem."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise ZooUserError(f"{what} '{path}' does not exist")
    text = file.read_text()
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        tabs = "; YAML indents with spaces, not tabs" if "\t" in text else ""
        raise ZooUserError(f"{what} '{path}' is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}{tabs}") \
            from None
    if config is not None and not isinstance(config, dict):
        raise ZooUserError(f"{what} '{path}' holds a {type(config).__name__}; it must be a mapping (see a run's "
                           "config.yaml)")
    return config or {}
