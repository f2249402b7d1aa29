"""Object-detection data: a folder in PASCAL VOC, COCO or YOLO format, the raccoon photos, and two generated
sets (scikit-learn digits scenes, the offline default; multi-digit MNIST canvases).

Batches are ``(images, targets)``: a list of float ``(3, H, W)`` images in [0, 1] (sizes may differ) and a list
of ``{"boxes": (N, 4) x0, y0, x1, y1 pixels, "labels": (N,) 1..K}`` (0 is the background), as torchvision's
detectors take them. Training batches are augmented box-aware with ``torchvision.transforms.v2``. Bad
annotations (box outside the image, xmax <= xmin, unknown class, missing or unreadable image) drop their image
with one warning listing every file (``on_invalid="skip"``) or stop the run (``"error"``); see
:mod:`zoo.datamodules._detection_formats` for the box conventions of each format.

Example:
    >>> dm = DetectionScenesDataModule(num_images=20, batch_size=4)
    >>> dm.setup()
    >>> images, targets = next(iter(dm.train_dataloader()))
    >>> len(images), tuple(images[0].shape), sorted(targets[0])
    (4, (3, 64, 64), ['boxes', 'labels'])
"""
from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from zoo.datamodules._detection_data import (Split, _collate_named, _DetectionSet, collate_detection,
                                             detection_transform, load_image, paste_scenes, split_indices)
from zoo.datamodules._detection_formats import IMAGE_EXTENSIONS, Record, read_annotations, validate
from zoo.datamodules.base import SplitDataModule
from zoo.errors import ZooUserError

__all__ = ["DetectionDataModule", "RaccoonDataModule", "DetectionScenesDataModule", "MNISTDetectionDataModule",
           "collate_detection"]

DetAugment = Literal["none", "light", "strong"]


class _DetectionBase(SplitDataModule):
    """Shared loaders: ``self.splits`` maps train/val/test to (images, boxes, labels); subclasses fill it.

    Args:
        data_dir: the data folder (see each DataModule).
        batch_size: images per batch (a list: sizes may differ).
        augment: training augmentation, ``none``, ``light`` (flip + photometric) or ``strong`` (+ scale jitter).
        hflip: whether horizontal flips are label-preserving here (not for digits or text).
        num_workers: DataLoader worker processes.
        seed: seed of the splits and of generated scenes.
    """

    link_fields = ("num_classes", "class_names", "image_size")
    max_side: int = 100000

    def __init__(self, data_dir: str | None = None, batch_size: int = 8, augment: DetAugment = "strong",
                 hflip: bool = True, num_workers: int = 0, seed: int = 42) -> None:
        super().__init__(data_dir, batch_size, num_workers, seed)
        if augment not in ("none", "light", "strong"):
            raise ZooUserError(f"augment must be none, light or strong, got '{augment}'")
        self.augment, self.hflip = augment, hflip
        self.splits: dict[str, Split] = {}
        self._classes: list[str] = []

    @property
    def class_names(self) -> tuple[str, ...]:
        if not self._classes:
            self.prepare_classes()
        return tuple(self._classes)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prepare_classes(self) -> None:
        self.setup()

    def _loader(self, split: str, train: bool) -> DataLoader:
        self.setup()
        data = _DetectionSet(self.splits[split], detection_transform(self.augment, self.hflip) if train else None,
                             self.max_side)
        return DataLoader(data, batch_size=self.batch_size, shuffle=train, collate_fn=collate_detection,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def predict_input(self, path: str) -> DataLoader:
        """Batches ``(images, names)`` from an image file or a folder of images (RGB, native size)."""
        src = Path(path)
        files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS) if src.is_dir() else [src]
        if not files:
            raise ZooUserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in '{src}'")
        images = []
        for f in files:
            try:
                images.append(load_image(f, 100000)[0].float().div_(255.0))
            except Exception as exc:  # PIL raises many types for broken files
                raise ZooUserError(f"'{f}' is not a readable image ({str(exc).splitlines()[0][:100]})") from exc
        self.predict_names = [f.name for f in files]
        pairs = list(zip(images, self.predict_names))
        return DataLoader(pairs, batch_size=self.batch_size, collate_fn=_collate_named)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", False)


class DetectionDataModule(_DetectionBase):
    """Your own detection set: a folder of images with PASCAL VOC XML, a COCO JSON or YOLO txt labels.

    Args:
        data_dir: the data set folder (with ``train/``, ``val/`` and ``test/`` sub-folders, each in the format, to
            use its own split; otherwise a seeded split of everything).
        format: ``auto`` (detected from the files), ``voc``, ``coco`` or ``yolo``.
        classes: the class names in order (default: the file's categories / classes.txt, or the sorted VOC names);
            a box with another name is invalid.
        on_invalid: ``skip`` images with a bad annotation (one warning lists every file) or ``error``.
        val_fraction / test_fraction: seeded shares held out when the folder has no split of its own.
        image_size: the shorter side the model resizes to (linked into the model's ``image_size``).
        max_side: images are decoded once, cached with their longer side capped at this (boxes scaled with them).
    """

    def __init__(self, data_dir: str | None = None, format: Literal["auto", "voc", "coco", "yolo"] = "auto",
                 classes: list[str] | None = None, on_invalid: Literal["skip", "error"] = "skip",
                 val_fraction: float = 0.1, test_fraction: float = 0.2, image_size: int = 416, max_side: int = 1024,
                 **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
        if on_invalid not in ("skip", "error"):
            raise ZooUserError(f"on_invalid must be skip or error, got '{on_invalid}'")
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ZooUserError(f"val_fraction and test_fraction must be in [0, 1) with a sum below 1, got "
                               f"{val_fraction} and {test_fraction}")
        self.format, self.classes, self.on_invalid = format, list(classes) if classes else None, on_invalid
        self.val_fraction, self.test_fraction, self._image_size, self.max_side = val_fraction, test_fraction, \
            image_size, max_side

    @property
    def image_size(self) -> int:
        return self._image_size

    def dataset_root(self) -> Path:
        return self.require_data_dir("the detection data", "pass --data-dir DIR with images and VOC / COCO / YOLO "
                                     "labels")

    def read_split(self, root: Path) -> tuple[list[Record], list[str]]:
        records, classes, fmt = read_annotations(root, self.format)
        if not fmt:
            raise ZooUserError(f"no VOC XML, COCO JSON or YOLO txt labels found in '{root}'; see the detection "
                               "DataModule's docstring for the layouts, or pass --data.format")
        return records, classes

    def split_records(self) -> tuple[dict[str, list[Record]], list[str]]:
        """{split: records} and the class names found (subclasses use their own split files)."""
        root = self.dataset_root()
        if all((root / s).is_dir() for s in ("train", "val")):
            parts = {s: self.read_split(root / s) for s in ("train", "val", "test") if (root / s).is_dir()}
            classes = next(iter(parts.values()))[1]
            out = {s: recs for s, (recs, _) in parts.items()}
            return {**out, "test": out.get("test", out["val"])}, classes
        records, classes = self.read_split(root)
        idx = split_indices(len(records), self.val_fraction, self.test_fraction, self.seed)
        return {s: [records[i] for i in ix] for s, ix in idx.items()}, classes

    def prepare_classes(self) -> None:
        self.setup()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        parts, found = self.split_records()
        classes = self.classes or found
        if not classes:
            raise ZooUserError(f"no class names in '{self.data_dir}': the labels hold no boxes; pass --data.classes")
        bad = [(rec, p) for recs in parts.values() for rec in validate(recs, classes) for p in rec.problems]
        if bad:
            files = sorted({rec.source or str(rec.file) for rec, _ in bad})
            listing = "; ".join(f"{Path(rec.source or rec.file).name}: {p}" for rec, p in bad)
            if self.on_invalid == "error":
                raise ZooUserError(f"{len(files)} file(s) with invalid annotations ({listing[:600]}); fix them or pass "
                                   "--data.on_invalid skip")
            warnings.warn(f"skipping {len(files)} image(s) with invalid annotations: {listing}", stacklevel=2)
        self._classes = list(classes)
        index = {n: k + 1 for k, n in enumerate(classes)}
        for split, recs in parts.items():
            good = [r for r in recs if not r.problems]
            if not good and (split == "train" or recs):
                raise ZooUserError(f"the {split} split of '{self.data_dir}' has no valid annotated image "
                                   f"({len(recs)} found, {len(recs) - len(good)} invalid)")
            self.splits[split] = ([r.file for r in good], [torch.from_numpy(r.boxes) for r in good],
                                  [torch.tensor([index[n] for n in r.names], dtype=torch.int64) for r in good])


class RaccoonDataModule(DetectionDataModule):
    """The raccoon photos (200 images, 217 VOC boxes, one class) with the author's 160 / 40 train / test split
    (``train_labels.csv`` / ``test_labels.csv``); validation is a seeded ``val_fraction`` of the training photos.
    ``data_dir`` is ``../shared/data`` (or the raccoon folder itself); nothing is written there."""

    def __init__(self, data_dir: str | None = None, val_fraction: float = 0.1, image_size: int = 320,
                 **kwargs: Any) -> None:
        if kwargs.pop("format", "voc") not in ("auto", "voc"):
            raise ZooUserError("the raccoon labels are PASCAL VOC; leave --data.format out")
        super().__init__(data_dir, val_fraction=val_fraction, image_size=image_size, **kwargs)
        self.format = "voc"

    def dataset_root(self) -> Path:
        root = self.require_data_dir("raccoon", "pass --data-dir ../shared/data (it holds detection/raccoon)")
        return root / "detection" / "raccoon" if (root / "detection" / "raccoon").is_dir() else root

    def split_records(self) -> tuple[dict[str, list[Record]], list[str]]:
        root = self.dataset_root()
        records, classes = self.read_split(root)
        by_name = {r.file.name: r for r in records}
        names = {}
        for split in ("train", "test"):
            path = root / f"{split}_labels.csv"
            if not path.is_file():
                raise ZooUserError(f"no {path.name} in '{root}'; the raccoon split files are part of the data set")
            with path.open() as fh:
                names[split] = sorted({row["filename"] for row in csv.DictReader(fh)})
        missing = [n for s in names.values() for n in s if n not in by_name]
        if missing:
            raise ZooUserError(f"{len(missing)} photo(s) of the split files have no annotation: "
                               f"{', '.join(missing[:5])}")
        train = [by_name[n] for n in names["train"]]
        val_idx = set(split_indices(len(train), self.val_fraction, 0.0, self.seed)["val"].tolist())
        return {"train": [r for i, r in enumerate(train) if i not in val_idx],
                "val": [r for i, r in enumerate(train) if i in val_idx],
                "test": [by_name[n] for n in names["test"]]}, classes


class _GeneratedScenes(_DetectionBase):
    """Digit glyphs pasted on noisy canvases (see :func:`paste_scenes`); splits use disjoint glyphs."""

    digits_classes: ClassVar[tuple[str, ...]] = tuple(str(i) for i in range(10))
    canvas: int

    def glyphs(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        raise NotImplementedError

    def counts(self) -> dict[str, int]:
        raise NotImplementedError

    @property
    def image_size(self) -> int:
        return self.canvas

    def prepare_classes(self) -> None:
        self._classes = list(self.digits_classes)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.prepare_classes()
        glyphs = self.glyphs()
        for k, (split, n) in enumerate(self.counts().items()):
            images, boxes, labels = paste_scenes(*glyphs[split], n, self.canvas, self.per_image, self.scale,
                                                 self.seed * 1000 + k, self.noise)
            self.splits[split] = (list(torch.from_numpy(images).unsqueeze(1)), [torch.from_numpy(b) for b in boxes],
                                  [torch.from_numpy(y) + 1 for y in labels])


class DetectionScenesDataModule(_GeneratedScenes):
    """Offline default: scikit-learn's 8x8 digits (upscaled) pasted without overlap onto noisy grey canvases, with
    exact tight boxes and the digit as class. Train / val / test use disjoint digit images (60 / 20 / 20 %).

    Args:
        num_images: scenes in total, split 70 / 15 / 15 % into train / val / test.
        canvas: side of the square canvases in pixels.
        per_image: (min, max) digits per scene.
        scale: (min, max) upscaling of the 8 px digits.
        noise: standard deviation of the Gaussian background noise (0-255 scale).
        data_dir: not used (the digits come with scikit-learn).
        batch_size / augment / hflip / num_workers / seed: as for ``detection`` (no flips: digits are not symmetric).
    """

    def __init__(self, num_images: int = 200, canvas: int = 64, per_image: tuple[int, int] = (1, 3),
                 scale: tuple[float, float] = (2.0, 3.5), noise: float = 20.0, hflip: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(hflip=hflip, **kwargs)
        if num_images < 7 or canvas < 16 or not 1 <= per_image[0] <= per_image[1] or not 0 < scale[0] <= scale[1]:
            raise ZooUserError(f"need num_images >= 7, canvas >= 16, 1 <= per_image min <= max and 0 < scale min <= "
                               f"max; got {num_images}, {canvas}, {per_image}, {scale}")
        self.num_images, self.canvas, self.per_image, self.scale, self.noise = num_images, canvas, tuple(per_image), \
            tuple(scale), noise

    def counts(self) -> dict[str, int]:
        n_val = n_test = max(1, round(0.15 * self.num_images))
        return {"train": self.num_images - n_val - n_test, "val": n_val, "test": n_test}

    def glyphs(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x, y = (digits.images * (255.0 / 16.0)).round().astype(np.uint8), digits.target
        idx = split_indices(len(y), 0.2, 0.2, self.seed)
        return {s: (x[i], y[i]) for s, i in idx.items()}


class MNISTDetectionDataModule(_GeneratedScenes):
    """Multi-digit detection canvases made from the real MNIST IDX files (``<data_dir>/MNIST/raw``): training and
    validation scenes use disjoint MNIST training digits, test scenes the MNIST test digits. Seeded.

    Args:
        data_dir: folder holding ``MNIST/raw/*-idx?-ubyte.gz`` (e.g. ``../shared/data``); read only.
        num_train / num_val / num_test: scenes per split.
        canvas: side of the square canvases in pixels.
        per_image: (min, max) digits per scene.
        scale: (min, max) resizing of the 28 px MNIST digits.
        noise: standard deviation of the Gaussian background noise (0-255 scale).
        batch_size / augment / hflip / num_workers / seed: as for ``detection``.
    """

    def __init__(self, data_dir: str | None = None, num_train: int = 3000, num_val: int = 300, num_test: int = 500,
                 canvas: int = 128, per_image: tuple[int, int] = (1, 5), scale: tuple[float, float] = (0.75, 1.5),
                 noise: float = 20.0, hflip: bool = False, **kwargs: Any) -> None:
        super().__init__(data_dir, hflip=hflip, **kwargs)
        if min(num_train, num_val, num_test) < 1 or canvas < 32 or not 1 <= per_image[0] <= per_image[1]:
            raise ZooUserError(f"need num_train/num_val/num_test >= 1, canvas >= 32, 1 <= per_image min <= max; got "
                               f"{num_train}/{num_val}/{num_test}, {canvas}, {per_image}")
        self.n = {"train": num_train, "val": num_val, "test": num_test}
        self.canvas, self.per_image, self.scale, self.noise = canvas, tuple(per_image), tuple(scale), noise

    def counts(self) -> dict[str, int]:
        return dict(self.n)

    def glyphs(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        from zoo.datamodules.images import read_idx

        how = "it needs <dir>/MNIST/raw with the four IDX files, e.g. --data-dir ../shared/data"
        root = self.require_data_dir("mnist_detection", how)
        out = []
        for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                     "t10k-labels-idx1-ubyte"):
            found = [f / n for f in (root / "MNIST" / "raw", root / "raw", root) for n in (stem + ".gz", stem)
                     if (f / n).is_file()]
            if not found:
                raise ZooUserError(f"no {stem}[.gz] under '{root}'; {how}")
            out.append(read_idx(found[0], 2051 if "images" in stem else 2049).numpy())
        x, y, xt, yt = out
        cut = int(len(y) * 0.9)  # validation scenes use the last 10 % of the training digits
        return {"train": (x[:cut], y[:cut]), "val": (x[cut:], y[cut:]), "test": (xt, yt)}
