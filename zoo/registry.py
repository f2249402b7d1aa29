"""timm-style registry pairing every model with its default DataModule.

Example:
    >>> from zoo.registry import create_model, list_models
    >>> "cnn" in list_models()
    True
    >>> model = create_model("cnn", num_classes=10)
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """Raised for a model or DataModule name that is not registered."""


@dataclass
class ModelEntry:
    name: str
    cls: type
    datamodule: str
    aliases: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        doc = (self.cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc else self.cls.__name__


_MODELS: dict[str, ModelEntry] = {}
_MODEL_ALIASES: dict[str, str] = {}
_DATAMODULES: dict[str, type] = {}
_DATAMODULE_ALIASES: dict[str, str] = {}


def _check_free(name: str, table: dict, aliases: dict, kind: str) -> None:
    if name in table or name in aliases:
        raise ValueError(f"{kind} name '{name}' is already registered")


def register_model(
    name: str, datamodule: str, aliases: tuple[str, ...] | list[str] = (), **defaults: Any
) -> Callable[[type[T]], type[T]]:
    """Class decorator: register a LightningModule under ``name`` with its default DataModule.

    ``defaults`` are constructor arguments that this registered name overrides, so one class
    can serve several names (``resnet`` and ``densenet`` differ only in the default backbone).
    """

    def wrap(cls: type[T]) -> type[T]:
        _check_free(name, _MODELS, _MODEL_ALIASES, "model")
        _MODELS[name] = ModelEntry(name, cls, datamodule, tuple(aliases), dict(defaults))
        for alias in aliases:
            _check_free(alias, _MODELS, _MODEL_ALIASES, "model")
            _MODEL_ALIASES[alias] = name
        return cls

    return wrap


def register_datamodule(name: str, aliases: tuple[str, ...] | list[str] = ()) -> Callable[[type[T]], type[T]]:
    """Class decorator: register a LightningDataModule under ``name``."""

    def wrap(cls: type[T]) -> type[T]:
        _check_free(name, _DATAMODULES, _DATAMODULE_ALIASES, "datamodule")
        _DATAMODULES[name] = cls
        for alias in aliases:
            _check_free(alias, _DATAMODULES, _DATAMODULE_ALIASES, "datamodule")
            _DATAMODULE_ALIASES[alias] = name
        return cls

    return wrap


def close_matches_message(name: str, known: list[str], kind: str) -> str:
    """``unknown model 'cnnn'; did you mean cnn?`` (or the full list when nothing is close)."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"known {kind}s: {', '.join(known)}"
    return f"unknown {kind} '{name}'; {hint} (see `python train.py --list`)"


def ensure_registered() -> None:
    """Import every model and DataModule module so that their decorators have run."""
    import zoo.datamodules  # noqa: F401
    import zoo.models  # noqa: F401


def _resolve(name: str, table: dict, aliases: dict, kind: str) -> str:
    if name in table:
        return name
    if name in aliases:
        return aliases[name]
    raise UnknownNameError(close_matches_message(name, sorted([*table, *aliases]), kind))


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry of a model name or alias."""
    ensure_registered()
    return _MODELS[_resolve(name, _MODELS, _MODEL_ALIASES, "model")]


def get_datamodule_class(name: str) -> type:
    """The DataModule class registered under a name or alias."""
    ensure_registered()
    return _DATAMODULES[_resolve(name, _DATAMODULES, _DATAMODULE_ALIASES, "datamodule")]


def create_model(name: str, **hparams: Any) -> Any:
    """Instantiate a registered model; ``hparams`` override the registered defaults."""
    entry = get_model_entry(name)
    return entry.cls(**{**entry.defaults, **hparams})


def create_datamodule(name: str, **hparams: Any) -> Any:
    """Instantiate a registered DataModule."""
    return get_datamodule_class(name)(**hparams)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered model names matching a shell-style pattern."""
    ensure_registered()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def list_datamodules(pattern: str = "*") -> list[str]:
    """Sorted registered DataModule names matching a shell-style pattern."""
    ensure_registered()
    return sorted(n for n in _DATAMODULES if fnmatch.fnmatch(n, pattern))

