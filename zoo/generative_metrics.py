"""Quality metrics for generative models that need no download.

* 2-D mixtures: modes covered and the share of high-quality samples (within 3 std of a mode), as in
  VEEGAN / PacGAN.
* Images: a Fréchet distance in the feature space of a zoo CNN classifier trained on the same data
  (torchmetrics' FID with a custom feature extractor; Inception weights cannot be had offline), the
  class histogram of generated images under that classifier, and a real-vs-real reference distance.

Pixel convention: models hand images to these metrics in [0, 1]; :func:`pixel_stats` maps a
DataModule's (possibly normalised) batches there.

Example:
    >>> centers = torch.tensor([[0.0, 0.0], [5.0, 0.0]])
    >>> mode_metrics(torch.zeros(10, 2), centers, std=0.1)["modes"]
    1
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ZooUserError

__all__ = ["pixel_stats", "PixelSpaceMixin", "mode_metrics", "class_histogram", "ClassifierFeatures",
           "train_feature_classifier", "load_feature_classifier", "ImageQuality", "build_image_quality"]


def pixel_stats(datamodule: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std), shaped (1, C, 1, 1), such that ``x * std + mean`` are pixels in [0, 1].

    A DataModule with ``normalize`` true supplies its ``mean``/``std``; anything else (no DataModule,
    or ``normalize`` false) is taken as batches already in [0, 1].
    """
    if datamodule is not None and getattr(datamodule, "normalize", False):
        return torch.tensor(datamodule.mean).view(1, -1, 1, 1), torch.tensor(datamodule.std).view(1, -1, 1, 1)
    return torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)


class PixelSpaceMixin:
    """LightningModule mixin: ``to_unit(x)`` maps the attached DataModule's batches to pixels in [0, 1].

    Generative models learn the images as they are: the CLI turns the DataModule's augmentation off
    (``data_defaults``), and a DataModule that augments anyway gets a warning at setup.
    """

    data_defaults: ClassVar[dict[str, Any]] = {"augment": "none"}

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        self._pixel_stats = pixel_stats(dm)
        if stage == "fit" and getattr(dm, "augment", "none") != "none":
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(f"{type(dm).__name__} augments its training images (augment='{dm.augment}'): "
                           f"{type(self).__name__} will learn the augmented images; "
                           "pass augment='none' unless intended")

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = getattr(self, "_pixel_stats", None) or pixel_stats(None)
        return x * std.to(x.device) + mean.to(x.device)

    def from_unit(self, unit: torch.Tensor) -> torch.Tensor:
        mean, std = getattr(self, "_pixel_stats", None) or pixel_stats(None)
        return (unit - mean.to(unit.device)) / std.to(unit.device)


def mode_metrics(samples: torch.Tensor, centers: torch.Tensor, std: float, k_std: float = 3.0,
                 min_share: float = 0.1) -> dict[str, float]:
    """Mode coverage of 2-D samples.

    A sample is high quality when it lies within ``k_std`` standard deviations of its nearest
    centre; a mode is covered when it holds at least ``min_share`` of its fair share
    (``n / num_modes``) of the high-quality samples.
    """
    dist, nearest = torch.cdist(samples.float(), centers.to(samples.device).float()).min(dim=1)
    hq = dist <= k_std * std
    counts = torch.bincount(nearest[hq], minlength=len(centers))
    covered = counts >= max(1.0, min_share * len(samples) / len(centers))
    return {"modes": int(covered.sum()), "hq_frac": float(hq.float().mean()),
            "mode_min_frac": float(counts.min()) / max(len(samples), 1)}


def class_histogram(preds: torch.Tensor, num_classes: int, min_share: float = 0.1) -> dict[str, float]:
    """Per-class fractions of predicted labels; a class is present at ``min_share`` of a uniform share."""
    frac = torch.bincount(preds, minlength=num_classes).float() / max(len(preds), 1)
    out = {"classes_present": int((frac >= min_share / num_classes).sum()), "class_min_frac": float(frac.min()),
           "class_max_frac": float(frac.max())}
    out.update({f"class_frac_{c}": float(f) for c, f in enumerate(frac)})
    return out


class ClassifierFeatures(nn.Module):
    """Penultimate activations of a zoo ``CNNClassifier`` for images in [0, 1] (FID feature extractor)."""

    def __init__(self, classifier: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        self.num_features = classifier.head[-1].in_features

    def normalise(self, unit: torch.Tensor) -> torch.Tensor:
        return (unit - self.mean) / self.std

    def forward(self, unit: torch.Tensor) -> torch.Tensor:
        return self.classifier.head[:-1](self.classifier.features(self.normalise(unit)))

    @torch.no_grad()
    def predict(self, unit: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.normalise(unit)).argmax(dim=-1)


def train_feature_classifier(datamodule: Any, epochs: int = 10, device: torch.device | str = "cpu",
                             lr: float = 3e-3) -> nn.Module:
    """Train a small zoo ``CNNClassifier`` on the DataModule's train split (plain loop, OneCycle AdamW). A plain
    loop, not a Trainer: it runs inside the GAN's own test loop, where a nested Trainer would re-enter Lightning."""
    from zoo.models.cnn import CNNClassifier

    if epochs <= 0:
        raise ZooUserError(f"classifier_epochs must be positive, got {epochs}; or pass --model.classifier_ckpt PATH")
    with torch.inference_mode(False), torch.enable_grad():  # may be called from inside a test loop
        clf = CNNClassifier(num_classes=datamodule.num_classes, in_channels=datamodule.in_channels,
                            image_size=datamodule.image_size).to(device)
        loader = datamodule.train_dataloader()
        opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(2, epochs * len(loader)))
        clf.train()
        for _ in range(epochs):
            for x, y in loader:
                loss = F.cross_entropy(clf(x.to(device)), y.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return clf.eval()


def load_feature_classifier(path: str | Path, datamodule: Any) -> nn.Module:
    """A zoo ``cnn`` checkpoint (``train.py --model cnn`` on the same data) checked against the data's shapes."""
    from zoo.models.cnn import CNNClassifier

    path = Path(path).expanduser()
    if not path.is_file():
        raise ZooUserError(f"classifier checkpoint '{path}' does not exist; train one with "
                           f"`python train.py --model cnn` on the same data, or leave --model.classifier_ckpt unset")
    try:
        clf = CNNClassifier.load_from_checkpoint(path, map_location="cpu")
    except Exception as exc:  # wrong class, corrupt file: many exception types
        raise ZooUserError(f"'{path}' is not a zoo cnn checkpoint: {str(exc).splitlines()[0][:160]}") from exc
    want = (datamodule.num_classes, datamodule.in_channels, datamodule.image_size)
    got = tuple(clf.hparams[k] for k in ("num_classes", "in_channels", "image_size"))
    if got != want:
        raise ZooUserError(f"classifier '{path}' expects (classes, channels, size) {got} but the data gives {want}; "
                           f"use a classifier trained on the same data")
    return clf.eval()


class ImageQuality:
    """Accumulates real and generated images in [0, 1] and computes the image metrics.

    Kept out of the LightningModule's modules on purpose, so the classifier never enters a checkpoint.
    """

    def __init__(self, features: ClassifierFeatures, num_classes: int, min_share: float = 0.1) -> None:
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.features, self.num_classes, self.min_share = features, num_classes, min_share
        device = features.mean.device
        self.fid = FrechetInceptionDistance(feature=features, reset_real_features=False).to(device)
        self.fid_ref = FrechetInceptionDistance(feature=features, reset_real_features=False).to(device)
        self.fake_preds: list[torch.Tensor] = []
        self.real_correct = self.real_total = 0

    @torch.no_grad()
    def update(self, real: torch.Tensor, fake: torch.Tensor, real_labels: torch.Tensor | None = None) -> None:
        """Test images and as many generated ones."""
        self.fid.update(real, real=True)
        self.fid_ref.update(real, real=True)
        self.fid.update(fake, real=False)
        self.fake_preds.append(self.features.predict(fake).cpu())
        if real_labels is not None:
            self.real_correct += int((self.features.predict(real).cpu() == real_labels.cpu()).sum())
            self.real_total += len(real_labels)

    @torch.no_grad()
    def update_reference(self, other_real: torch.Tensor) -> None:
        """Real images from another split, for the real-vs-real reference distance."""
        self.fid_ref.update(other_real, real=False)

    def reference_needed(self) -> int:
        return int(self.fid.real_features_num_samples - self.fid_ref.fake_features_num_samples)

    def compute(self) -> dict[str, float]:
        out = {"fid_classifier": float(self.fid.compute()), "fid_classifier_real": float(self.fid_ref.compute())}
        out.update(class_histogram(torch.cat(self.fake_preds), self.num_classes, self.min_share))
        if self.real_total:
            out["classifier_acc"] = self.real_correct / self.real_total
        return out


def build_image_quality(datamodule: Any, classifier_ckpt: str | None, classifier_epochs: int,
                        device: torch.device) -> tuple[ImageQuality, float]:
    """An :class:`ImageQuality` on a loaded or freshly trained classifier, and the seconds it took."""
    start = time.perf_counter()
    if classifier_ckpt:
        clf = load_feature_classifier(classifier_ckpt, datamodule)
    else:
        clf = train_feature_classifier(datamodule, classifier_epochs, device)
    mean, std = pixel_stats(datamodule)
    features = ClassifierFeatures(clf.to(device), mean.to(device), std.to(device))
    return ImageQuality(features, datamodule.num_classes), time.perf_counter() - start
