"""Images for neural style transfer: a content/style pair (Gatys) and a content folder + style (Johnson).

Images are read with PIL and converted to RGB (grayscale is repeated, transparency is composited
on white). ``sklearn:china.jpg`` / ``sklearn:flower.jpg`` name the two photos bundled with
scikit-learn: the offline defaults (content ``china.jpg``, style ``flower.jpg``). Every batch is
``(content, style)``: content (B, 3, H, W) and style (1, 3, h, w), floats in [0, 1].

Example:
    >>> dm = StylePairDataModule(size=64, steps_per_epoch=2)
    >>> dm.image_shape
    (43, 64)
    >>> content, style = next(iter(dm.train_dataloader()))
    >>> tuple(content.shape), tuple(style.shape)
    ((1, 3, 43, 64), (1, 3, 43, 64))
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from zoo.datamodules.base import ZooDataModule
from zoo.errors import ZooUserError

__all__ = ["load_image", "list_images", "StylePairDataModule", "ContentFolderDataModule"]

SKLEARN = "sklearn:"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MIN_SIZE = 16  # VGG pools four times before relu5_1


def _check_size(name: str, size: int | None) -> None:
    if size is not None and size < MIN_SIZE:
        raise ZooUserError(f"{name} must be >= {MIN_SIZE} pixels (VGG pools 4 times), got {size}")


def _open_rgb(spec: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    if spec.startswith(SKLEARN):
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()
        images = {Path(f).name: img for f, img in zip(bunch.filenames, bunch.images)}
        if spec[len(SKLEARN):] not in images:
            names = ", ".join(SKLEARN + n for n in images)
            raise ZooUserError(f"no scikit-learn sample image '{spec}'; choose {names}")
        return Image.fromarray(images[spec[len(SKLEARN):]])
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ZooUserError(f"image '{path}' does not exist; pass the path of a JPEG/PNG file")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
        raise ZooUserError(f"cannot read image '{path}' ({reason}); pass a JPEG/PNG file") from exc


@functools.lru_cache(maxsize=64)
def _read_uint8(spec: str, longer: int | None = None, shorter: int | None = None) -> torch.Tensor:
    """(3, H, W) uint8, resized (Lanczos) so the longer or the shorter side has the given length."""
    from PIL import Image

    im = _open_rgb(spec)
    w, h = im.size
    if longer or shorter:
        scale = longer / max(w, h) if longer else shorter / min(w, h)
        im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def load_image(spec: str | Path, size: int | None = None) -> torch.Tensor:
    """An image file (or ``sklearn:<name>``) as a (1, 3, H, W) float tensor in [0, 1], longer side ``size``."""
    if size is not None and size <= 0:
        raise ZooUserError(f"image size must be positive, got {size}")
    return _read_uint8(str(spec), size).float().div(255.0).unsqueeze(0)


def list_images(path: str | Path) -> list[Path]:
    """A single image file, or every image under a folder (recursively, sorted)."""
    p = Path(path).expanduser()
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise ZooUserError(f"'{p}' is neither an image file nor a folder; pass a JPEG/PNG file or a folder of them")
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ZooUserError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under '{p}'")
    return files


class _Items(Dataset):
    """``n`` items made by ``make(i)``; DataLoader(batch_size=None) hands them over unbatched."""

    def __init__(self, n: int, make: Callable[[int], Any]) -> None:
        self.n, self.make = n, make

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        return self.make(i)


class _StyleData(ZooDataModule):
    """Shared parts: resolving user paths (relative ones also under ``data_dir``) and the style image."""

    default_style: ClassVar[str] = SKLEARN + "flower.jpg"

    def __init__(self, data_dir: str | None, style: str | None, size: int, style_size: int | None, batch_size: int,
                 num_workers: int, seed: int) -> None:
        super().__init__(data_dir, batch_size, num_workers, seed)
        _check_size("size", size)
        _check_size("style_size", style_size)
        self.size, self.style_size = size, style_size or size
        self.style_spec = self.resolve(style) if style else self.default_style

    def resolve(self, spec: str) -> str:
        p = Path(spec).expanduser()
        if spec.startswith(SKLEARN) or p.exists() or self.data_dir is None:
            return spec
        return str(self.data_dir / p)

    @property
    def style_image(self) -> torch.Tensor:
        return load_image(self.style_spec, self.style_size)

    def loader(self, n: int, make: Callable[[int], Any], **kwargs: Any) -> DataLoader:
        return DataLoader(_Items(n, make), num_workers=self.num_workers, **kwargs)


class StylePairDataModule(_StyleData):
    """One content photo and one style image for Gatys-style optimisation (offline: scikit-learn photos).

    Args:
        content / style: image paths (relative ones are also looked up under ``data_dir``) or
            ``sklearn:china.jpg`` / ``sklearn:flower.jpg`` (the defaults).
        size: longer side of the content image in pixels (the generated image has its shape).
        style_size: longer side of the style image (default ``size``).
        steps_per_epoch: optimisation steps per "epoch" (the pair is repeated this many times; one
            ``style_transfer`` step is ``lbfgs_iters`` LBFGS iterations).
    """

    link_fields = ("image_shape",)

    def __init__(self, data_dir: str | None = None, content: str | None = None, style: str | None = None,
                 size: int = 256, style_size: int | None = None, steps_per_epoch: int = 10, batch_size: int = 1,
                 num_workers: int = 0, seed: int = 42) -> None:
        super().__init__(data_dir, style, size, style_size, batch_size, num_workers, seed)
        if steps_per_epoch <= 0:
            raise ZooUserError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
        self.content_spec = self.resolve(content) if content else SKLEARN + "china.jpg"
        self.steps_per_epoch = steps_per_epoch

    @property
    def content_image(self) -> torch.Tensor:
        return load_image(self.content_spec, self.size)

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of the content image at ``size``: the shape of the generated image."""
        return tuple(self.content_image.shape[-2:])

    def _pairs(self, n: int) -> DataLoader:
        pair = (self.content_image, self.style_image)
        return self.loader(n, lambda i: pair, batch_size=None)

    def train_dataloader(self) -> DataLoader:
        return self._pairs(self.steps_per_epoch)

    def test_dataloader(self) -> DataLoader:
        return self._pairs(1)


def _with_style(items: list[torch.Tensor], style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack(items), style


class ContentFolderDataModule(_StyleData):
    """Content images (a folder, or offline scikit-learn's china.jpg) plus one style image, for ``fast_style``.

    Each image is resized so its shorter side is 1.25 x ``size``; training samples are seeded random
    ``size`` crops (with flips), ``samples_per_epoch`` per epoch. Folders of >= 4 images hold out
    10% of the files for validation/test; with fewer (the offline default) validation uses fixed
    crops of the same images, so val/loss is then a training-fit figure, not a held-out one.

    Args:
        data_dir: folder of content images (JPEG/PNG, searched recursively); None: scikit-learn's china.jpg.
        style: the style image (path or ``sklearn:flower.jpg``, the default).
        size: training crop size.
        style_size: longer side of the style image (default ``size``).
        samples_per_epoch: random crops per training epoch.
        val_samples: crops per validation pass.
        predict_size: longer side for ``predict`` inputs (None keeps each image's own size).
    """

    def __init__(self, data_dir: str | None = None, style: str | None = None, size: int = 256,
                 style_size: int | None = None, batch_size: int = 4, samples_per_epoch: int = 64,
                 val_samples: int = 4, predict_size: int | None = None, num_workers: int = 0, seed: int = 42) -> None:
        super().__init__(data_dir, style, size, style_size, batch_size, num_workers, seed)
        if samples_per_epoch <= 0 or val_samples <= 0:
            raise ZooUserError("samples_per_epoch and val_samples must be positive")
        _check_size("predict_size", predict_size)
        self.samples_per_epoch, self.val_samples, self.predict_size = samples_per_epoch, val_samples, predict_size
        self.files: dict[str, list[str]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.files:
            return
        if self.data_dir is None:
            files = [SKLEARN + "china.jpg"]
        else:
            files = [str(f) for f in list_images(self.require_data_dir("style_content", "pass a folder of photos"))]
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(self.seed)).tolist()
        n_val = max(1, len(files) // 10) if len(files) >= 4 else 0
        val = [files[i] for i in order[:n_val]] or files
        self.files = {"train": [files[i] for i in order[n_val:]], "val": val}
        self._style = self.style_image

    def _crop(self, files: list[str], i: int, train: bool) -> torch.Tensor:
        """Crop ``i``: seeded by (seed, epoch, i) for training, by (seed, i) for validation."""
        gen = torch.Generator().manual_seed(self.seed + 1000003 * (self._epoch() + 1 if train else 0) + 7919 * i)
        img = _read_uint8(files[int(torch.randint(len(files), (1,), generator=gen))], None, math.ceil(self.size * 1.25))
        top = int(torch.randint(img.shape[1] - self.size + 1, (1,), generator=gen))
        left = int(torch.randint(img.shape[2] - self.size + 1, (1,), generator=gen))
        crop = img[:, top:top + self.size, left:left + self.size].float().div(255.0)
        return crop.flip(-1) if train and bool(torch.rand(1, generator=gen) < 0.5) else crop

    def _crops(self, split: str, n: int, train: bool) -> DataLoader:
        make = functools.partial(self._crop, self.files[split], train=train)
        collate = functools.partial(_with_style, style=self._style)
        return self.loader(n, make, batch_size=self.batch_size, collate_fn=collate)

    def train_dataloader(self) -> DataLoader:
        return self._crops("train", self.samples_per_epoch, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._crops("val", self.val_samples, train=False)

    def test_dataloader(self) -> DataLoader:
        """Whole validation images (longer side ``size``), one per batch."""
        val = self.files["val"]
        return self.loader(len(val), lambda i: (load_image(val[i], self.size), self._style), batch_size=None)

    def predict_input(self, path: str) -> Iterable[Any]:
        """Batches ``(image (1, 3, H, W), [file stem])`` for every image in a file or folder."""
        files = list_images(path)
        return self.loader(len(files), lambda i: (load_image(files[i], self.predict_size), [files[i].stem]),
                           batch_size=None)
