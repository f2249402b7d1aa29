"""Pretrained weights: hub download (cached), a local file, or a clear message when neither exists.

``--model.pretrained auto|true|false`` and ``--model.weights PATH`` mean the same for every model:
``weights`` wins; ``true`` must get hub weights or fails; ``auto`` tries the hub and otherwise warns
loudly and starts from random weights; ``false`` never downloads.

Example:
    >>> sd = resolve_weights("false", None, lambda: {}, "resnet18")  # None -> random init
"""
from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Callable, Literal
from urllib.parse import urlparse

import torch
from torch import nn

from zoo.errors import ZooUserError, unsafe_checkpoint_message

Pretrained = Literal["auto", "true", "false"]

__all__ = ["Pretrained", "offline", "torchvision_state_dict", "resolve_weights", "load_state_dict_file",
           "load_matching", "state_dict_mismatch"]


def _flag(pretrained: Pretrained | bool) -> str:
    if isinstance(pretrained, bool):
        return "true" if pretrained else "false"
    if pretrained not in ("auto", "true", "false"):
        raise ZooUserError(f"pretrained must be auto, true or false, got '{pretrained}'")
    return pretrained


OFFLINE_ENV = ("ZOO_OFFLINE", "HF_HUB_OFFLINE")


def offline() -> bool:
    """True when ``ZOO_OFFLINE`` or ``HF_HUB_OFFLINE`` is set: no download is attempted, only caches are read."""
    return any(os.environ.get(name, "") not in ("", "0", "false", "False") for name in OFFLINE_ENV)


def torchvision_state_dict(weights: Any) -> dict[str, torch.Tensor]:
    """A torchvision ``Weights`` entry's state dict from the torch hub cache, downloading only when online: offline
    (see :func:`offline`) a weights file that is not cached raises ``OSError`` before any connection is tried."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    if not cached.is_file() and offline():
        raise OSError(f"offline ({'/'.join(OFFLINE_ENV)} set) and {cached.name} is not in the torch hub cache "
                      f"{cached.parent}")
    return weights.get_state_dict(progress=True, check_hash=True)


def load_state_dict_file(path: str | Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors of a plain state dict or of a Lightning/zoo checkpoint (its ``state_dict``), safely loaded.

    ``prefix`` (e.g. ``"backbone."``) selects and strips the keys of one sub-module in a checkpoint.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ZooUserError(f"weights file '{path}' does not exist; pass --model.weights PATH to a .pt/.ckpt file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ZooUserError(unsafe_checkpoint_message(path, exc)) from exc
    except Exception as exc:  # unpickling errors come in many types
        raise ZooUserError(f"cannot read weights file '{path}': {str(exc).splitlines()[0]}") from exc
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ZooUserError(f"'{path}' holds no state dict (expected a dict of tensors or a checkpoint)")
    if prefix and any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def state_dict_mismatch(own: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor],
                        strict: bool = True) -> str:
    """What keeps ``theirs`` from loading into a module with state ``own``: "" when it fits, else
    ``missing: a, b ... (n); unexpected: ...; shape mismatch: k (3, 4) vs (3, 5) (1)``. Missing and
    unexpected keys only count when ``strict``."""
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in theirs if k not in own]
    shapes = [f"{k} {tuple(theirs[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in theirs and theirs[k].shape != v.shape]
    if not (shapes or (strict and (missing or unexpected))):
        return ""
    return "; ".join(f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''} ({len(keys)})"
                     for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
                     if keys)


def load_matching(module: nn.Module, state: dict[str, torch.Tensor], what: str, strict: bool = True) -> None:
    """Load ``state`` into ``module``; on a mismatch, a user error naming the keys that do not fit."""
    problem = state_dict_mismatch(module.state_dict(), state, strict)
    if problem:
        raise ZooUserError(f"weights do not fit {what}: {problem}")
    module.load_state_dict(state, strict=strict)


def resolve_weights(
    pretrained: Pretrained | bool, weights: str | None, load_hub: Callable[[], dict[str, torch.Tensor]], what: str
) -> dict[str, torch.Tensor] | None:
    """The state dict to start from, or None for random initialisation (see module docstring)."""
    flag = _flag(pretrained)
    if weights:
        return load_state_dict_file(weights)
    if flag == "false":
        return None
    try:
        return load_hub()
    except (OSError, RuntimeError, ValueError) as exc:  # no network, no cache, or no hub weights for it
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        if flag == "true":
            raise ZooUserError(
                f"pretrained weights for {what} cannot be had here ({reason}); pass --model.weights PATH "
                f"(a state dict or zoo checkpoint) or --model.pretrained auto|false") from exc
        warnings.warn(f"\n{'!' * 72}\nNO PRETRAINED WEIGHTS for {what} ({reason}).\nStarting from RANDOM "
                      f"weights. Pass --model.weights PATH to use a local file.\n{'!' * 72}", stacklevel=2)
        return None
