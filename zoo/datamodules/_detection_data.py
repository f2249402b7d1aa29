"""Data pieces behind :mod:`zoo.datamodules.detection`: the detection dataset and list collation, box-aware
augmentation, image loading, seeded splits and the scene generator of the generated sets.

Example:
    >>> images, boxes, labels = paste_scenes(glyphs, glyph_labels, 4, 64, (1, 3), (2.0, 3.0), seed=0)  # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

Split = tuple[list[Any], list[torch.Tensor], list[torch.Tensor]]  # images (uint8 tensors or paths), boxes, labels


def collate_detection(batch: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> tuple[list, list]:
    """Detection lists, not stacked tensors: images differ in size and in their number of boxes."""
    return [b[0] for b in batch], [b[1] for b in batch]


def detection_transform(augment: str, hflip: bool) -> Any:
    """Box-aware training augmentation: ``light`` = horizontal flip (when ``hflip``) + photometric jitter;
    ``strong`` adds scale jitter and translation (RandomAffine); boxes leaving the image are clipped or dropped."""
    from torchvision.transforms import v2

    if augment == "none":
        return None
    ops: list[Any] = [v2.RandomHorizontalFlip()] if hflip else []
    ops.append(v2.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.2))
    if augment == "strong":
        ops += [v2.RandomAffine(degrees=0, translate=(0.1, 0.1), scale=(0.7, 1.3)), v2.ClampBoundingBoxes()]
    return v2.Compose([*ops, v2.SanitizeBoundingBoxes(min_size=2)])


def load_image(path: Path, max_side: int) -> tuple[torch.Tensor, float]:
    """uint8 (3, H, W) RGB with the longer side capped at ``max_side``, and the scale applied."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        scale = min(1.0, max_side / max(img.size))
        if scale < 1.0:
            img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous(), scale


def _collate_named(batch: list[tuple[torch.Tensor, str]]) -> tuple[list[torch.Tensor], list[str]]:
    return [x for x, _ in batch], [n for _, n in batch]


class _DetectionSet(Dataset):
    def __init__(self, split: Split, transform: Any, max_side: int) -> None:
        self.images, self.boxes, self.labels = split
        self.transform, self.max_side = transform, max_side

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from torchvision import tv_tensors

        image = self.images[i]
        if isinstance(image, Path):  # decoded once, cached (capped at max_side)
            image, scale = load_image(image, self.max_side)
            self.images[i], self.boxes[i] = image, self.boxes[i] * scale
        image = image.expand(3, -1, -1) if image.shape[0] == 1 else image
        target = {"boxes": tv_tensors.BoundingBoxes(self.boxes[i], format="XYXY", canvas_size=image.shape[-2:]),
                  "labels": self.labels[i]}
        image = tv_tensors.Image(image)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image.as_subclass(torch.Tensor).float().div_(255.0), {
            "boxes": target["boxes"].as_subclass(torch.Tensor).float(), "labels": target["labels"]}


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    return {"test": np.sort(perm[:n_test]), "val": np.sort(perm[n_test:n_test + n_val]),
            "train": np.sort(perm[n_test + n_val:])}


def paste_scenes(glyphs: np.ndarray, glyph_labels: np.ndarray, n: int, canvas: int, per_image: tuple[int, int],
                 scale: tuple[float, float], seed: int, noise: float = 25.0
                 ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """``n`` grey ``canvas`` x ``canvas`` uint8 scenes: ``per_image`` (min, max) glyphs (uint8 (G, h, w), bright on
    dark) resized by a factor in ``scale``, pasted without overlapping at random places (maximum blend) on
    Gaussian noise of std ``noise`` around a random grey level. Boxes are the tight pixel extent of each pasted
    glyph (pixels >= 64), as (K, 4) float32 corners; labels are ``glyph_labels`` of the glyphs. Seeded."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    images = np.empty((n, canvas, canvas), np.uint8)
    all_boxes, all_labels = [], []
    for i in range(n):
        level = rng.uniform(0, 60)
        img = np.clip(rng.normal(level, noise, (canvas, canvas)), 0, 255)
        boxes, labels, cells = [], [], []
        for _ in range(int(rng.integers(per_image[0], per_image[1] + 1))):
            g = int(rng.integers(len(glyphs)))
            factor = rng.uniform(*scale)
            h, w = (max(2, round(s * factor)) for s in glyphs[g].shape)
            if h > canvas or w > canvas:
                continue
            patch = F.interpolate(torch.from_numpy(glyphs[g]).float()[None, None], size=(h, w), mode="bilinear",
                                  align_corners=False)[0, 0].numpy()
            for _try in range(30):
                y, x = int(rng.integers(0, canvas - h + 1)), int(rng.integers(0, canvas - w + 1))
                if all(x >= c[2] or x + w <= c[0] or y >= c[3] or y + h <= c[1] for c in cells):
                    break
            else:
                continue
            ys, xs = np.nonzero(patch >= 64)
            if len(ys) == 0:
                continue
            cells.append((x, y, x + w, y + h))
            img[y:y + h, x:x + w] = np.maximum(img[y:y + h, x:x + w], patch)
            boxes.append([x + xs.min(), y + ys.min(), x + xs.max() + 1, y + ys.max() + 1])
            labels.append(int(glyph_labels[g]))
        images[i] = img.round().astype(np.uint8)
        all_boxes.append(np.asarray(boxes, np.float32).reshape(-1, 4))
        all_labels.append(np.asarray(labels, np.int64))
    return images, all_boxes, all_labels
