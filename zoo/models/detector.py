"""Object detectors: torchvision's Faster R-CNN (two-stage), RetinaNet, FCOS and SSDlite (one-stage) as one zoo
model, with COCO-style mAP / mAR (torchmetrics' MeanAveragePrecision), a precision-recall curve and a grid of
predicted vs true boxes at test time, COCO-results predictions and TorchScript export.

Example:
    >>> model = Detector(num_classes=10, arch="fcos", backbone="resnet18", min_size=64, pretrained="false")
    >>> model(torch.rand(2, 3, 64, 64)).shape  # (images, detections_per_img, x0 y0 x1 y1 score label)
    torch.Size([2, 100, 6])

    python train.py --model detector                         # generated digit scenes, offline
    python train.py -c recipes/detector_raccoon.yaml --data-dir ../shared/data
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torchmetrics

from zoo.errors import ZooUserError
from zoo.models._detection_nets import LOSS_KEYS, backbone_hub_state, build_detector, draw_detections, pr_curve_figure
from zoo.models.base import OptimizerName, SchedulerName, ZooModule
from zoo.pretrained import Pretrained, load_state_dict_file, resolve_weights

__all__ = ["Detector"]

DRAW_SCORE = 0.5  # boxes drawn in the PNGs (predict, test grid) need at least this score


def _map_metric(**kwargs: Any) -> torchmetrics.Metric:
    from torchmetrics.detection import MeanAveragePrecision

    return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools", **kwargs)


class Detector(ZooModule):
    """Object detector (Faster R-CNN, RetinaNet, FCOS or SSDlite from torchvision) scored by COCO mAP.

    Args:
        num_classes / class_names / image_size: filled in from the DataModule by the CLI (classes without the
            background; ``image_size`` is the size the data's images are made for).
        arch: ``fasterrcnn`` (two-stage), ``retinanet``, ``fcos`` or ``ssdlite`` (one-stage).
        backbone: ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101`` (with FPN) or ``mobilenet_v3_large``
            (FPN; the only one for ssdlite).
        min_size / max_size: images are resized so the shorter side is ``min_size`` unless the longer would pass
            ``max_size`` (defaults: ``image_size`` and 1333/800 of ``min_size``); ssdlite uses min_size square.
        anchor_sizes: anchor sides in pixels, one per feature level (5 for ResNet FPN) or all on every level;
            default torchvision's (32-512, FCOS 8-128). Not used by ssdlite (relative default boxes).
        aspect_ratios: anchor height/width ratios (Faster R-CNN, RetinaNet).
        fpn_channels: width of the feature pyramid and of the heads on it (torchvision: 256; 128 is ~2x faster
            on small images: 5.5 vs 2.9 training images/s for FCOS at 128 px on one core).
        proposals / rois_per_image / box_head_dim: Faster R-CNN's RPN proposals kept per image in training (half
            at test), sampled RoIs per image for the box head and the width of its two-layer MLP (torchvision's
            2000 / 512 / 1024 are for 800 px COCO images; these defaults are CPU-friendly for images with a few
            dozen objects at most).
        score_thresh / nms_thresh / detections_per_img: post-processing of the detections.
        norm: ``batch`` (BatchNorm, from scratch) or ``frozen`` (FrozenBatchNorm, for pretrained backbones).
        pretrained: ImageNet backbone weights, ``auto`` (if cached or downloadable, else random with a warning),
            ``true`` (must load) or ``false``; offline nothing is downloaded.
        weights: a local detector state dict or zoo checkpoint (tensors whose names and shapes fit are loaded,
            e.g. all but the class heads of a COCO-trained torchvision model); wins over ``pretrained``.
        baseline_box: side fraction of the central box a trivial baseline predicts for every image (confidence 1,
            the first class), scored at test as ``test/baseline_map_50``; 0 turns it off.
        optimizer / lr / weight_decay / momentum / scheduler: the optimisation recipe.
    """

    monitor, monitor_mode = "val/map", "max"
    default_patience = 10
    trainer_defaults: ClassVar[dict[str, Any]] = {"max_epochs": 30, "gradient_clip_val": 10.0}
    export_formats = ("torchscript",)

    def __init__(
        self,
        num_classes: int = 10,
        class_names: tuple[str, ...] | None = None,
        image_size: int = 320,
        arch: Literal["fasterrcnn", "retinanet", "fcos", "ssdlite"] = "fasterrcnn",
        backbone: str = "resnet18",
        min_size: int | None = None,
        max_size: int | None = None,
        anchor_sizes: tuple[int, ...] | None = None,
        aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
        fpn_channels: int = 256,
        proposals: int = 300,
        rois_per_image: int = 128,
        box_head_dim: int = 1024,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        norm: Literal["batch", "frozen"] = "batch",
        pretrained: Pretrained = "auto",
        weights: str | None = None,
        baseline_box: float = 0.0,
        optimizer: OptimizerName = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        scheduler: SchedulerName = "onecycle",
    ) -> None:
        super().__init__()
        if num_classes < 1 or (class_names is not None and len(class_names) != num_classes):
            raise ZooUserError(f"num_classes must be >= 1 and match class_names, got {num_classes} and "
                               f"{list(class_names or [])}")
        min_size = min_size or image_size
        max_size = max_size or max(min_size, round(min_size * 1333 / 800))
        if min_size < 32 or max_size < min_size or not 0 <= baseline_box <= 1 or detections_per_img < 1:
            raise ZooUserError(f"need min_size >= 32, max_size >= min_size, 0 <= baseline_box <= 1 and "
                               f"detections_per_img >= 1; got {min_size}, {max_size}, {baseline_box}, "
                               f"{detections_per_img}")
        self.save_hyperparameters()
        state = None if weights else resolve_weights(pretrained, None, lambda: backbone_hub_state(backbone),
                                                     f"{backbone} (detection backbone)")
        self.net = build_detector(arch, backbone, num_classes + 1, min_size, max_size, anchor_sizes, aspect_ratios,
                                  proposals, rois_per_image, score_thresh, nms_thresh, detections_per_img, norm,
                                  state, trainable_layers=3 if norm == "frozen" else 5, fpn_channels=fpn_channels,
                                  box_head_dim=box_head_dim)
        if weights:
            self._load_detector_weights(weights)
        self.names = list(class_names or [str(i) for i in range(num_classes)])
        self.train_loss = torchmetrics.MeanMetric()
        self.train_parts = torch.nn.ModuleDict({k: torchmetrics.MeanMetric() for k in LOSS_KEYS[arch]})
        self.val_map = _map_metric()
        self.test_map = _map_metric(class_metrics=True, extended_summary=True)
        self.baseline_map = _map_metric()
        self._shown: list[tuple[torch.Tensor, dict, dict]] = []
        self.example_input_array = torch.rand(1, 3, min_size, min_size, generator=torch.Generator().manual_seed(0))

    def _load_detector_weights(self, path: str) -> None:
        state = load_state_dict_file(path)
        state = {k[4:] if k.startswith("net.") else k: v for k, v in state.items()}
        own = self.net.state_dict()
        fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if len(fits) < len(own) // 2:
            raise ZooUserError(f"weights '{path}' fit only {len(fits)} of the {len(own)} tensors of this "
                               f"{self.hparams.arch}/{self.hparams.backbone} detector; use weights of the same "
                               "arch and backbone")
        if len(fits) < len(own):
            skipped = [k for k in own if k not in fits]
            warnings.warn(f"weights '{path}': {len(skipped)} tensors do not fit and keep their initial values "
                          f"(e.g. {', '.join(skipped[:3])})", stacklevel=2)
        self.net.load_state_dict(fits, strict=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images in [0, 1] -> (N, detections_per_img, 6) ``x0, y0, x1, y1, score, label`` in input
        pixels (label 1..K is the class index + 1; rows with label 0 are padding), for export and serving."""
        was_training = self.net.training
        try:  # always inference: in training mode torchvision's detectors want targets and return losses
            return pad_detections(self.net.eval()(list(x)), self.hparams.detections_per_img)
        finally:
            self.net.train(was_training)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        names = getattr(dm, "class_names", None)
        if names is not None and self.hparams.class_names is not None and tuple(names) != tuple(self.names):
            raise ZooUserError(f"the data's classes {list(names)} do not match the model's {self.names}; use the "
                               "data the checkpoint was trained on (or --data.classes in its order)")
        if names is not None and len(names) != self.hparams.num_classes:
            raise ZooUserError(f"the data has {len(names)} classes, the model {self.hparams.num_classes}")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("hyper_parameters", {}).get("class_names")
        if saved is not None and self.hparams.class_names is not None and tuple(saved) != tuple(self.names):
            raise ZooUserError(f"the checkpoint's classes {list(saved)} do not match the data's {self.names}")

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        parts = self.net(images, targets)
        loss = sum(parts.values())
        self.log_train_step("train/loss", loss, self.train_loss, len(images))
        for key, value in parts.items():
            self.train_parts[key].update(value.detach(), weight=len(images))
        return loss

    def on_train_epoch_end(self) -> None:
        if self.train_loss.update_count:
            self.log("train/loss", self.train_loss)
            for key, metric in self.train_parts.items():
                self.log(f"train/{key}", metric)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, targets = batch
        self.val_map.update(objects_only(self.net(images)), targets)

    def on_validation_epoch_end(self) -> None:
        if self.val_map.update_count:
            result = self.val_map.compute()
            self.log_dict({"val/map": result["map"], "val/map_50": result["map_50"]}, prog_bar=True, sync_dist=False)
        self.val_map.reset()

    def test_step(self, batch: Any, batch_idx: int) -> None:
        images, targets = batch
        preds = objects_only(self.net(images))
        self.test_map.update(preds, targets)
        if self.hparams.baseline_box > 0:
            self.baseline_map.update([central_box(img, self.hparams.baseline_box) for img in images], targets)
        for img, p, t in zip(images, preds, targets):
            if len(self._shown) < 8:
                self._shown.append((img.cpu(), {k: v.cpu() for k, v in p.items()}, {k: v.cpu() for k, v in t.items()}))

    def on_test_epoch_end(self) -> None:
        if not self.test_map.update_count:
            return
        result = self.test_map.compute()
        metrics = {f"test/{k}": result[k] for k in ("map", "map_50", "map_75", "mar_100")}
        classes = result["classes"].reshape(-1).tolist()
        for label, ap in zip(classes, result["map_per_class"].reshape(-1).tolist()):
            if 0 < label <= len(self.names) and ap >= 0:  # -1: no such object in the test images
                metrics[f"test/ap_{self.names[label - 1]}"] = torch.tensor(ap)
        if self.baseline_map.update_count:
            metrics["test/baseline_map_50"] = self.baseline_map.compute()["map_50"]
            self.baseline_map.reset()
        self.log_dict(metrics)
        from zoo.artifacts import log_figure, log_image

        log_figure(self.trainer, "pr_curve", pr_curve_figure(result["precision"], self.names))
        if self._shown:
            from torchvision.utils import make_grid

            tiles = [draw_detections(i, p, self.names, t, DRAW_SCORE) for i, p, t in self._shown]
            side = max(max(t.shape[-2:]) for t in tiles)
            tiles = [torch.nn.functional.pad(t, (0, side - t.shape[-1], 0, side - t.shape[-2])) for t in tiles]
            log_image(self.trainer, "test_predictions", make_grid(tiles, nrow=4, padding=2))
        self._shown = []
        self.test_map.reset()

    def predict_step(self, batch: Any, batch_idx: int) -> list[tuple[str, torch.Tensor, dict[str, torch.Tensor]]]:
        images, names = batch
        return [(n, img.cpu(), {k: v.cpu() for k, v in p.items()}) for n, img, p in zip(names, images,
                                                                              objects_only(self.net(images)))]

    def write_predictions(self, predictions: list[Any], out_dir: Path, datamodule: Any) -> Path:
        """``detections.json`` in COCO results format (``image_id`` = position of the input, ``category_id`` = class
        index + 1, ``bbox = [x, y, w, h]`` pixels, plus ``file_name`` / ``category_name``) and
        ``annotated/<name>.png`` with the boxes scoring >= 0.5."""
        from PIL import Image

        results, shown = [], out_dir / "annotated"
        shown.mkdir(parents=True, exist_ok=True)
        for image_id, (name, image, det) in enumerate((p for batch in predictions for p in batch), start=1):
            for (x0, y0, x1, y1), score, label in zip(det["boxes"].tolist(), det["scores"].tolist(),
                                                      det["labels"].tolist()):
                results.append({"image_id": image_id, "category_id": int(label), "bbox": [round(v, 2) for v in
                                (x0, y0, x1 - x0, y1 - y0)], "score": round(score, 4), "file_name": name,
                                "category_name": self.names[label - 1] if 0 < label <= len(self.names) else str(label)})
            keep = det["scores"] >= DRAW_SCORE
            print(f"{name}: {int(keep.sum())} object(s) with score >= {DRAW_SCORE}" + "".join(
                f", {self.names[int(c) - 1]} {float(s):.2f}" for c, s in zip(det["labels"][keep], det["scores"][keep])))
            drawn = draw_detections(image, det, self.names, None, DRAW_SCORE)
            Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(shown / f"{Path(name).stem}.png")
        path = out_dir / "detections.json"
        path.write_text(json.dumps(results, indent=1) + "\n")
        return path

    def to_torchscript(self, file_path: Any = None, method: str | None = "script", example_inputs: Any = None,
                       **kwargs: Any) -> torch.jit.ScriptModule:
        """TorchScript by scripting (tracing cannot follow the data-dependent detection code): input (N, 3, H, W)
        in [0, 1], output as :meth:`forward`."""
        scripted = torch.jit.script(_Exportable(self.net.eval(), self.hparams.detections_per_img))
        if file_path is not None:
            torch.jit.save(scripted, str(file_path))
        return scripted

    def export_notes(self, out_dir: Path) -> str:
        (out_dir / "classes.json").write_text(json.dumps(self.names) + "\n")
        return ("input: RGB images scaled to [0, 1] (the model resizes and normalises); output (N, "
                f"{self.hparams.detections_per_img}, 6) = x0, y0, x1, y1, score, label (class index + 1, 0 = padding; "
                "names in classes.json)")


def objects_only(dets: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Drop label-0 (background) detections: RetinaNet and FCOS score every class with a sigmoid, the background
    slot included (it is never a target, so it rarely scores, but a threshold of 0 keeps it)."""
    out: list[dict[str, torch.Tensor]] = []
    for d in dets:
        keep = d["labels"] > 0
        out.append({"boxes": d["boxes"][keep], "scores": d["scores"][keep], "labels": d["labels"][keep]})
    return out


def pad_detections(dets: list[dict[str, torch.Tensor]], size: int) -> torch.Tensor:
    """torchvision's per-image detections as one (N, size, 6) tensor, zero-padded (background ones dropped)."""
    dets = objects_only(dets)
    out = torch.zeros(len(dets), size, 6)
    for i, d in enumerate(dets):
        n = min(size, d["boxes"].shape[0])
        out[i, :n, :4] = d["boxes"][:n]
        out[i, :n, 4] = d["scores"][:n]
        out[i, :n, 5] = d["labels"][:n].to(out.dtype)
    return out


class _Exportable(torch.nn.Module):
    def __init__(self, net: torch.nn.Module, size: int) -> None:
        super().__init__()
        self.net, self.size = net, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = [img for img in x]
        if torch.jit.is_scripting():
            _, dets = self.net(images)
        else:
            dets = self.net(images)
        return pad_detections(dets, self.size)


def central_box(image: torch.Tensor, fraction: float) -> dict[str, torch.Tensor]:
    """The trivial baseline: one box of ``fraction`` of each side at the image centre, score 1, class 1."""
    h, w = image.shape[-2:]
    dx, dy = w * (1 - fraction) / 2, h * (1 - fraction) / 2
    box = torch.tensor([[dx, dy, w - dx, h - dy]], dtype=torch.float32, device=image.device)
    return {"boxes": box, "scores": torch.ones(1, device=image.device),
            "labels": torch.ones(1, dtype=torch.int64, device=image.device)}
