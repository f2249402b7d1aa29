"""Evaluation plots shared by classifiers: a confusion matrix at the end of testing.

Example:
    >>> class MyClassifier(ConfusionMatrixMixin, ClassifierModule): ...  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torchmetrics

from zoo.artifacts import log_figure


def plot_confusion_matrix(cm: torch.Tensor, class_names: Sequence[str]) -> Any:
    """A figure of a confusion matrix (rows: true class, columns: predicted), drawn by torchmetrics' plotting, sized
    so that titles and class names fit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchmetrics.utilities.plot import plot_confusion_matrix as draw

    n = cm.shape[0]
    side = max(5.0, 0.6 * n + 2.5)
    fig, ax = plt.subplots(figsize=(side, side * 0.85), dpi=100)
    draw(cm.cpu(), ax=ax, add_text=n <= 30, labels=[str(c) for c in class_names], cmap="Blues")
    ax.set_title("confusion matrix (test)")
    fig.tight_layout()
    return fig


class ConfusionMatrixMixin:
    """Accumulates test predictions and writes ``confusion_matrix`` PNG (run folder + loggers)."""

    def on_test_epoch_start(self) -> None:
        self.test_confmat = torchmetrics.ConfusionMatrix(task="multiclass", num_classes=self.hparams.num_classes)
        self.test_confmat.to(self.device)

    def on_test_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if isinstance(outputs, dict) and "preds" in outputs:
            self.test_confmat.update(outputs["preds"], outputs["target"])

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()  # type: ignore[misc]
        cm = self.test_confmat.compute().cpu()
        dm = getattr(self.trainer, "datamodule", None)
        names = list(getattr(dm, "class_names", None) or range(cm.shape[0]))
        log_figure(self.trainer, "confusion_matrix", plot_confusion_matrix(cm, [str(n) for n in names]))


def plot_embedding(h: torch.Tensor, labels: torch.Tensor | None, title: str) -> Any:
    """A 2-D PCA projection of embeddings (N, D), one colour per label: do the classes separate?"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with torch.autocast("cpu", enabled=False):  # called inside a bf16 test loop: project in float32
        h = h.detach().float().cpu()
        h = h - h.mean(0)
        _, s, v = torch.linalg.svd(h, full_matrices=False)
        xy = (h @ v[:2].T if h.shape[1] >= 2 else torch.cat([h, torch.zeros_like(h)], 1)).numpy()
        share = (s[:2] ** 2).sum() / (s ** 2).sum().clamp_min(1e-12)
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    points = ax.scatter(xy[:, 0], xy[:, 1], c=None if labels is None else labels.cpu(), cmap="tab10", s=8)
    if labels is not None:
        ax.legend(*points.legend_elements(), title="class", fontsize=8, loc="best")
    ax.set(title=f"{title} (PCA, {100 * float(share):.0f} % of variance)", xlabel="PC 1", ylabel="PC 2")
    fig.tight_layout()
    return fig
