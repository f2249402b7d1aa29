"""2-D Gaussian-mixture toys for measuring GAN mode coverage: ``ring2d`` (8 modes on a circle of
radius 2, std 0.02, as in the Unrolled GAN / VEEGAN / PacGAN papers) and ``grid2d`` (a 5x5 grid).

Samples are generated from ``seed`` (no files); each batch is ``(points (B, 2), mode index (B,))``.
``centers`` and ``std`` tell the quality metrics where the modes are.

Example:
    >>> dm = Ring2DDataModule(num_train=1024)
    >>> dm.setup("fit")
    >>> x, mode = next(iter(dm.train_dataloader()))
    >>> tuple(x.shape), dm.centers.shape
    ((512, 2), torch.Size([8, 2]))
"""
from __future__ import annotations

import math
from typing import Literal

import torch

from zoo.datamodules.base import InMemoryDataModule
from zoo.errors import ZooUserError

__all__ = ["Ring2DDataModule", "Grid2DDataModule", "mixture_centers"]

Layout = Literal["ring", "grid"]


def mixture_centers(layout: Layout, num_modes: int, radius: float = 2.0, spacing: float = 2.0) -> torch.Tensor:
    """Mode centres: ``num_modes`` points on a circle, or a centred sqrt(num_modes)^2 grid."""
    if num_modes <= 0:
        raise ZooUserError(f"num_modes must be positive, got {num_modes}; e.g. --data.num_modes 8")
    if layout == "ring":
        angle = 2 * math.pi * torch.arange(num_modes, dtype=torch.float64) / num_modes
        return (radius * torch.stack([angle.cos(), angle.sin()], dim=1)).float()
    if layout == "grid":
        side = math.isqrt(num_modes)
        if side * side != num_modes:
            raise ZooUserError(f"a grid needs a square number of modes (e.g. 25), got {num_modes}")
        ticks = (torch.arange(side, dtype=torch.float32) - (side - 1) / 2) * spacing
        return torch.cartesian_prod(ticks, ticks)
    raise ZooUserError(f"unknown layout '{layout}'; choose ring or grid")


class Ring2DDataModule(InMemoryDataModule):
    """Mixture of equally weighted isotropic Gaussians in 2-D (ring by default), generated in memory.

    Args:
        layout: ``ring`` (modes on a circle) or ``grid``.
        radius: the ring's radius.
        spacing: distance between neighbouring grid modes.
        num_modes: number of mixture components (a square number for ``grid``).
        std: standard deviation of every component.
        num_train / num_val / num_test: samples per split (the test split is the reference set
            the GAN's samples are compared with; 2,500 as in VEEGAN).
    """

    def __init__(self, data_dir: str | None = None, batch_size: int = 512, layout: Layout = "ring",
                 num_modes: int = 8, radius: float = 2.0, spacing: float = 2.0, std: float = 0.02,
                 num_train: int = 65536, num_val: int = 2500, num_test: int = 2500, num_workers: int = 0,
                 seed: int = 42) -> None:
        super().__init__(data_dir, batch_size, num_workers, seed)
        if std <= 0:
            raise ZooUserError(f"std must be positive, got {std}")
        if min(num_train, num_val, num_test) <= 0:
            raise ZooUserError("num_train, num_val and num_test must be positive")
        self.layout, self.std = layout, std
        self.centers = mixture_centers(layout, num_modes, radius, spacing)
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def num_modes(self) -> int:
        return len(self.centers)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` points and their mode indices."""
        mode = torch.randint(self.num_modes, (n,), generator=generator)
        return self.centers[mode] + self.std * torch.randn(n, 2, generator=generator), mode

    def reference_points(self, stage: str) -> torch.Tensor:
        """Real points the generator's samples are scored beside: the test split at test, else validation."""
        self.setup()
        return self.splits["test" if stage == "test" else "val"][0]

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        gen = torch.Generator().manual_seed(self.seed)
        self.splits = {split: self.sample(n, gen) for split, n in self.sizes.items()}



class Grid2DDataModule(Ring2DDataModule):
    """The 5x5 grid variant: 25 Gaussians ``spacing`` = 2 apart (centred on 0), std 0.05."""

    def __init__(self, data_dir: str | None = None, batch_size: int = 512, layout: Layout = "grid",
                 num_modes: int = 25, radius: float = 2.0, spacing: float = 2.0, std: float = 0.05, **kwargs) -> None:
        super().__init__(data_dir, batch_size, layout, num_modes, radius, spacing, std, **kwargs)
