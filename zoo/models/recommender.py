"""What every zoo recommender shares: top-k recommendations as ``predict``, similar items by embedding, and a
2-D map of the item embeddings (``mf`` and ``neumf`` mix it in).

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

from zoo.artifacts import log_figure

__all__ = ["RecommenderMixin"]


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
