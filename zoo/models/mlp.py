"""Dense network for tables: numeric inputs plus learned category embeddings -> MLP or ResNet blocks.

The task comes from the DataModule (``--data tabular``): regression (one or several targets, trained
on standardised targets, RMSE / MAE / R^2 logged on the original scale), binary (one logit),
multi-class and multi-label. ``residual`` switches the plain MLP (Linear -> norm -> activation ->
dropout) for the ResNet of Gorishniy et al. 2021 (pre-norm blocks ``x + Dropout(Linear(Dropout(
act(Linear(Norm(x))))))`` and a Norm -> act -> Linear head). Test time adds a predicted-vs-true
scatter (regression) or ROC curves and a confusion matrix (classification, :mod:`zoo.models.evaluation`)
and a permutation feature-importance chart.

Example:
    >>> model = TabularMLP(num_numeric=3, cardinalities=[4], num_outputs=1, task="regression")
    >>> model(torch.tensor([[0.1, -0.2, 0.3, 2.0]])).shape
    torch.Size([1, 1])
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from zoo.artifacts import log_figure
from zoo.errors import ZooUserError
from zoo.models._tabular_report import plot_importance, plot_regression, write_table_predictions
from zoo.models.base import ClassifierModule, OptimizerName, SchedulerName
from zoo.models.evaluation import classification_report, metric_key

__all__ = ["TabularMLP"]

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
LOSSES = {"regression": ("mse", "mae", "huber"), "binary": ("bce", "hinge"),
          "multiclass": ("cross_entropy", "hinge"), "multilabel": ("bce", "hinge")}


def _norm(kind: str, width: int) -> nn.Module:
    return {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}[kind](width) if kind != "none" else nn.Identity()


class ResidualBlock(nn.Module):
    """Gorishniy et al.'s ResNet block: ``x + Dropout(Linear(Dropout(act(Linear(Norm(x))))))``."""

    def __init__(self, width: int, inner: int, norm: str, activation: str, dropout: float,
                 inner_dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(_norm(norm, width), nn.Linear(width, inner), ACTIVATIONS[activation](),
                                  nn.Dropout(inner_dropout), nn.Linear(inner, width), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PeriodicEmbedding(nn.Module):
    """Numeric-feature embeddings of Gorishniy et al. 2022 ("PLR"): per feature ``ReLU(Linear([sin, cos](2 pi c x)))``
    with ``k`` learned frequencies ``c ~ N(0, sigma)``; [B, F] -> [B, F * dim]."""

    def __init__(self, n_features: int, k: int, sigma: float, dim: int) -> None:
        super().__init__()
        self.freq = nn.Parameter(torch.randn(n_features, k) * sigma)
        bound = (2 * k) ** -0.5  # nn.Linear's default init, one layer per feature
        self.weight = nn.Parameter(torch.empty(n_features, 2 * k, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_features, dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 2 * math.pi * self.freq * x[..., None]
        z = torch.cat([torch.sin(z), torch.cos(z)], dim=-1)
        return torch.relu(torch.einsum("bfk,fkd->bfd", z, self.weight) + self.bias).flatten(1)


class TabularMLP(ClassifierModule):
    """MLP / ResNet for tables: category embeddings, regression, binary, multi-class and multi-label heads.

    Args:
        task / num_numeric / cardinalities / num_outputs / target_mean / target_std: linked from the
            DataModule by the CLI (the task, numeric input columns, categories per categorical column
            including "unknown", outputs, and the regression targets' training mean / std used to
            report metrics and predictions on the original scale).
        hidden: widths of the hidden layers (``residual``: one block per entry, all the same width).
        activation: ``relu``, ``leaky_relu``, ``gelu``, ``tanh`` or ``sigmoid``.
        dropout: dropout after each hidden layer (``residual``: after each block).
        norm: ``none``, ``batch`` or ``layer`` normalisation in each layer / block.
        residual: ResNet blocks (Gorishniy et al. 2021) instead of the plain MLP.
        block_expansion / block_dropout: ``residual``: inner width of a block as a multiple of its width,
            and the dropout inside the block.
        embedding_dim: size of each category embedding; 0 = fastai's rule ``min(600, 1.6 * n ** 0.56)``.
        numeric_embedding: ``none`` (numbers enter as they are) or ``periodic`` (the PLR embeddings of
            Gorishniy et al. 2022, :class:`PeriodicEmbedding`).
        periodic_frequencies / periodic_sigma / periodic_dim: ``periodic``: learned frequencies per feature,
            the std of their initialisation, and the embedding size per feature.
        init: ``kaiming`` or ``xavier`` weight initialisation of the linear layers.
        loss: ``auto`` (mse, bce or cross_entropy by task), or ``mse`` / ``mae`` / ``huber`` (regression),
            ``bce`` (binary, multi-label), ``cross_entropy`` (multi-class), ``hinge`` (classification:
            labels as -1 / +1 per output, multi-class margin loss).
        optimizer / lr / weight_decay / momentum / scheduler: the optimisation recipe.
    """

    default_patience = 16
    trainer_defaults = {"max_epochs": 200}

    def __init__(
        self,
        task: Literal["regression", "binary", "multiclass", "multilabel"] = "regression",
        num_numeric: int = 10,
        cardinalities: Sequence[int] = (),
        num_outputs: int = 1,
        target_mean: Sequence[float] = (),
        target_std: Sequence[float] = (),
        hidden: tuple[int, ...] = (256, 256, 256),
        activation: Literal["relu", "leaky_relu", "gelu", "tanh", "sigmoid"] = "relu",
        dropout: float = 0.1,
        norm: Literal["none", "batch", "layer"] = "none",
        residual: bool = False,
        block_expansion: float = 2.0,
        block_dropout: float = 0.2,
        embedding_dim: int = 0,
        numeric_embedding: Literal["none", "periodic"] = "none",
        periodic_frequencies: int = 16,
        periodic_sigma: float = 0.1,
        periodic_dim: int = 16,
        init: Literal["kaiming", "xavier"] = "kaiming",
        loss: Literal["auto", "mse", "mae", "huber", "bce", "cross_entropy", "hinge"] = "auto",
        optimizer: OptimizerName = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        momentum: float = 0.9,
        scheduler: SchedulerName = "none",
    ) -> None:
        super().__init__()
        self._check(task, num_outputs, hidden, activation, norm, init, residual)
        loss = {"regression": "mse", "multiclass": "cross_entropy"}.get(task, "bce") if loss == "auto" else loss
        if loss not in LOSSES[task]:
            raise ZooUserError(f"loss '{loss}' does not fit a {task} task; choose {', '.join(LOSSES[task])}")
        self.save_hyperparameters()
        self.task, self.loss_name, self.n_num = task, loss, num_numeric
        dims = [embedding_dim or min(600, round(1.6 * n ** 0.56)) for n in cardinalities]
        self.embeddings = nn.ModuleList(nn.Embedding(n, d) for n, d in zip(cardinalities, dims))
        if numeric_embedding not in ("none", "periodic"):
            raise ZooUserError(f"unknown numeric_embedding '{numeric_embedding}'; choose none or periodic")
        periodic = numeric_embedding == "periodic" and num_numeric > 0
        self.numeric = (PeriodicEmbedding(num_numeric, periodic_frequencies, periodic_sigma, periodic_dim)
                        if periodic else nn.Identity())
        width_in = num_numeric * (periodic_dim if periodic else 1) + sum(dims)
        if residual:
            layers: list[nn.Module] = [nn.Linear(width_in, hidden[0])]
            layers += [ResidualBlock(hidden[0], int(hidden[0] * block_expansion), norm, activation, dropout,
                                     block_dropout) for _ in hidden]
            layers += [_norm(norm, hidden[0]), ACTIVATIONS[activation]()]
        else:
            layers = []
            for w_in, w_out in zip([width_in, *hidden[:-1]], hidden):
                layers += [nn.Linear(w_in, w_out), _norm(norm, w_out), ACTIVATIONS[activation](), nn.Dropout(dropout)]
        self.body, self.head = nn.Sequential(*layers), nn.Linear(hidden[-1] if hidden else width_in, num_outputs)
        self._init_weights(init, activation)
        nn.init.zeros_(self.head.weight)  # start from the trivial predictor: the training mean / uniform classes
        n_targets = num_outputs if task == "regression" else 0
        self.register_buffer("y_mean",
                             torch.tensor(list(target_mean) or [0.0] * n_targets, dtype=torch.float32).view(1, -1))
        self.register_buffer("y_std",
                             torch.tensor(list(target_std) or [1.0] * n_targets, dtype=torch.float32).view(1, -1))
        self.monitor, self.monitor_mode = ("val/rmse" if task == "regression" else "val/loss"), "min"
        self._init_task_metrics()
        self.example_input_array = torch.zeros(2, num_numeric + len(cardinalities))
        self._test_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    @staticmethod
    def _check(task: str, num_outputs: int, hidden: tuple[int, ...], activation: str, norm: str, init: str,
               residual: bool) -> None:
        if task not in LOSSES:
            raise ZooUserError(f"task must be regression, binary, multiclass or multilabel, got '{task}'")
        if num_outputs < 1 or (task == "binary" and num_outputs != 1) or (task == "multiclass" and num_outputs < 2):
            raise ZooUserError(f"num_outputs={num_outputs} does not fit task '{task}'; drop --model.num_outputs "
                               "(the CLI links it from the data)")
        for name, value, known in (("activation", activation, ACTIVATIONS), ("norm", norm, ("none", "batch", "layer")),
                                   ("init", init, ("kaiming", "xavier"))):
            if value not in known:
                raise ZooUserError(f"unknown {name} '{value}'; choose {', '.join(known)}")
        if any(h < 1 for h in hidden) or (residual and (not hidden or len(set(hidden)) != 1)):
            raise ZooUserError(f"hidden={list(hidden)}: sizes must be positive (residual: at least one, all equal)")

    def _init_weights(self, init: str, activation: str) -> None:
        gain = {"gelu": "relu", "sigmoid": "sigmoid"}.get(activation, activation)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                if init == "kaiming":
                    nn.init.kaiming_normal_(m.weight, nonlinearity=gain)
                else:
                    nn.init.xavier_uniform_(m.weight, gain=nn.init.calculate_gain(gain))
                nn.init.zeros_(m.bias)

    def _init_task_metrics(self) -> None:
        if self.task == "regression":
            self.metric_names = ("loss", "rmse", "mae", "r2")
            for stage in ("train", "val", "test"):
                setattr(self, f"{stage}_loss", torchmetrics.MeanMetric())
                setattr(self, f"{stage}_rmse", torchmetrics.MeanSquaredError(squared=False))
                setattr(self, f"{stage}_mae", torchmetrics.MeanAbsoluteError())
                setattr(self, f"{stage}_r2", torchmetrics.R2Score())
        else:
            self.metric_names = ("loss", "acc", "f1")
            n = self.hparams.num_outputs
            self._init_stage_metrics(**{"binary": dict(task="binary"),
                                        "multilabel": dict(task="multilabel", num_labels=n),
                                        "multiclass": dict(task="multiclass", num_classes=n)}[self.task])

    # ---- forward, losses, predictions ---------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [self.numeric(x[:, : self.n_num])] + \
            [emb(x[:, self.n_num + i].long()) for i, emb in enumerate(self.embeddings)]
        return self.head(self.body(torch.cat(parts, dim=1)))

    def criterion(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        name = self.loss_name
        if self.task == "regression":
            return {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.huber_loss}[name](out, y)
        if self.task == "multiclass":
            return F.cross_entropy(out, y) if name == "cross_entropy" else F.multi_margin_loss(out, y)
        y = y.float().view_as(out)
        if name == "bce":
            return F.binary_cross_entropy_with_logits(out, y)
        return F.relu(1 - (2 * y - 1) * out).mean()  # hinge on labels mapped {0, 1} -> {-1, +1}

    def outputs(self, out: torch.Tensor) -> torch.Tensor:
        """Original-scale values (regression), positive-class probabilities [N] (binary; a sigmoid of the
        hinge score ranks the same), class probabilities [N, C] or label probabilities [N, L]."""
        if self.task == "regression":
            return out * self.y_std + self.y_mean
        if self.task == "multiclass":
            return out.softmax(dim=-1)
        probs = out.sigmoid()
        return probs[:, 0] if self.task == "binary" else probs

    def _shared_step(self, batch: Any, stage: str) -> dict[str, torch.Tensor]:
        x, y = batch
        out = self(x)
        loss = self.criterion(out, y)
        if self.task == "regression":
            preds, target = self.outputs(out), y * self.y_std + self.y_mean
        else:
            preds = out.argmax(dim=-1) if self.task == "multiclass" else (out > 0).long().squeeze(-1)
            target = y.long()
        self._log_step(stage, loss, preds, target)
        return {"loss": loss, "preds": preds, "target": target, "out": out}

    def _log_step(self, stage: str, loss: torch.Tensor, preds: torch.Tensor, target: torch.Tensor) -> None:
        for name in self.metric_names[1:]:
            metric = getattr(self, f"{stage}_{name}")
            if name in ("rmse", "mae"):
                metric.update(preds.flatten(), target.flatten())
            else:
                metric.update(preds, target)
        if stage == "train":
            self.log_train_step("train/loss", loss, self.train_loss, len(target))
        else:
            getattr(self, f"{stage}_loss").update(loss.detach(), weight=len(target))

    def _log_epoch_metrics(self, stage: str) -> None:
        for name in self.metric_names:
            metric = getattr(self, f"{stage}_{name}")
            if metric.update_count:
                self.log(f"{stage}/{name}", metric, prog_bar=name in ("loss", "rmse", "acc"))

    # ---- test report --------------------------------------------------------------------------------
    def on_test_epoch_start(self) -> None:
        self._test_outputs = []

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        out = self._shared_step(batch, "test")
        self._test_outputs.append((batch[0].detach(), batch[1].detach()))
        return out

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if not self._test_outputs:
            return
        x, y = (torch.cat(t) for t in zip(*self._test_outputs))
        self._test_outputs = []
        if self.trainer.world_size > 1:
            x, y = (self.all_gather(t).flatten(0, 1) for t in (x, y))
        dm = getattr(self.trainer, "datamodule", None)
        with torch.no_grad():
            preds = self.outputs(self(x))
        if self.task == "regression":
            truth = y * self.y_std + self.y_mean
            names = list(getattr(dm, "target_names", None) or range(truth.shape[1]))
            if truth.shape[1] > 1:
                for k, name in enumerate(names):
                    rmse = (preds[:, k] - truth[:, k]).pow(2).mean().sqrt()
                    self.log(f"test/rmse_{metric_key(name)}", rmse, sync_dist=False, rank_zero_only=True)
            figures = {"predicted_vs_true": plot_regression(preds.cpu(), truth.cpu(), [str(n) for n in names])}
        else:
            names = list(getattr(dm, "class_names", None) or [])
            n_names = max(self.hparams.num_outputs, 2)
            names = names if len(names) == n_names else [str(i) for i in range(n_names)]
            numbers, figures = classification_report(self.task, preds, y, names)
            if self.task == "multilabel":
                f1 = torchmetrics.functional.classification.multilabel_f1_score(preds, y.long(), len(names),
                                                                                average=None)
                numbers.update({f"f1_{metric_key(n)}": float(v) for n, v in zip(names, f1)})
            for key, value in numbers.items():
                self.log(f"test/{key}", value, sync_dist=False, rank_zero_only=True)
        inputs = list(getattr(dm, "input_names", None) or range(x.shape[1]))
        scores, what = self.permutation_importance(x, y)
        figures["feature_importance"] = plot_importance(scores, [str(n) for n in inputs], what)
        for name, fig in figures.items():
            log_figure(self.trainer, name, fig)

    @torch.no_grad()
    def permutation_importance(self, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, str]:
        """Per input column, how much the error grows when that column is shuffled across the rows
        (test RMSE on the original scale for regression, 1 - accuracy otherwise); and what was measured."""
        def error(inputs: torch.Tensor) -> float:
            out = self(inputs)
            if self.task == "regression":
                return float(((out - y) * self.y_std).pow(2).mean().sqrt())
            preds = out.argmax(dim=-1) if self.task == "multiclass" else (out > 0).long().view_as(y)
            return 1.0 - float((preds == y.long()).float().mean())

        gen, base, scores = torch.Generator().manual_seed(seed), error(x), []
        for j in range(x.shape[1]):
            shuffled = x.clone()
            shuffled[:, j] = x[torch.randperm(len(x), generator=gen).to(x.device), j]
            scores.append(error(shuffled) - base)
        return torch.tensor(scores), "increase of test RMSE" if self.task == "regression" else "drop of test accuracy"

    # ---- predict ------------------------------------------------------------------------------------
    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.outputs(self(x)).cpu()

    def write_predictions(self, predictions: list[Any], out_dir: Path, datamodule: Any) -> Path:
        """``predictions.csv``: the input rows with the predicted value(s), or label and probabilities."""
        return write_table_predictions(torch.cat(predictions), self.task, out_dir, datamodule)
