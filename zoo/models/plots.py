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
    """A matplotlib figure of a confusion matrix (rows: true class, columns: predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = cm.shape[0]
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n), dpi=100)
    ax.imshow(cm.numpy(), cmap="Blues")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title="confusion matrix (test)")
    ax.set_xticklabels(class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(class_names, fontsize=8)
    thresh = cm.max().item() / 2
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > thresh else "black")
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
