"""Neural collaborative filtering (He et al., 2017): GMF and MLP towers fused, for implicit feedback.

Trained on (user, positive, N sampled negatives) batches with BCE or BPR; evaluated per user with
torchmetrics' retrieval metrics: HitRate@k / NDCG@k ranking the held-out item among the sampled
negatives (the NCF protocol), and Precision@k / Recall@k / NDCG@k / HitRate@k over the full ranking with
the training items excluded, each beside the same metrics of a popularity ranking.

Example:
    >>> model = NeuMF(num_users=10, num_items=20)
    >>> model(torch.tensor([0, 1]), torch.tensor([3, 4])).shape
    torch.Size([2])
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn
from torchmetrics import retrieval

from zoo.datamodules.interfaces import InteractionData
from zoo.errors import ZooUserError
from zoo.models.base import OptimizerName, SchedulerName, ZooModule
from zoo.models.recommender import RecommenderMixin

__all__ = ["NeuMF", "ranking_metrics", "update_ranking"]


def ranking_metrics(k: int) -> nn.ModuleDict:
    """{"sampled": HitRate/NDCG@k, "full": Precision/Recall/NDCG/HitRate@k} as torchmetrics collections."""
    hit, ndcg = retrieval.RetrievalHitRate, retrieval.RetrievalNormalizedDCG
    sampled = {f"hit_rate@{k}": hit(top_k=k), f"ndcg@{k}": ndcg(top_k=k)}
    full = {f"precision@{k}": retrieval.RetrievalPrecision(top_k=k), f"recall@{k}": retrieval.RetrievalRecall(top_k=k),
            f"full_ndcg@{k}": ndcg(top_k=k), f"full_hit_rate@{k}": hit(top_k=k)}
    return nn.ModuleDict({name: torchmetrics.MetricCollection(group) for name, group in (("sampled", sampled),
                                                                                       ("full", full))})


def update_ranking(metrics: nn.ModuleDict, scores: torch.Tensor, users: torch.Tensor, candidates: torch.Tensor,
                   relevant: torch.Tensor, seen: torch.Tensor, k: int) -> None:
    """Update ``ranking_metrics`` from item scores [B, I] of a batch of users.

    Sampled: ``candidates[:, 0]`` (the held-out item) is the one relevant document among the candidates.
    Full: the top-k unseen items plus the relevant items outside them (ranked below), which gives exactly
    the full ranking's @k values without handing torchmetrics all B x I scores.
    """
    sampled = scores.gather(1, candidates)
    target = torch.zeros_like(sampled, dtype=torch.bool)
    target[:, 0] = True
    metrics["sampled"].update(sampled, target, indexes=users[:, None].expand_as(sampled))
    top = scores.masked_fill(seen, float("-inf")).topk(min(k, scores.shape[1]), dim=1)
    rest = relevant.scatter(1, top.indices, False)
    rows, _ = rest.nonzero(as_tuple=True)
    preds = torch.cat([top.values.flatten(), torch.full((len(rows),), -1e9, device=scores.device)])
    target = torch.cat([relevant.gather(1, top.indices).flatten(), torch.ones(len(rows), dtype=torch.bool,
                                                                               device=scores.device)])
    indexes = torch.cat([users[:, None].expand_as(top.indices).flatten(), users[rows]])
    metrics["full"].update(preds, target, indexes=indexes)


class NeuMF(RecommenderMixin, ZooModule):
    """Neural collaborative filtering (NeuMF: GMF + MLP towers) for implicit feedback with negative sampling.

    Args:
        num_users / num_items: filled in from the DataModule by the CLI.
        gmf_dim: embedding size of the GMF tower (element-wise product of user and item embeddings).
        mlp_layers: widths of the MLP tower; its input, the user and item embeddings concatenated, has the
            first width (each embedding half of it).
        dropout: dropout after each hidden MLP layer.
        loss: ``bce`` (positives vs sampled negatives, as the paper) or ``bpr`` (each positive above each
            negative).
        negatives: sampled negatives per positive in training (the CLI passes it to the DataModule, which
            draws them).
        k: cutoff of the ranking metrics (HitRate, NDCG, Precision, Recall @k) and of ``train.py predict``.
        optimizer / lr / weight_decay / scheduler: the optimisation recipe.
    """

    monitor_mode = "max"
    default_patience = 5
    trainer_defaults = {"max_epochs": 40}
    data_interface = InteractionData
    data_defaults = {"implicit": True, "split": "leave_last_out"}

    def __init__(self, num_users: int = 1, num_items: int = 1, gmf_dim: int = 16,
                 mlp_layers: tuple[int, ...] = (64, 32, 16), dropout: float = 0.0,
                 loss: Literal["bce", "bpr"] = "bce",
                 negatives: int = 4, k: int = 10, optimizer: OptimizerName = "adam", lr: float = 1e-3,
                 weight_decay: float = 0.0, scheduler: SchedulerName = "none") -> None:
        super().__init__()
        if loss not in ("bce", "bpr"):
            raise ZooUserError(f"loss must be bce or bpr, got '{loss}'")
        if min(num_users, num_items, gmf_dim, negatives, k) < 1 or not mlp_layers or mlp_layers[0] % 2:
            raise ZooUserError("num_users, num_items, gmf_dim, negatives and k must be >= 1 and mlp_layers[0] even, "
                               f"got {num_users}, {num_items}, {gmf_dim}, {negatives}, {k}, {list(mlp_layers)}")
        self.save_hyperparameters()
        self.monitor = f"val/ndcg@{k}"
        self.user_gmf, self.item_gmf = nn.Embedding(num_users, gmf_dim), nn.Embedding(num_items, gmf_dim)
        half = mlp_layers[0] // 2
        self.user_mlp, self.item_mlp = nn.Embedding(num_users, half), nn.Embedding(num_items, half)
        layers: list[nn.Module] = []
        for w_in, w_out in zip(mlp_layers[:-1], mlp_layers[1:]):
            layers += [nn.Linear(w_in, w_out), nn.ReLU(), nn.Dropout(dropout)]
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(gmf_dim + mlp_layers[-1], 1)
        for emb in (self.user_gmf, self.item_gmf, self.user_mlp, self.item_mlp):
            nn.init.normal_(emb.weight, std=0.01)
        # Training interactions per item (set at fit start): the popularity baseline and unknown users' scores.
        self.register_buffer("item_popularity", torch.zeros(num_items))
        self.metrics = nn.ModuleDict({f"{stage}_{who}": ranking_metrics(k) for stage in ("val", "test")
                                      for who in ("model", "pop")})
        self.train_loss = torchmetrics.MeanMetric()
        self.example_input_array = (torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long))

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if stage != "fit" or dm is None or not hasattr(dm, "item_popularity"):
            return
        if not getattr(dm, "implicit", False):
            raise ZooUserError("neumf learns from implicit feedback; pass --data.implicit true (or use --model mf)")
        self.item_popularity.copy_(dm.item_popularity())

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits for pairs of user and item indices; an unknown user (-1) gets log(1 + item popularity)."""
        u, i = users.clamp(min=0), items.clamp(min=0)
        gmf = self.user_gmf(u) * self.item_gmf(i)
        mlp = self.mlp(torch.cat([self.user_mlp(u), self.item_mlp(i)], -1))
        logits = self.head(torch.cat([gmf, mlp], -1)).squeeze(-1)
        return torch.where(users >= 0, logits, self.item_popularity[i].log1p())

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Logits of every item for each user [B, num_items], in chunks of about 2**17 pairs."""
        n = self.hparams.num_items
        items = torch.arange(n, device=users.device)
        step = max(1, 2 ** 17 // n)
        return torch.cat([self(chunk.repeat_interleave(n), items.repeat(len(chunk))).view(len(chunk), n)
                          for chunk in users.split(step)])

    def item_embeddings(self) -> torch.Tensor:
        return self.item_gmf.weight

    def export_notes(self, out_dir: Path) -> str:
        return ("input0 / input1 = user / item indices (int64) in the order of the checkpoint's user_ids / "
                "item_ids (user -1: unseen, scored by popularity); output = logit of an interaction (rank by it)")

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        users, positives, negatives = batch
        pos = self(users, positives)
        neg = self(users[:, None].expand_as(negatives).flatten(), negatives.flatten()).view_as(negatives)
        if self.hparams.loss == "bpr":
            loss = -F.logsigmoid(pos[:, None] - neg).mean()
        else:
            logits = torch.cat([pos, neg.flatten()])
            labels = torch.cat([torch.ones_like(pos), torch.zeros(neg.numel(), device=pos.device)])
            loss = F.binary_cross_entropy_with_logits(logits, labels)
        self.log_train_step("train/loss", loss, self.train_loss, len(users))
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/loss", self.train_loss, prog_bar=True)

    def _eval_step(self, batch: Any, stage: str) -> None:
        users, candidates, relevant, seen = batch
        k = self.hparams.k
        update_ranking(self.metrics[f"{stage}_model"], self.score_all(users), users, candidates, relevant, seen, k)
        popularity = self.item_popularity[None].expand(len(users), -1)
        update_ranking(self.metrics[f"{stage}_pop"], popularity, users, candidates, relevant, seen, k)

    def _log_eval(self, stage: str) -> None:
        for who in ("model", "pop"):
            prefix = f"{stage}/" if who == "model" else f"{stage}/pop_"
            for collection in self.metrics[f"{stage}_{who}"].values():
                self.log_dict({prefix + name: value for name, value in collection.compute().items()},
                              prog_bar=who == "model")
                collection.reset()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")
        unseen = getattr(self.trainer.datamodule, "unseen", {}).get("test", {})
        for name, count in unseen.items():  # held-out rows whose user / item never occurs in training
            self.log(f"test/unseen_{name}", float(count))
        self.log_item_map()
