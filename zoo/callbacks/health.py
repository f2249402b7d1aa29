"""Inside a training network: activation statistics and gradient health per layer, through hooks.

Hooks exist only on the steps that are measured (every ``every_n_steps``) and are removed right after, so a
run without these callbacks, or between measurements, has none. Numbers go to every logger
(``debug/act/<layer>/...``, ``debug/grad/<layer>/...``); they are not in ``metrics.json``.
:class:`GradientHealth` warns, naming the layer and the step, when gradients vanish in the early layers or
explode, and draws a heat map of the per-layer gradient norms over the run (``artifacts/``).

Example:
    >>> trainer = L.Trainer(  # doctest: +SKIP
    ...     callbacks=[ActivationStats(every_n_steps=50), GradientHealth(every_n_steps=50)])
"""
from __future__ import annotations

import fnmatch
import math
import warnings
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

__all__ = ["ActivationStats", "GradientHealth", "watched_modules"]

_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh)
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.ConvTranspose2d, nn.Embedding, nn.LSTM, nn.GRU)


def watched_modules(model: nn.Module, pattern: str, kinds: tuple[type, ...]) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the given kinds whose name matches the shell-style ``pattern``, in model order."""
    return [(name, m) for name, m in model.named_modules() if name and isinstance(m, kinds)
            and fnmatch.fnmatch(name, pattern)]


def activation_stats(module: nn.Module, out: torch.Tensor) -> dict[str, float]:
    """Mean and std of a layer's output; for ReLU-like layers the share of dead units (channels that are zero for
    the whole batch), for sigmoid / tanh the share of saturated outputs (within 0.01 of the asymptotes)."""
    out = out.detach().float()
    stats = {"mean": out.mean().item(), "std": out.std().item() if out.numel() > 1 else 0.0}
    if isinstance(module, (nn.ReLU, nn.ReLU6)):
        units = out.transpose(0, 1).reshape(out.shape[1], -1) if out.ndim > 1 else out.reshape(1, -1)
        stats["dead"] = (units.abs().amax(dim=1) == 0).float().mean().item()
    elif isinstance(module, nn.Sigmoid):
        stats["saturated"] = ((out < 0.01) | (out > 0.99)).float().mean().item()
    elif isinstance(module, nn.Tanh):
        stats["saturated"] = (out.abs() > 0.99).float().mean().item()
    return stats


def _log(trainer: L.Trainer, values: dict[str, float]) -> None:
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step)


class ActivationStats(Callback):
    """Every ``every_n_steps`` training steps, the output statistics of each activation layer matching
    ``layers`` (see :func:`activation_stats`), logged as ``debug/act/<layer>/<stat>``."""

    def __init__(self, every_n_steps: int = 50, layers: str = "*") -> None:
        self.every_n_steps, self.layers = every_n_steps, layers
        self.handles: list[Any] = []
        self.latest: dict[str, dict[str, float]] = {}

    def _due(self, trainer: L.Trainer) -> bool:
        return trainer.global_step % self.every_n_steps == 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if not self._due(trainer):
            return
        for name, module in watched_modules(pl_module, self.layers, _ACTIVATIONS):
            def hook(m: nn.Module, args: Any, out: Any, name: str = name) -> None:
                if isinstance(out, torch.Tensor) and m.training:
                    self.latest[name] = activation_stats(m, out)
            self.handles.append(module.register_forward_hook(hook))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.remove()
        if self.latest:
            _log(trainer, {f"debug/act/{n}/{k}": v for n, s in self.latest.items() for k, v in s.items()})
            self.latest = {}

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.remove()


class GradientHealth(Callback):
    """Per weighted layer matching ``layers``, every ``every_n_steps`` steps: the gradient norm (before clipping)
    and the update-to-weight ratio ``|w_after - w_before| / |w_before|`` of that optimiser step.

    Warns (once per kind, naming the step and the layers) when the gradient norm of a layer in the first third of
    the network stays below ``vanish_below`` for ``patience`` measurements in a row, or when a norm is not finite or
    jumps above ``explode_factor`` times that layer's median so far. ``on_fit_end`` draws ``gradient_norms`` (log10
    norm, layers x measured steps) into ``artifacts/`` and the loggers.
    """

    def __init__(self, every_n_steps: int = 50, layers: str = "*", vanish_below: float = 1e-7, patience: int = 3,
                 explode_factor: float = 100.0) -> None:
        self.every_n_steps, self.layers = every_n_steps, layers
        self.vanish_below, self.patience, self.explode_factor = vanish_below, patience, explode_factor
        self.history: dict[str, list[float]] = {}
        self.steps: list[int] = []
        self.warned: set[str] = set()
        self.low: dict[str, int] = {}
        self.before: dict[str, torch.Tensor] = {}

    def _layers(self, pl_module: L.LightningModule) -> list[tuple[str, nn.Module]]:
        return [(n, m) for n, m in watched_modules(pl_module, self.layers, _WEIGHTED)
                if any(p.requires_grad for p in m.parameters(recurse=False))]

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        if trainer.global_step % self.every_n_steps:
            return
        owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
        layers = self._layers(pl_module)
        values: dict[str, float] = {}
        found: dict[str, list[str]] = {}
        for rank, (name, module) in enumerate(layers):
            grads = [p.grad for p in module.parameters(recurse=False) if id(p) in owned and p.grad is not None]
            if not grads:
                continue
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])).item()
            values[f"debug/grad/{name}/norm"] = norm
            kind = self._check(name, norm, early=rank < max(1, math.ceil(len(layers) / 3)))
            if kind:
                found.setdefault(kind, []).append(f"'{name}' ({norm:.3g})")
            self.history.setdefault(name, []).append(norm)
            self.before[name] = torch.cat([p.detach().flatten().float() for p in module.parameters(recurse=False)
                                           if id(p) in owned]).clone()
        for kind, where in found.items():
            self._warn(kind, trainer.global_step, where)
        if values:
            if not self.steps or self.steps[-1] != trainer.global_step:
                self.steps.append(trainer.global_step)
            _log(trainer, values)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not self.before:
            return
        ratios = {}
        for name, module in self._layers(pl_module):
            if name in self.before:
                after = torch.cat([p.detach().flatten().float() for p in module.parameters(recurse=False)])
                if after.shape == self.before[name].shape:
                    ratios[f"debug/grad/{name}/update_ratio"] = ((after - self.before[name]).norm() /
                                                                 self.before[name].norm().clamp_min(1e-12)).item()
        self.before = {}
        _log(trainer, ratios)

    def _check(self, name: str, norm: float, early: bool) -> str | None:
        """``exploding``, ``vanishing`` or None for one layer's gradient norm."""
        past = self.history.get(name, [])
        self.low[name] = self.low.get(name, 0) + 1 if early and norm < self.vanish_below else 0
        if not math.isfinite(norm) or (len(past) >= 3 and norm > self.explode_factor * max(_median(past), 1e-12)):
            return "exploding"
        return "vanishing" if self.low[name] >= self.patience else None

    def _warn(self, kind: str, step: int, where: list[str]) -> None:
        """One warning per kind and run, naming the step and the layers (with their norms)."""
        if kind in self.warned:
            return
        self.warned.add(kind)
        layers = ", ".join(where[:5]) + (f" and {len(where) - 5} more" if len(where) > 5 else "")
        if kind == "exploding":
            message = (f"gradients EXPLODE at step {step} in layer {layers}: not finite or over "
                       f"{self.explode_factor:g}x the layer's median so far; lower the learning rate or clip "
                       "gradients (--trainer.gradient_clip_val 1.0)")
        else:
            message = (f"gradients VANISH at step {step} in early layer {layers}: norm < {self.vanish_below:g} for "
                       f"{self.patience} checks; use ReLU-family activations, Kaiming init, batch norm or residual "
                       "connections")
        warnings.warn(message, stacklevel=2)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.history and trainer.is_global_zero:
            from zoo.artifacts import log_figure

            log_figure(trainer, "gradient_norms", gradient_heatmap(self.history, self.steps))


def _median(values: list[float]) -> float:
    finite = sorted(v for v in values if math.isfinite(v))
    return finite[len(finite) // 2] if finite else float("nan")


def gradient_heatmap(history: dict[str, list[float]], steps: list[int]) -> Any:
    """A matplotlib figure: log10 gradient norm per layer (rows, input side on top) and measured step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    width = max(len(v) for v in history.values())
    grid = np.full((len(history), width), np.nan)
    for i, values in enumerate(history.values()):
        grid[i, : len(values)] = np.log10(np.clip(np.nan_to_num(values, nan=1e-30, posinf=1e30), 1e-30, None))
    fig, ax = plt.subplots(figsize=(max(6.0, min(14.0, 0.25 * width + 4)), max(3.0, 0.35 * len(history) + 1.5)))
    image = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(len(history)), list(history), fontsize=8)
    ticks = np.linspace(0, width - 1, min(width, 8)).round().astype(int)
    ax.set_xticks(ticks, [str(steps[t]) if t < len(steps) else "" for t in ticks])
    ax.set_xlabel("training step")
    ax.set_title("gradient norm per layer (log10)")
    fig.colorbar(image, ax=ax, label="log10 |grad|")
    fig.tight_layout()
    return fig
