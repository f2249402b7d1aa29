"""Shared DataModule pieces: an in-memory batch loader and the base class.

``TensorBatchLoader`` slices whole batches out of tensors held in memory (one indexing op per
batch instead of per-sample ``__getitem__`` + collate), shards itself per DDP rank and reshuffles
deterministically from ``seed + epoch`` so a resumed run sees the same order as an unbroken one.

Example:
    >>> import torch
    >>> loader = TensorBatchLoader((torch.randn(10, 3), torch.arange(10)), batch_size=4, shuffle=True)
    >>> [len(y) for _, y in loader]
    [4, 4, 2]
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Sequence

import lightning as L
import torch

from zoo.errors import ZooUserError

BatchTransform = Callable[[tuple[torch.Tensor, ...], torch.Generator], tuple[torch.Tensor, ...]]


class TensorBatchLoader:
    """Iterates over aligned tensors in batches; a DataLoader replacement for in-memory data.

    Under DDP each rank takes every ``world_size``-th sample: padded to equal shards when shuffling
    (training needs the same number of steps on every rank), unpadded for evaluation so that
    synced metrics count every sample exactly once.
    """

    def __init__(
        self,
        tensors: Sequence[torch.Tensor],
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        epoch_fn: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
        transform: BatchTransform | None = None,
    ) -> None:
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError("all tensors must have the same first dimension")
        if batch_size <= 0:
            raise ZooUserError(f"batch_size must be positive, got {batch_size}")
        self.tensors, self.batch_size, self.shuffle, self.drop_last = tuple(tensors), batch_size, shuffle, drop_last
        self.seed, self.epoch_fn, self.rank = seed, epoch_fn, rank
        self.world_size, self.transform = world_size, transform

    def _indices(self) -> torch.Tensor:
        n = len(self.tensors[0])
        gen = torch.Generator().manual_seed(self.seed + 1000003 * self.epoch_fn())
        idx = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        if self.world_size > 1:
            if self.shuffle:  # training: equal shards (padded by wrap-around like DistributedSampler)
                idx = torch.cat([idx, idx[: math.ceil(n / self.world_size) * self.world_size - n]])
            idx = idx[self.rank :: self.world_size]  # evaluation: every sample exactly once
        return idx

    def __len__(self) -> int:
        n = len(self.tensors[0])
        if self.world_size > 1:
            n = math.ceil(n / self.world_size) if self.shuffle else len(range(self.rank, n, self.world_size))
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        idx = self._indices()
        gen = torch.Generator().manual_seed(self.seed + 7919 * self.epoch_fn() + 1)
        for b in range(len(self)):
            sel = idx[b * self.batch_size : (b + 1) * self.batch_size]
            batch = tuple(t[sel] for t in self.tensors)
            yield self.transform(batch, gen) if self.transform else batch


class ZooDataModule(L.LightningDataModule):
    """Base DataModule: ``data_dir``, ``batch_size``, ``seed`` and the shapes it passes to the model.

    ``link_fields`` names the properties the CLI copies into model arguments of the same name
    (LightningCLI ``link_arguments`` on instantiation), e.g. ``num_classes`` or ``in_channels``.

    Args:
        data_dir: folder holding the data set's files (None: the offline default, bundled or generated).
        batch_size: samples per batch.
        num_workers: DataLoader worker processes (0: load in the training process).
        seed: seed of the splits, shuffling and augmentation (the same seed gives the same batches).
    """

    link_fields: ClassVar[tuple[str, ...]] = ()
    #: Arguments the CLI copies the other way, from ``--model.<name>`` into this DataModule at parse
    #: time (e.g. ``backbone``, whose tokenizer the data needs); they are not linked back.
    link_from_model: ClassVar[tuple[str, ...]] = ()

    def __init__(self, data_dir: str | None = None, batch_size: int = 64, num_workers: int = 0, seed: int = 42) -> None:
        super().__init__()
        self.save_hyperparameters()
        # Lightning would merge these into the model's hparams and fail on a shared name with another
        # value (``image_size`` of the data vs the model's); the CLI logs them under ``data/`` instead.
        self._log_hyperparams = False
        self.data_dir = Path(data_dir).expanduser() if data_dir else None
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed

    def require_data_dir(self, what: str, how: str) -> Path:
        """``data_dir`` as an existing folder, or a user error saying what is needed and how to get it."""
        if self.data_dir is None:
            raise ZooUserError(f"{what} needs --data-dir; {how}")
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise ZooUserError(f"data dir '{self.data_dir}' is a file, not a folder; {how}")
        if not self.data_dir.is_dir():
            raise ZooUserError(f"data dir '{self.data_dir}' does not exist; {how}")
        return self.data_dir

    def predict_input(self, path: str) -> Iterable[Any]:
        """Batches for ``train.py predict --input PATH`` (a user's file or folder, in this data's format)."""
        raise ZooUserError(f"{type(self).__name__} cannot read prediction input from '{path}'")

    def _epoch(self) -> int:
        trainer = getattr(self, "trainer", None)
        return trainer.current_epoch if trainer is not None else 0

    def rank_and_world(self) -> tuple[int, int]:
        """(global rank, world size) of the attached trainer; (0, 1) without one."""
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def make_loader(self, tensors: Sequence[torch.Tensor], train: bool, transform: BatchTransform | None = None,
                    batch_size: int | None = None) -> TensorBatchLoader:
        """A ``TensorBatchLoader`` sharded for the attached trainer's rank; shuffled only when ``train``.

        ``transform`` runs on every batch (pass a different one for training and evaluation).
        """
        rank, world = self.rank_and_world()
        return TensorBatchLoader(tensors, batch_size or self.batch_size, shuffle=train, seed=self.seed,
                                 epoch_fn=self._epoch, rank=rank, world_size=world, transform=transform)


class SplitDataModule(ZooDataModule):
    """A DataModule with train / val / test splits: the three loaders come from one ``_loader(split, train)``."""

    def _loader(self, split: str, train: bool) -> Any:
        raise NotImplementedError

    def train_dataloader(self) -> Any:
        return self._loader("train", True)

    def val_dataloader(self) -> Any:
        return self._loader("val", False)

    def test_dataloader(self) -> Any:
        return self._loader("test", False)


class InMemoryDataModule(SplitDataModule):
    """A DataModule whose ``setup`` fills ``self.splits`` ({"train"|"val"|"test": tensors}); loaders are
    ``TensorBatchLoader``s over them, with ``batch_transform(train)`` applied to every batch."""

    splits: dict[str, Sequence[torch.Tensor]]

    def batch_transform(self, train: bool) -> BatchTransform | None:
        return None

    def _loader(self, split: str, train: bool) -> TensorBatchLoader:
        self.setup()
        return self.make_loader(self.splits[split], train=train, transform=self.batch_transform(train))


def stratified_split(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded stratified split of indices into (1 - fraction, fraction) parts."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    a, b = train_test_split(idx, test_size=fraction, random_state=seed, stratify=y.numpy())
    return torch.from_numpy(np.sort(a)), torch.from_numpy(np.sort(b))
