"""Biased matrix factorisation for explicit ratings; the evaluation against the baselines, the error histogram,
the top-k CSV, similar items and the item map come from ``zoo.models.recommender``.

Example:
    >>> model = MatrixFactorization(num_users=10, num_items=20, embedding_dim=8)
    >>> model(torch.tensor([0, 3]), torch.tensor([5, -1])).shape  # -1: an item unseen in training
    torch.Size([2])
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from zoo.datamodules.interfaces import InteractionData
from zoo.errors import ZooUserError
from zoo.models.base import OptimizerName, SchedulerName, ZooModule
from zoo.models.recommender import ExplicitRatingsMixin

__all__ = ["MatrixFactorization"]


class MatrixFactorization(ExplicitRatingsMixin, ZooModule):
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
        self.init_ratings_state(num_users, num_items)
        self.example_input_array = (torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long))

    def fit_from(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor) -> None:
        """The mean, range and ALS baseline from the training rows; the biases start there (``init_biases``)."""
        super().fit_from(users, items, ratings)
        if self.hparams.init_biases:
            with torch.no_grad():
                self.user_bias.weight[:, 0] = self.baseline_user
                self.item_bias.weight[:, 0] = self.baseline_item

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
