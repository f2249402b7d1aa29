"""Semi-supervised serving for the in-memory image DataModules (``images.py``): a balanced, seeded labelled
subset of the training split, the rest of it as unlabelled images, both served together through Lightning's
``CombinedLoader``, and the strong (RandAugment-like) augmentation for small grey or colour images.

``--data.labelled_per_class N`` keeps N labelled images per class (``labelled_split``); a model that wants
unlabelled batches says so with ``unlabelled_views`` (e.g. ``("weak", "strong")`` for FixMatch) and
``unlabelled_ratio`` (mu: unlabelled images per labelled one); any other model trains on the labelled
subset alone. Unlabelled batches are ``(view_1, ..., view_k, hidden_labels)``: the hidden labels are
there for monitoring (pseudo-label accuracy) only and must never reach a loss.

Example:
    >>> from zoo.datamodules.images import DigitsDataModule
    >>> dm = DigitsDataModule(labelled_per_class=5)
    >>> dm.setup("fit")
    >>> loader = combined_train_loader(dm, views=("weak", "strong"), ratio=3)
    >>> batch, _, _ = next(iter(loader))
    >>> sorted(batch), len(batch["unlabelled"]), tuple(batch["unlabelled"][1].shape)
    (['labelled', 'unlabelled'], 3, (192, 1, 8, 8))
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from zoo.datamodules.base import TensorBatchLoader
from zoo.errors import ZooUserError

__all__ = ["labelled_split", "strong_augment", "combined_train_loader", "UNLABELLED_VIEWS"]

UNLABELLED_VIEWS = ("weak", "strong")
_GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
_COLOUR = ("identity", "contrast", "brightness", "sharpness", "solarize", "posterize", "autocontrast")
OPS = _GEOMETRIC + _COLOUR


def labelled_split(y: torch.Tensor, per_class: int, seed: int,
                   class_names: Sequence[str] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """(labelled, unlabelled) sorted indices into ``y``: ``per_class`` seeded picks of every class, and the rest.

    Raises a :class:`ZooUserError` for ``per_class`` < 1 or larger than the smallest class.
    """
    if per_class < 1:
        raise ZooUserError(f"labelled_per_class must be >= 1, got {per_class}; e.g. --data.labelled_per_class 10")
    classes, counts = torch.unique(y, return_counts=True)
    smallest = int(counts.min())
    if per_class > smallest:
        c = int(classes[counts.argmin()])
        name = class_names[c] if c < len(class_names) else str(c)
        raise ZooUserError(f"labelled_per_class {per_class} is larger than the smallest class ('{name}' has {smallest} "
                           f"training images); choose at most {smallest}")
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for c in classes.tolist():
        members = torch.nonzero(y == c).flatten()
        picks.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    labelled = torch.cat(picks).sort().values
    mask = torch.ones(len(y), dtype=torch.bool)
    mask[labelled] = False
    unlabelled = torch.nonzero(mask).flatten()
    if len(unlabelled) == 0:
        raise ZooUserError(f"labelled_per_class {per_class} labels every training image, leaving none unlabelled; "
                           f"choose fewer than {smallest}")
    return labelled, unlabelled


def _affine(n: int, op: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """(n, 2, 3) affine matrices: each image's chosen geometric ops (rotation <= 30 deg, shear <= 0.3,
    translation <= 0.3 of the size) composed; the identity where an op is not chosen."""
    theta = torch.eye(3).repeat(n, 1, 1)
    for k in range(op.shape[1]):
        m, o = mag[:, k] * 2 - 1, op[:, k]  # signed magnitude in [-1, 1]
        step = torch.eye(3).repeat(n, 1, 1)
        angle = m * math.radians(30) * (o == 0)
        step[:, 0, 0], step[:, 0, 1] = angle.cos(), -angle.sin()
        step[:, 1, 0], step[:, 1, 1] = angle.sin(), angle.cos()
        step[:, 0, 1] += 0.3 * m * (o == 1)
        step[:, 1, 0] += 0.3 * m * (o == 2)
        step[:, 0, 2] = 0.6 * m * (o == 3)  # grid coordinates span 2: 0.6 = 30 % of the size
        step[:, 1, 2] = 0.6 * m * (o == 4)
        theta = theta @ step
    return theta[:, :2]


def strong_augment(x: torch.Tensor, gen: torch.Generator, num_ops: int = 2, cutout: float = 0.5) -> torch.Tensor:
    """RandAugment as FixMatch uses it, vectorised over a batch of images in [0, 1] (N, C, H, W): each image
    gets ``num_ops`` ops drawn from rotate, shear x/y, translate x/y, identity, contrast, brightness, sharpness,
    solarize, posterize and autocontrast, each at a random magnitude, then a grey Cutout square of up to
    ``cutout`` of the side. Geometric ops are composed into one ``grid_sample`` (zero = black padding)."""
    n, _, h, w = x.shape
    op = torch.randint(len(OPS), (n, num_ops), generator=gen)
    mag = torch.rand(n, num_ops, generator=gen)
    if bool((op < len(_GEOMETRIC)).any()):
        grid = F.affine_grid(_affine(n, op, mag).to(x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    view = (n, 1, 1, 1)
    for k in range(num_ops):
        o, m = op[:, k] - len(_GEOMETRIC), mag[:, k].view(view)
        factor = (0.1 + 1.8 * m).to(x.dtype)  # enhance factor in [0.1, 1.9]; 1 leaves the image as it is

        def pick(name: str) -> torch.Tensor:
            return (o == _COLOUR.index(name)).view(view)

        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        bits = (4 + (m * 4.999).floor()).to(x.dtype)  # posterize: keep 4..8 bits
        levels = 2.0 ** bits - 1
        lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
        x = torch.where(pick("contrast"), mean + (x - mean) * factor, x)
        x = torch.where(pick("brightness"), x * factor, x)
        x = torch.where(pick("sharpness"), blur + (x - blur) * factor, x)
        x = torch.where(pick("solarize") & (x >= m.to(x.dtype)), 1 - x, x)
        x = torch.where(pick("posterize"), (x * levels).floor() / levels, x)
        x = torch.where(pick("autocontrast"), (x - lo) / (hi - lo).clamp_min(1e-3), x)
        x = x.clamp(0, 1)
    if cutout > 0:
        side = torch.rand(n, 1, 1, generator=gen) * cutout * max(h, w)
        cy, cx = torch.rand(n, 1, 1, generator=gen) * h, torch.rand(n, 1, 1, generator=gen) * w
        ys, xs = torch.arange(h).view(1, h, 1) + 0.5, torch.arange(w).view(1, 1, w) + 0.5
        box = ((ys - cy).abs() < side / 2) & ((xs - cx).abs() < side / 2)
        x = torch.where(box.unsqueeze(1), torch.full_like(x, 0.5), x)
    return x


def strong_view(dm: Any, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A uint8 batch of ``dm`` through the strong augmentation, then resized / normalised like its other batches."""
    x = x.float().div_(255.0)
    if dm.image_size != x.shape[-1]:
        x = F.interpolate(x, size=(dm.image_size, dm.image_size), mode="bilinear", align_corners=False)
    x = strong_augment(x, gen)
    if dm.normalize:
        x = (x - torch.tensor(dm.mean).view(1, -1, 1, 1)) / torch.tensor(dm.std).view(1, -1, 1, 1)
    if dm.in_channels != x.shape[1]:
        x = x.expand(-1, dm.in_channels, -1, -1)
    return x.contiguous()


def combined_train_loader(dm: Any, views: Sequence[str], ratio: int) -> Any:
    """Lightning ``CombinedLoader`` of ``{"labelled": (x, y), "unlabelled": (*views, hidden_y)}`` batches for an
    image DataModule set up with ``labelled_per_class``. One epoch is one pass over the unlabelled images in
    batches of ``ratio * batch_size``; the labelled subset is repeated (reshuffled) to fill every step."""
    from lightning.pytorch.utilities import CombinedLoader

    unknown = [v for v in views if v not in UNLABELLED_VIEWS]
    if unknown or not views:
        raise ZooUserError(f"unlabelled views must be among {', '.join(UNLABELLED_VIEWS)}, got {list(views)}")
    if ratio < 1:
        raise ZooUserError(f"the unlabelled:labelled batch ratio (mu) must be >= 1, got {ratio}")
    dm.setup("fit")
    if getattr(dm, "unlabelled", None) is None:
        raise ZooUserError(f"{type(dm).__name__} has no unlabelled images; pass --data.labelled_per_class N")
    weak = dm.batch_transform(train=True)

    def unlabelled_transform(batch: tuple[torch.Tensor, ...], gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        x, hidden = batch
        out = [weak((x, hidden), gen)[0] if v == "weak" else strong_view(dm, x, gen) for v in views]
        return (*out, hidden)

    rank, world = dm.rank_and_world()
    u_batch = ratio * dm.batch_size
    unlabelled = TensorBatchLoader(dm.unlabelled, u_batch, shuffle=True, seed=dm.seed + 1, epoch_fn=dm._epoch,
                                   rank=rank, world_size=world, transform=unlabelled_transform)
    x_l, y_l = dm.splits["train"]
    steps = len(unlabelled)
    repeat = max(1, math.ceil(steps * dm.batch_size * world / len(y_l)))
    labelled = dm.make_loader((x_l.repeat(repeat, 1, 1, 1), y_l.repeat(repeat)), train=True,
                              transform=weak)
    return CombinedLoader({"labelled": labelled, "unlabelled": unlabelled}, mode="min_size")
