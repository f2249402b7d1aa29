"""A loss / metric curve PNG at the end of every run, from the run's own epoch metrics (any logger).

Example:
    >>> trainer = L.Trainer(callbacks=[MetricCurves()])  # doctest: +SKIP
    >>> # after fit: <run>/artifacts/curves_step*.png, one panel per metric (train and val together)
"""
from __future__ import annotations

from collections import defaultdict

import lightning as L
import torch

from zoo.artifacts import log_figure

__all__ = ["MetricCurves"]


class MetricCurves(L.Callback):
    """Records every scalar epoch metric (``train/...``, ``val/...``) after each epoch and draws them at the end of
    fit: one panel per metric name, train and validation in one panel, epochs on the x-axis."""

    def __init__(self, max_panels: int = 6) -> None:
        self.max_panels = max_panels
        self.history: dict[str, dict[int, float]] = defaultdict(dict)

    def _record(self, trainer: L.Trainer, epoch: int) -> None:
        for key, value in trainer.callback_metrics.items():
            stage, _, name = key.partition("/")
            if stage in ("train", "val") and name and not key.endswith("_step") and torch.is_tensor(value) \
                    and value.numel() == 1 and torch.isfinite(value):
                self.history[key][epoch] = float(value)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # callbacks' epoch-end hooks run before the module's (where epoch metrics are logged): read them one later
        if trainer.current_epoch > 0:
            self._record(trainer, trainer.current_epoch - 1)

    def panels(self) -> dict[str, dict[str, dict[int, float]]]:
        """Metric name -> stage -> {epoch: value}; loss first, then the others in name order."""
        grouped: dict[str, dict[str, dict[int, float]]] = defaultdict(dict)
        for key, series in self.history.items():
            stage, _, name = key.partition("/")
            grouped[name.removesuffix("_epoch")][stage] = series
        names = sorted(grouped, key=lambda n: (n != "loss", n))[: self.max_panels]
        return {n: grouped[n] for n in names}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, max(trainer.current_epoch - 1, 0))
        panels = self.panels()
        if not panels or not trainer.is_global_zero:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cols = min(3, len(panels))
        rows = -(-len(panels) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False)
        for ax, (name, stages) in zip(axes.flat, panels.items()):
            for stage, series in sorted(stages.items()):
                epochs = sorted(series)
                ax.plot([e + 1 for e in epochs], [series[e] for e in epochs], marker="o" if len(epochs) < 30 else None,
                        label=stage)
            ax.set(title=name, xlabel="epoch", ylabel=name)
            ax.grid(alpha=0.3)
            ax.legend()
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        fig.suptitle(f"{type(pl_module).__name__}: metrics per epoch")
        fig.tight_layout()
        log_figure(trainer, "curves", fig)
