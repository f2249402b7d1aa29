"""Test-time pictures and the prediction file of the tabular models (private helper of :mod:`zoo.models.mlp`,
kept beside :mod:`zoo.datamodules.tabular` whose ``predict_frame`` / ``class_names`` it reads).

Example:
    >>> fig = plot_importance(torch.tensor([0.3, 0.1]), ["a", "b"], "increase of test RMSE")
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zoo.models.evaluation import class_columns

__all__ = ["plot_regression", "plot_importance", "write_table_predictions"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_regression(preds: torch.Tensor, truth: torch.Tensor, names: list[str]) -> Any:
    """Predicted vs true scatter on the original scale, one panel per target (at most 4)."""
    plt = _plt()
    n = min(preds.shape[1], 4)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2), dpi=100, squeeze=False)
    for k, ax in enumerate(axes[0]):
        p, t = preds[:, k].numpy(), truth[:, k].numpy()
        rmse = float(((p - t) ** 2).mean() ** 0.5)
        lo, hi = float(min(p.min(), t.min())), float(max(p.max(), t.max()))
        ax.scatter(t, p, s=8, alpha=0.5, edgecolors="none")
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set(xlabel=f"true {names[k]}", ylabel=f"predicted {names[k]}", title=f"{names[k]} (test RMSE {rmse:.4g})")
    fig.tight_layout()
    return fig


def plot_importance(scores: torch.Tensor, names: list[str], what: str, top: int = 20) -> Any:
    """Horizontal bars of the permutation importance of the ``top`` most important input columns."""
    plt = _plt()
    order = scores.argsort(descending=True)[:top].flip(0)
    fig, ax = plt.subplots(figsize=(6.5, 1.2 + 0.3 * len(order)), dpi=100)
    ax.barh([names[i] for i in order], scores[order].numpy())
    ax.set(xlabel=what, title="permutation feature importance (test)")
    fig.tight_layout()
    return fig


def write_table_predictions(preds: torch.Tensor, task: str, out_dir: Path, datamodule: Any) -> Path:
    """``predictions.csv``: the input rows (when the DataModule kept them) plus the prediction columns."""
    import pandas as pd

    frame = getattr(datamodule, "predict_frame", None)
    table = frame.reset_index(drop=True).copy() if frame is not None and len(frame) == len(preds) else pd.DataFrame(
        index=range(len(preds)))
    if task == "regression":
        for k, name in enumerate(getattr(datamodule, "target_names", None) or range(preds.shape[1])):
            table[f"predicted_{name}"] = preds[:, k].numpy()
        path = Path(out_dir) / "predictions.csv"
        table.to_csv(path, index=False)
        return path
    names = getattr(datamodule, "class_names", None) or range(max(preds.reshape(len(preds), -1).shape[1], 2))
    for column, values in class_columns(preds, list(names), task).items():
        table[column] = values
    path = Path(out_dir) / "predictions.csv"
    table.to_csv(path, index=False)
    return path
