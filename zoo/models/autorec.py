"""I-AutoRec (Sedhain et al., 2015): an autoencoder over each item's vector of user ratings, for explicit ratings.

An item's input is its column of the training rating matrix (0 where a user has not rated it); a sigmoid hidden
layer reconstructs it and the reconstruction at user ``u`` is the predicted rating. The training matrix is a
buffer saved in the checkpoint: it is the model's input at prediction time. Evaluation against the baselines,
the error histogram, the top-k CSV, similar items (by hidden code) and the item map come from
``zoo.models.recommender``.

Example:
    >>> model = AutoRec(num_users=10, num_items=20, hidden=8)
    >>> model.fit_from(torch.tensor([0, 1, 2]), torch.tensor([4, 4, 7]), torch.tensor([5.0, 3.0, 4.0]))
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

__all__ = ["AutoRec"]


class AutoRec(ExplicitRatingsMixin, ZooModule):
    """Item-based AutoRec (I-AutoRec) for explicit ratings, an autoencoder over each item's user ratings.

    ``r_i -> W sigmoid(V r_i + mu) + b`` with the squared error on observed ratings only; pairs with a user or
    item unseen in training fall back to the ALS bias baseline.

    Every step encodes and decodes all items (two products the size of the rating matrix), so full or large
    batches suit it; ``recipes/autorec_ml100k.yaml`` trains on the whole fold in one batch per epoch, as the
    paper does.

    Args:
        num_users / num_items: filled in from the DataModule by the CLI.
        hidden: size of the hidden layer (the item codes; the paper's 500).
        l2: the paper's lambda: ``lambda / 2 * (|V|^2 + |W|^2)`` beside the sum of squared errors over the training
            ratings (applied per step scaled by 1 / training ratings, so its meaning does not depend on the batch).
        k: how many items ``train.py predict`` recommends per user.
        optimizer / lr / weight_decay / scheduler: the optimisation recipe.
    """

    default_patience = 20
    trainer_defaults = {"max_epochs": 1000}
    data_interface = InteractionData

    def __init__(self, num_users: int = 1, num_items: int = 1, hidden: int = 500, l2: float = 100.0, k: int = 10,
                 optimizer: OptimizerName = "adam", lr: float = 1e-3, weight_decay: float = 0.0,
                 scheduler: SchedulerName = "none") -> None:
        super().__init__()
        if min(num_users, num_items, hidden, k) < 1:
            raise ZooUserError(f"num_users, num_items, hidden and k must be >= 1, got {num_users}, {num_items}, "
                               f"{hidden}, {k}")
        if l2 < 0:
            raise ZooUserError(f"--model.l2 must be >= 0, got {l2}")
        self.save_hyperparameters()
        self.encoder, self.decoder = nn.Linear(num_users, hidden), nn.Linear(hidden, num_users)
        # The training ratings [num_items, num_users] (0 = not rated) and their count, filled at fit start.
        self.register_buffer("ratings_matrix", torch.zeros(num_items, num_users))
        self.register_buffer("num_ratings", torch.tensor(1.0))
        self.init_ratings_state(num_users, num_items)
        self.example_input_array = (torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long))

    def fit_from(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor) -> None:
        """The mean, range and ALS baseline, and the rating matrix the items are encoded from."""
        super().fit_from(users, items, ratings)
        self.ratings_matrix.zero_().index_put_((items, users), ratings.to(self.ratings_matrix.dtype))
        self.num_ratings.fill_(len(ratings))

    def item_embeddings(self) -> torch.Tensor:
        """The hidden code of every item [num_items, hidden] (similar items and the item map use it)."""
        return torch.sigmoid(self.encoder(self.ratings_matrix))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Predicted ratings (unclipped) for pairs of user and item indices (-1: unseen in training)."""
        reconstructed = self.decoder(self.item_embeddings())[items.clamp(min=0), users.clamp(min=0)]
        return torch.where((users >= 0) & (items >= 0), reconstructed, self.baseline(users, items))

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Predicted ratings of every item for each user [B, num_items] (an unknown user: the item baseline)."""
        reconstructed = self.decoder(self.item_embeddings())[:, users.clamp(min=0)].T
        fallback = self.global_mean + self.baseline_item[None]
        return torch.where((users >= 0)[:, None], reconstructed, fallback)

    def export_notes(self, out_dir: Path) -> str:
        return ("input0 / input1 = user / item indices (int64) in the order of the checkpoint's user_ids / "
                "item_ids, -1 for one unseen in training; output = predicted rating (clip it to the rating range); "
                "the training rating matrix is part of the exported graph")

    def loss(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor) -> torch.Tensor:
        """Mean squared error on the batch's ratings plus the weight penalty scaled to one training rating."""
        penalty = self.encoder.weight.pow(2).sum() + self.decoder.weight.pow(2).sum()
        return F.mse_loss(self(users, items), ratings) + self.hparams.l2 / 2 * penalty / self.num_ratings
