"""Biased matrix factorisation for explicit ratings, with the rating-error histogram; the top-k CSV, similar
items and the item map come from ``zoo.models.recommender``.

Example:
    >>> model = MatrixFactorization(num_users=10, num_items=20, embedding_dim=8)
    >>> model(torch.tensor([0, 3]), torch.tensor([5, -1])).shape  # -1: an item unseen in training
    torch.Size([2])
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from zoo.artifacts import log_figure
from zoo.datamodules.interfaces import InteractionData
from zoo.errors import ZooUserError
from zoo.models.base import OptimizerName, SchedulerName, ZooModule
from zoo.models.recommender import RecommenderMixin

__all__ = ["MatrixFactorization", "fit_biases"]


def fit_biases(users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor, num_users: int, num_items: int,
               reg_u: float = 15.0, reg_i: float = 10.0, iters: int = 10) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(user biases, item biases, global mean) by alternating least squares, as Surprise's BaselineOnly."""
    mean = ratings.mean().item()
    bu, bi = torch.zeros(num_users), torch.zeros(num_items)
    n_u = torch.bincount(users, minlength=num_users).float()
    n_i = torch.bincount(items, minlength=num_items).float()
    for _ in range(iters):
        bi = torch.zeros(num_items).index_add_(0, items, ratings - mean - bu[users]) / (reg_i + n_i)
        bu = torch.zeros(num_users).index_add_(0, users, ratings - mean - bi[items]) / (reg_u + n_u)
    return bu, bi, mean


def _rating_metrics() -> torchmetrics.MetricCollection:
    return torchmetrics.MetricCollection({"rmse": torchmetrics.MeanSquaredError(squared=False),
                                          "mae": torchmetrics.MeanAbsoluteError()})


class MatrixFactorization(RecommenderMixin, ZooModule):
    """Biased matrix factorisation for explicit ratings: global mean + user and item biases + factor dot product.

    Args:
        num_users / num_items: filled in from the DataModule by the CLI.
        embedding_dim: size of the user and item factors.
        l2: L2 penalty on the factors of the rows used in each batch (mean over the batch's ratings).
        bias_l2: the same penalty on the biases.
        dropout: dropout on the factors during training.
        init_std: std of the normal initialisation of the factors.
        init_biases: start the biases from the ALS baseline (Surprise's BaselineOnly) fitted on the training rows.
        k: how many items ``train.py predict`` recommends per user.
        optimizer / lr / weight_decay / scheduler: the optimisation recipe (``weight_decay`` shrinks every row
            every step, unlike ``l2``).
    """

    monitor, monitor_mode = "val/rmse", "min"
    default_patience = 5
    trainer_defaults = {"max_epochs": 200}
    data_interface = InteractionData

    def __init__(self, num_users: int = 1, num_items: int = 1, embedding_dim: int = 128, l2: float = 0.1,
                 bias_l2: float = 0.01, dropout: float = 0.0, init_std: float = 0.1, init_biases: bool = True,
                 k: int = 10, optimizer: OptimizerName = "adam", lr: float = 1e-2, weight_decay: float = 0.0,
                 scheduler: SchedulerName = "none") -> None:
        super().__init__()
        if min(num_users, num_items, embedding_dim, k) < 1:
            raise ZooUserError(f"num_users, num_items, embedding_dim and k must be >= 1, got {num_users}, "
                               f"{num_items}, {embedding_dim}, {k}")
        self.save_hyperparameters()
        self.user_factors = nn.Embedding(num_users, embedding_dim)
        self.item_factors = nn.Embedding(num_items, embedding_dim)
        self.user_bias, self.item_bias = nn.Embedding(num_users, 1), nn.Embedding(num_items, 1)
        for emb in (self.user_factors, self.item_factors):
            nn.init.normal_(emb.weight, std=init_std)
        for emb in (self.user_bias, self.item_bias):
            nn.init.zeros_(emb.weight)
        self.drop = nn.Dropout(dropout)
        # Filled from the training rows at fit start, saved with the weights: mean, rating range, ALS baseline.
        self.register_buffer("global_mean", torch.tensor(3.5))
        self.register_buffer("rating_range", torch.tensor([float("-inf"), float("inf")]))
        self.register_buffer("baseline_user", torch.zeros(num_users))
        self.register_buffer("baseline_item", torch.zeros(num_items))
        self.metrics = nn.ModuleDict({f"{stage}_{who}": _rating_metrics() for stage in ("val", "test")
                                      for who in ("model", "global_mean", "bias")})
        self.train_loss = torchmetrics.MeanMetric()
        self.unseen = nn.ModuleDict({name: torchmetrics.SumMetric() for name in ("unseen_users", "unseen_items")})
        self.test_errors: list[torch.Tensor] = []
        self.example_input_array = (torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long))

    # ---- data-dependent state ------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if stage != "fit" or dm is None or not hasattr(dm, "train_interactions"):
            return
        if getattr(dm, "implicit", False):
            raise ZooUserError("mf fits explicit ratings; use --model neumf for implicit feedback, "
                               "or --data.implicit false")
        self.fit_from(*dm.train_interactions())

    def fit_from(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor) -> None:
        """Set the global mean, rating range and ALS bias baseline from training rows (and start the biases there)."""
        bu, bi, mean = fit_biases(users, items, ratings, self.hparams.num_users, self.hparams.num_items)
        self.global_mean.fill_(mean)
        self.rating_range.copy_(torch.stack([ratings.min(), ratings.max()]))
        self.baseline_user.copy_(bu)
        self.baseline_item.copy_(bi)
        if self.hparams.init_biases:
            with torch.no_grad():
                self.user_bias.weight[:, 0] = bu
                self.item_bias.weight[:, 0] = bi

    # ---- model ---------------------------------------------------------------------------------------
    def _parts(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, ...]:
        known_u, known_i = users >= 0, items >= 0  # -1: unseen in training, scored by the other bias alone
        u, i = users.clamp(min=0), items.clamp(min=0)
        p, q = self.user_factors(u), self.item_factors(i)
        b_u, b_i = self.user_bias(u).squeeze(-1), self.item_bias(i).squeeze(-1)
        dot = (self.drop(p) * self.drop(q)).sum(-1)
        pred = self.global_mean + b_u * known_u + b_i * known_i + dot * (known_u & known_i)
        return pred, p, q, b_u, b_i

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Predicted ratings (unclipped) for pairs of user and item indices."""
        return self._parts(users, items)[0]

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Predicted ratings of every item for each user [B, num_items] (an unknown user: item biases)."""
        known = (users >= 0).to(self.item_factors.weight.dtype)[:, None]
        u = users.clamp(min=0)
        dot = self.user_factors(u) @ self.item_factors.weight.T + self.user_bias(u)
        return self.global_mean + self.item_bias.weight.T + dot * known

    def item_embeddings(self) -> torch.Tensor:
        return self.item_factors.weight

    def export_notes(self, out_dir: Path) -> str:
        return ("input0 / input1 = user / item indices (int64) in the order of the checkpoint's user_ids / "
                "item_ids, -1 for one unseen in training; output = predicted rating (clip it to the rating range)")

    def loss(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        """Mean squared error plus L2 on the factors and biases of the batch's rows."""
        pred, p, q, b_u, b_i = self._parts(users, items)
        l2 = (p.pow(2).sum(-1) + q.pow(2).sum(-1)).mean()
        bias_l2 = (b_u.pow(2) + b_i.pow(2)).mean()
        return F.mse_loss(pred, ratings) + self.hparams.l2 * l2 + self.hparams.bias_l2 * bias_l2

    # ---- loop ----------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.loss(*batch)
        self.log_train_step("train/loss", loss, self.train_loss, len(batch[0]))
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/loss", self.train_loss, prog_bar=True)

    def _eval_step(self, batch: Any, stage: str) -> None:
        users, items, ratings = batch
        lo, hi = self.rating_range
        pred = self(users, items).clamp(lo, hi)
        u, i = users.clamp(min=0), items.clamp(min=0)
        bias = self.global_mean + self.baseline_user[u] * (users >= 0) + self.baseline_item[i] * (items >= 0)
        self.metrics[f"{stage}_model"].update(pred, ratings)
        self.metrics[f"{stage}_global_mean"].update(self.global_mean.expand_as(ratings), ratings)
        self.metrics[f"{stage}_bias"].update(bias.clamp(lo, hi), ratings)
        if stage == "test":
            self.unseen["unseen_users"].update((users < 0).sum())
            self.unseen["unseen_items"].update((items < 0).sum())
            self.test_errors.append((pred - ratings).detach().cpu())

    def _log_eval(self, stage: str) -> None:
        for who in ("model", "global_mean", "bias"):
            metrics = self.metrics[f"{stage}_{who}"]
            prefix = f"{stage}/" if who == "model" else f"{stage}/{who}_"
            self.log_dict({prefix + k: v for k, v in metrics.compute().items()}, prog_bar=who == "model")
            metrics.reset()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_start(self) -> None:
        self.test_errors = []

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")
        for name, metric in self.unseen.items():  # rows scored by the biases alone (counts)
            self.log(f"test/{name}", metric.compute())
            metric.reset()
        if self.test_errors:
            self.log_error_histogram(torch.cat(self.test_errors))
        self.log_item_map()

    def log_error_histogram(self, errors: torch.Tensor) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
        ax.hist(errors.numpy(), bins=60, color="tab:blue")
        rmse = errors.pow(2).mean().sqrt().item()
        ax.set(title=f"test rating errors (prediction - rating); RMSE {rmse:.4f}", xlabel="error", ylabel="ratings")
        fig.tight_layout()
        log_figure(self.trainer, "rating_errors", fig)
