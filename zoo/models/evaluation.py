"""Full classification report at test time: per-class precision/recall, AUROC, ROC curves, confusion.

``classification_report`` works on gathered probabilities for the three task types and returns
the numbers (logged as ``test/<name>``) and matplotlib figures (saved through zoo.artifacts).

Example:
    >>> probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    >>> numbers, figures = classification_report("multiclass", probs, torch.tensor([0, 1]), ["a", "b"])
    >>> numbers["auroc"], sorted(figures)
    (1.0, ['confusion_matrix', 'precision_recall', 'roc_curves'])
"""
from __future__ import annotations

import re
from typing import Any, Literal, Sequence

import torch
from torchmetrics import functional as MF

from zoo.models.plots import plot_confusion_matrix

__all__ = ["ClassificationTask", "classification_report", "metric_key", "class_columns", "write_class_predictions"]


def class_columns(probs: torch.Tensor, names: Sequence[str], task: str = "multiclass", threshold: float = 0.5,
                  sep: str = ";") -> dict[str, list[Any]]:
    """The class-probabilities schema of every classifier's ``predictions.csv``: ``prediction`` (multi-label: the
    labels at or above ``threshold`` joined by ``sep``), then one ``p_<class>`` per class (binary: the positive one)."""
    names = [str(n) for n in names]
    if task == "binary":
        probs = probs.reshape(-1, 1)
        prediction = [names[int(p >= threshold)] for p in probs[:, 0].tolist()]
        names = names[-1:]
    elif task == "multiclass":
        prediction = [names[i] for i in probs.argmax(dim=1).tolist()]
    else:
        prediction = [sep.join(n for n, q in zip(names, row) if q >= threshold) for row in probs.tolist()]
    scores = {f"p_{n}": [round(float(q), 4) for q in probs[:, k]] for k, n in enumerate(names)}
    return {"prediction": prediction, **scores}


def write_class_predictions(path: Any, inputs: Sequence[Any], probs: torch.Tensor, names: Sequence[str],
                            task: str = "multiclass", **kw: Any) -> Any:
    """``predictions.csv`` as ``input, prediction, p_<class>...`` (see :func:`class_columns`); printed too."""
    import csv
    from pathlib import Path

    columns = {"input": [str(i) for i in inputs], **class_columns(probs, names, task, **kw)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = list(zip(*columns.values()))
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(rows)
    print("\n".join(f"{row[0]}\t{row[1]}" for row in rows))
    return path

ClassificationTask = Literal["multiclass", "binary", "multilabel"]


def metric_key(name: str) -> str:
    """A class name made safe for a metric key ("T-shirt/top" -> "T-shirt_top")."""
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", str(name)).strip("_") or "class"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_roc(curves: Sequence[tuple[torch.Tensor, torch.Tensor]], aucs: Sequence[float], names: Sequence[str]) -> Any:
    """Ours, not torchmetrics' ``ROC.plot``: that legend numbers the classes; this one names them, each with its AUC."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=100)
    for (fpr, tpr), auc, name in zip(curves, aucs, names):
        ax.plot(fpr.numpy(), tpr.numpy(), lw=1.2, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curves (test)",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def _plot_precision_recall(precision: torch.Tensor, recall: torch.Tensor, names: Sequence[str]) -> Any:
    """Per-class precision and recall at the decision threshold as bars (torchmetrics plots curves, not this)."""
    plt = _plt()
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.5 + 0.6 * n, 4), dpi=100)
    pos = torch.arange(n).numpy()
    ax.bar(pos - 0.2, precision.numpy(), width=0.4, label="precision")
    ax.bar(pos + 0.2, recall.numpy(), width=0.4, label="recall")
    ax.set_xticks(pos)
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set(ylim=(0, 1.05), title="per-class precision / recall (test)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _plot_label_confusion(cms: torch.Tensor, names: Sequence[str]) -> Any:
    """One 2x2 confusion matrix per label (multi-label)."""
    plt = _plt()
    n = len(names)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.4 * rows), dpi=100, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        ax.imshow(cms[k].numpy(), cmap="Blues")
        for i in range(2):
            for j in range(2):
                ax.text(j, i, int(cms[k, i, j]), ha="center", va="center", fontsize=8)
        ax.set(xticks=[0, 1], yticks=[0, 1], title=names[k], xlabel="predicted", ylabel="true")
    fig.tight_layout()
    return fig


def classification_report(
    task: ClassificationTask, probs: torch.Tensor, target: torch.Tensor, class_names: Sequence[str],
    threshold: float = 0.5,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Numbers and figures of a test set.

    Args:
        task: ``multiclass`` (probs N x C, target N), ``binary`` (probs N, positive-class
            probability, target N in {0, 1}) or ``multilabel`` (probs and target N x L).
        class_names: C class names (binary: two names, the second is the positive class) or L labels.
        threshold: decision threshold for binary and multi-label predictions.

    Returns ``({"auroc": macro, "auroc_<name>": ..., "precision_<name>": ..., "recall_<name>": ...},
    {"roc_curves": fig, "precision_recall": fig, "confusion_matrix": fig})``.
    """
    probs, target = probs.float().cpu(), target.cpu()
    names = [str(n) for n in class_names]
    if task == "multiclass":
        c = probs.shape[1]
        aucs = MF.classification.multiclass_auroc(probs, target, c, average=None)
        fpr, tpr, _ = MF.classification.multiclass_roc(probs, target, c)
        curves, roc_names = list(zip(fpr, tpr)), names
        preds = probs.argmax(-1)
        precision = MF.classification.multiclass_precision(preds, target, c, average=None)
        recall = MF.classification.multiclass_recall(preds, target, c, average=None)
        confusion = plot_confusion_matrix(MF.classification.multiclass_confusion_matrix(preds, target, c), names)
    elif task == "binary":
        target = target.long()
        aucs = MF.classification.binary_auroc(probs, target).reshape(1)
        fpr, tpr, _ = MF.classification.binary_roc(probs, target)
        curves, roc_names = [(fpr, tpr)], names[-1:]
        preds = (probs >= threshold).long()
        precision = MF.classification.multiclass_precision(preds, target, 2, average=None)
        recall = MF.classification.multiclass_recall(preds, target, 2, average=None)
        confusion = plot_confusion_matrix(MF.classification.multiclass_confusion_matrix(preds, target, 2), names)
    elif task == "multilabel":
        target = target.long()
        n = probs.shape[1]
        aucs = MF.classification.multilabel_auroc(probs, target, n, average=None)
        fpr, tpr, _ = MF.classification.multilabel_roc(probs, target, n)
        curves, roc_names = list(zip(fpr, tpr)), names
        precision = MF.classification.multilabel_precision(probs, target, n, threshold=threshold, average=None)
        recall = MF.classification.multilabel_recall(probs, target, n, threshold=threshold, average=None)
        confusion = _plot_label_confusion(
            MF.classification.multilabel_confusion_matrix(probs, target, n, threshold=threshold), names)
    else:
        raise ValueError(f"unknown task '{task}'")
    numbers = {"auroc": float(aucs.mean())}
    numbers.update({f"auroc_{metric_key(n)}": float(a) for n, a in zip(roc_names, aucs)})
    numbers.update({f"precision_{metric_key(n)}": float(p) for n, p in zip(names, precision)})
    numbers.update({f"recall_{metric_key(n)}": float(r) for n, r in zip(names, recall)})
    figures = {"roc_curves": _plot_roc(curves, aucs.tolist(), roc_names),
               "precision_recall": _plot_precision_recall(precision, recall, names),
               "confusion_matrix": confusion}
    return numbers, figures
