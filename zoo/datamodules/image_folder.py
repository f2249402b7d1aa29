"""A user's own folder of images, and the offline default of the transfer models.

``image_folder`` reads ``root/<class>/*.jpg|png|...`` and makes a stratified, seeded
train/val/test split, or uses ``root/train/<class>`` and ``root/val/<class>`` (and
``root/test/<class>`` when present; otherwise the validation images are the test set).
With ``labels_file`` (a CSV of ``filename,labels`` with labels separated by ``;`` or spaces) the
task is multi-label and the split is seeded but not stratified. Two classes make a binary task.

Images that cannot be opened (corrupt, truncated headers, not an image) are found at setup and
skipped with a warning listing their paths (``on_corrupt="error"`` fails instead). Batches are
float RGB in [0, 1]; the model normalises with its backbone's statistics.

``digits_rgb`` is scikit-learn's bundled digits as 3-channel 16 px images in [0, 1] — real data
that needs no network, the default of ``resnet`` and ``densenet``.

Example:
    >>> dm = ImageFolderDataModule("photos/", image_size=224)  # doctest: +SKIP
    >>> dm.setup(); dm.num_classes, dm.task  # doctest: +SKIP
    (5, 'multiclass')
"""
from __future__ import annotations

import csv
import re
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch.utils.data import DataLoader, Dataset

from zoo.datamodules.base import SplitDataModule, stratified_split
from zoo.datamodules.images import Augment, DigitsDataModule
from zoo.errors import ZooUserError

__all__ = ["ImageFolderDataModule", "DigitsRGBDataModule", "image_transforms"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
AugmentPreset = Literal["strong", "light", "none"]


def image_transforms(image_size: int, train: bool, augment: AugmentPreset = "strong") -> Any:
    """Train: RandomResizedCrop + flip (+ TrivialAugmentWide for ``strong``); eval: resize + centre crop."""
    from torchvision.transforms import v2

    tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if train and augment != "none":
        ops = [v2.RandomResizedCrop(image_size, scale=(0.35, 1.0), antialias=True), v2.RandomHorizontalFlip()]
        if augment == "strong":
            ops.append(v2.TrivialAugmentWide())
        return v2.Compose(ops + tail)
    return v2.Compose([v2.Resize(round(image_size / 0.875), antialias=True), v2.CenterCrop(image_size), *tail])


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _unreadable(paths: list[Path]) -> list[tuple[Path, str]]:
    """Files PIL cannot open and verify, with the reason."""
    from PIL import Image

    bad = []
    for path in paths:
        try:
            with Image.open(path) as img:
                img.verify()
        except Exception as exc:  # PIL raises many types for broken files
            bad.append((path, str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__))
    return bad


class _ImageFiles(Dataset):
    def __init__(self, paths: list[Path], targets: torch.Tensor | list[str], transform: Any) -> None:
        self.paths, self.targets, self.transform = paths, targets, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        from PIL import Image

        try:
            with Image.open(self.paths[i]) as img:
                image = img.convert("RGB")
        except Exception as exc:
            raise ZooUserError(f"cannot decode image '{self.paths[i]}' ({exc}); delete or replace it") from exc
        return self.transform(image), self.targets[i]


class ImageFolderDataModule(SplitDataModule):
    """A folder of images, one sub-folder per class (or a multi-label CSV), split and augmented.

    Args:
        data_dir: the root folder (``--data-dir``).
        image_size: square crop size fed to the model (224 for ImageNet backbones).
        val_fraction / test_fraction: shares held out (stratified) when no train/ and val/ exist.
        augment: ``strong`` (RandomResizedCrop, flip, TrivialAugmentWide), ``light`` (no
            TrivialAugment) or ``none``; evaluation always uses resize + centre crop.
        labels_file: CSV (relative to ``data_dir`` or absolute) of ``filename,labels``: multi-label.
        on_corrupt: ``skip`` unreadable images with a warning naming them, or ``error``.
    """

    link_fields = ("num_classes", "in_channels", "image_size", "task")
    in_channels: ClassVar[int] = 3

    def __init__(self, data_dir: str | None = None, batch_size: int = 32, image_size: int = 224,
                 val_fraction: float = 0.1, test_fraction: float = 0.1, augment: AugmentPreset = "strong",
                 labels_file: str | None = None, on_corrupt: Literal["skip", "error"] = "skip",
                 num_workers: int = 0, seed: int = 42) -> None:
        super().__init__(data_dir, batch_size, num_workers, seed)
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ZooUserError(f"val_fraction and test_fraction must be in (0, 1) with a sum below 1, "
                               f"got {val_fraction} and {test_fraction}")
        if image_size <= 0:
            raise ZooUserError(f"image_size must be positive, got {image_size}")
        self.image_size, self.val_fraction, self.test_fraction = image_size, val_fraction, test_fraction
        self.augment, self.labels_file, self.on_corrupt = augment, labels_file, on_corrupt
        self.class_names: list[str] = []
        self.splits: dict[str, tuple[list[Path], Any]] = {}

    # ---- shapes linked into the model --------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        self.setup()
        return len(self.class_names)

    @property
    def task(self) -> str:
        return "multilabel" if self.labels_file else "binary" if self.num_classes == 2 else "multiclass"

    # ---- scanning ------------------------------------------------------------------------------
    def _root(self) -> Path:
        return self.require_data_dir("image_folder",
                                     "point --data-dir at a folder with one sub-folder of images per class")

    def _drop_unreadable(self, paths: list[Path]) -> set[Path]:
        bad = _unreadable(paths)
        if not bad:
            return set()
        listing = "; ".join(f"{p} ({why})" for p, why in bad[:10])
        listing += f"; ... {len(bad) - 10} more" if len(bad) > 10 else ""
        if self.on_corrupt == "error":
            raise ZooUserError(f"{len(bad)} unreadable image(s): {listing}; delete them or pass --data.on_corrupt skip")
        warnings.warn(f"skipping {len(bad)} unreadable image(s): {listing}", stacklevel=2)
        return {p for p, _ in bad}

    def _scan_classes(self, folder: Path) -> tuple[list[Path], list[int], list[str]]:
        class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not class_dirs:
            raise ZooUserError(f"no class folders under '{folder}'; expected {folder}/<class>/*.jpg (or .png)")
        if len(class_dirs) < 2:
            raise ZooUserError(f"'{folder}' has only one class folder ('{class_dirs[0].name}'); a classifier "
                               "needs at least 2 classes")
        files = {d.name: _list_images(d) for d in class_dirs}
        for name, found in files.items():
            if not found:
                raise ZooUserError(f"class folder '{folder / name}' has no images "
                                   f"({', '.join(IMAGE_EXTENSIONS[:3])}, ...); "
                                   "add images or remove the folder")
        bad = self._drop_unreadable([p for found in files.values() for p in found])
        paths, labels = [], []
        for k, (name, found) in enumerate(files.items()):
            kept = [p for p in found if p not in bad]
            if not kept:
                raise ZooUserError(f"class folder '{folder / name}' has no readable images; replace them")
            paths += kept
            labels += [k] * len(kept)
        return paths, labels, list(files)

    def _scan_multilabel(self, root: Path) -> tuple[list[Path], torch.Tensor, list[str]]:
        table = Path(self.labels_file).expanduser()
        table = table if table.is_absolute() else root / table
        if not table.is_file():
            raise ZooUserError(f"labels file '{table}' does not exist; pass --data.labels_file CSV (filename,labels)")
        with table.open(newline="") as fh:
            rows = [r for r in csv.reader(fh) if r and not r[0].startswith("#")]
        if rows and rows[0][0].strip().lower() in ("filename", "file", "path", "image"):
            rows = rows[1:]
        entries = [(root / r[0].strip(), [t for t in re.split(r"[;\s|]+", r[1] if len(r) > 1 else "") if t])
                   for r in rows]
        missing = [str(p) for p, _ in entries if not p.is_file()]
        if missing:
            raise ZooUserError(f"{len(missing)} file(s) in '{table}' do not exist, e.g. {missing[0]}; fix the CSV")
        bad = self._drop_unreadable([p for p, _ in entries])
        entries = [(p, tags) for p, tags in entries if p not in bad]
        names = sorted({t for _, tags in entries for t in tags})
        if len(names) < 2:
            raise ZooUserError(f"'{table}' names {len(names)} label(s); multi-label data needs at least 2")
        target = torch.zeros(len(entries), len(names))
        for i, (_, tags) in enumerate(entries):
            target[i, [names.index(t) for t in tags]] = 1.0
        return [p for p, _ in entries], target, names

    def _split(self, n: int, labels: list[int] | None) -> tuple[torch.Tensor, ...]:
        y = torch.tensor(labels) if labels is not None else torch.zeros(n, dtype=torch.long)
        try:
            rest, test = stratified_split(y, self.test_fraction, self.seed)
            train, val = stratified_split(y[rest], self.val_fraction / (1 - self.test_fraction), self.seed)
        except ValueError as exc:
            raise ZooUserError(f"too few images for a stratified {self.val_fraction:g}/{self.test_fraction:g} "
                               f"val/test split ({str(exc).splitlines()[0]}); add images per class") from exc
        return rest[train], rest[val], test

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        root = self._root()
        if self.labels_file:
            paths, target, self.class_names = self._scan_multilabel(root)
            parts = self._split(len(paths), None)
            self.splits = {s: ([paths[i] for i in idx], target[idx]) for s, idx in zip(("train", "val", "test"), parts)}
        elif (root / "train").is_dir() and (root / "val").is_dir():
            found = {s: self._scan_classes(root / s) for s in ("train", "val", "test") if (root / s).is_dir()}
            self.class_names = found["train"][2]
            for split, (_, _, names) in found.items():
                if names != self.class_names:
                    raise ZooUserError(f"class folders of '{root / split}' ({', '.join(names)}) differ from "
                                       f"'{root / 'train'}' ({', '.join(self.class_names)}); make them match")
            found.setdefault("test", found["val"])
            self.splits = {s: (p, torch.tensor(y)) for s, (p, y, _) in found.items()}
        else:
            paths, labels, self.class_names = self._scan_classes(root)
            y = torch.tensor(labels)
            parts = self._split(len(paths), labels)
            self.splits = {s: ([paths[i] for i in idx], y[idx]) for s, idx in zip(("train", "val", "test"), parts)}

    # ---- loaders -------------------------------------------------------------------------------
    def _loader(self, split: str, train: bool) -> DataLoader:
        self.setup()
        paths, target = self.splits[split]
        dataset = _ImageFiles(paths, target, image_transforms(self.image_size, train, self.augment))
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=train, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed) if train else None,
                          persistent_workers=self.num_workers > 0)

    def predict_input(self, path: str) -> DataLoader:
        """Batches of (images, file paths) for one image file or every image under a folder."""
        src = Path(path).expanduser()
        paths = [src] if src.is_file() else _list_images(src) if src.is_dir() else []
        if not paths:
            raise ZooUserError(f"no images at '{src}'; pass an image file or a folder of .jpg/.png files")
        dataset = _ImageFiles(paths, [str(p) for p in paths], image_transforms(self.image_size, False))
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers)


class DigitsRGBDataModule(DigitsDataModule):
    """scikit-learn digits as 3-channel 16 px images in [0, 1] (offline; transfer models' default)."""

    link_fields = ("num_classes", "in_channels", "image_size", "task")
    task: ClassVar[str] = "multiclass"

    def __init__(self, data_dir: str | None = None, batch_size: int = 64, image_size: int | None = 16,
                 channels: int | None = 3, normalize: bool = False, augment: Augment = "shift", **kwargs: Any) -> None:
        super().__init__(data_dir, batch_size, image_size=image_size, channels=channels, normalize=normalize,
                         augment=augment, **kwargs)
