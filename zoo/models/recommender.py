"""What every zoo recommender shares: top-k recommendations as ``predict``, similar items by embedding, and a
2-D map of the item embeddings (``mf``, ``autorec`` and ``neumf`` mix it in); and, for the explicit-rating
models (``mf``, ``autorec``), the rating range, the ALS bias baseline, RMSE / MAE beside the global-mean and
bias baselines, the unseen-row counts and the rating-error histogram.

Example:
    >>> from zoo.models import MatrixFactorization
    >>> model = MatrixFactorization(num_users=3, num_items=5, embedding_dim=4)
    >>> model.similar_items(torch.tensor([0]), n=2)[0].shape
    torch.Size([1, 2])
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from zoo.artifacts import log_figure
from zoo.errors import ZooUserError

__all__ = ["RecommenderMixin", "ExplicitRatingsMixin", "fit_biases"]


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


class RecommenderMixin:
    """Top-k recommendations (predict), similar items by embedding and the item map, for a model with
    ``score_all(users) -> [B, num_items]``, ``item_embeddings()`` and hyperparameter ``k``."""

    predict_hint = "predict takes a text file of raw user ids (one per line, or the word all) or item:ID lines"

    def predict_step(self, batch: Any, batch_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(top-k item indices, scores): unseen items for ``(users, seen)``, similar items for ``(items,)``."""
        if len(batch) == 1:
            return self.similar_items(batch[0], self.hparams.k)
        users, seen = batch
        scores = self.score_all(users).masked_fill(seen, float("-inf"))  # never recommend a known item again
        top = scores.topk(min(self.hparams.k, scores.shape[1]), dim=1)
        return top.indices, top.values

    def write_predictions(self, predictions: list[Any], out_dir: Path, datamodule: Any) -> Path:
        """``recommendations.csv`` (user, rank, item, title, score) or ``similar_items.csv`` (query_item, rank,
        item, title, cosine similarity of the item embeddings)."""
        import csv

        items = torch.cat([p[0] for p in predictions]).tolist()
        scores = torch.cat([p[1] for p in predictions]).tolist()
        similar = datamodule.predict_kind == "similar"
        path = out_dir / ("similar_items.csv" if similar else "recommendations.csv")
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["query_item" if similar else "user", "rank", "item", "title",
                             "cosine" if similar else "score"])
            for name, row, vals in zip(datamodule.predict_names, items, scores):
                for rank, (item, score) in enumerate(zip(row, vals), 1):
                    writer.writerow([name, rank, *datamodule.item_label(item), f"{score:.4f}"])
        print(f"top-{self.hparams.k} {'similar' if similar else 'recommended'} items for {len(items)} inputs")
        return path

    @torch.no_grad()
    def similar_items(self, items: torch.Tensor, n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices, cosine similarities) [B, n] of the items whose embeddings are closest to each of ``items``."""
        emb = F.normalize(self.item_embeddings(), dim=1)
        sims = (emb[items] @ emb.T).scatter(1, items[:, None], float("-inf"))
        top = sims.topk(min(n, emb.shape[0] - 1), dim=1)
        return top.indices, top.values

    def log_item_map(self, n_labels: int = 12) -> None:
        """A 2-D PCA projection of the item embeddings; the most popular items are labelled with titles."""
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "item_popularity"):
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        emb = self.item_embeddings().detach().float().cpu()
        if emb.shape[1] < 2:
            return
        xy = (emb - emb.mean(0)) @ torch.pca_lowrank(emb, q=2, center=True)[2][:, :2]
        popularity = dm.item_popularity()
        fig, ax = plt.subplots(figsize=(8, 6.5), dpi=100)
        ax.scatter(xy[:, 0], xy[:, 1], s=4 + 40 * popularity / popularity.max(), alpha=0.4, c="tab:blue")
        for i in popularity.argsort(descending=True)[:n_labels].tolist():
            raw, title = dm.item_label(i)
            ax.annotate((title or raw)[:32], xy[i].tolist(), fontsize=7)
        ax.set(title="item embeddings (PCA); marker size: training interactions", xlabel="PC 1", ylabel="PC 2")
        fig.tight_layout()
        log_figure(self.trainer, "item_embeddings_pca", fig)


class ExplicitRatingsMixin(RecommenderMixin):
    """Fitting and scoring explicit ratings: a model calls ``init_ratings_state`` in ``__init__``, defines
    ``forward(users, items) -> ratings`` and ``loss(users, items, ratings)``, and may extend ``fit_from``."""

    monitor, monitor_mode = "val/rmse", "min"

    def init_ratings_state(self, num_users: int, num_items: int) -> None:
        """Buffers filled from the training rows at fit start and saved with the weights (global mean, rating
        range, ALS baseline), and the metrics of the model and of both baselines."""
        self.register_buffer("global_mean", torch.tensor(3.5))
        self.register_buffer("rating_range", torch.tensor([float("-inf"), float("inf")]))
        self.register_buffer("baseline_user", torch.zeros(num_users))
        self.register_buffer("baseline_item", torch.zeros(num_items))
        self.metrics = nn.ModuleDict({f"{stage}_{who}": _rating_metrics() for stage in ("val", "test")
                                      for who in ("model", "global_mean", "bias")})
        self.train_loss = torchmetrics.MeanMetric()
        self.unseen = nn.ModuleDict({name: torchmetrics.SumMetric() for name in ("unseen_users", "unseen_items")})
        self.test_errors: list[torch.Tensor] = []

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if stage != "fit" or dm is None or not hasattr(dm, "train_interactions"):
            return
        if getattr(dm, "implicit", False):
            raise ZooUserError(f"{type(self).__name__} fits explicit ratings; use --model neumf for implicit "
                               "feedback, or --data.implicit false")
        self.fit_from(*dm.train_interactions())

    def fit_from(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor) -> None:
        """Set the global mean, rating range and ALS bias baseline from the training rows."""
        bu, bi, mean = fit_biases(users, items, ratings, self.hparams.num_users, self.hparams.num_items)
        self.global_mean.fill_(mean)
        self.rating_range.copy_(torch.stack([ratings.min(), ratings.max()]))
        self.baseline_user.copy_(bu)
        self.baseline_item.copy_(bi)

    def baseline(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Global mean + ALS user and item biases; an index of -1 (unseen in training) adds no bias."""
        u, i = users.clamp(min=0), items.clamp(min=0)
        return self.global_mean + self.baseline_user[u] * (users >= 0) + self.baseline_item[i] * (items >= 0)

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
        self.metrics[f"{stage}_model"].update(pred, ratings)
        self.metrics[f"{stage}_global_mean"].update(self.global_mean.expand_as(ratings), ratings)
        self.metrics[f"{stage}_bias"].update(self.baseline(users, items).clamp(lo, hi), ratings)
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
