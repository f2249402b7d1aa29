"""Transfer learning with any torchvision or timm backbone: pretrained weights, freeze-then-unfreeze
fine-tuning with discriminative learning rates, and a full test report.

Registered as ``resnet`` (backbone resnet18) and ``densenet`` (backbone densenet121). Inputs are
images in [0, 1]; the model normalises them with the backbone's pretrained mean/std (grey images
are repeated to 3 channels), so the same tensors work for training, prediction and export.

Example:
    >>> model = TransferClassifier(num_classes=3, image_size=32, pretrained="false")
    >>> model(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 3])
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from zoo.artifacts import log_figure
from zoo.callbacks.finetuning import BackboneFreezeUnfreeze, apply_frozen_bn_eval
from zoo.errors import ZooUserError
from zoo.models.backbones import build_backbone
from zoo.models.base import ClassifierModule, OptimizerName, SchedulerName, build_optimizer
from zoo.models.evaluation import ClassificationTask, classification_report, write_class_predictions
from zoo.pretrained import Pretrained, load_matching, resolve_weights

__all__ = ["TransferClassifier", "ProgressLR"]


def _lr_factor(shape: str, t: float) -> float:
    """LR multiplier at training progress ``t`` in [0, 1] (onecycle: 30% warm-up from 1/25, cosine down)."""
    if shape == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    if t < 0.3:
        return 0.04 + 0.96 * 0.5 * (1 - math.cos(math.pi * t / 0.3))
    return max(0.5 * (1 + math.cos(math.pi * (t - 0.3) / 0.7)), 4e-6)


class ProgressLR(torch.optim.lr_scheduler.LRScheduler):
    """Per-step schedule ``lr = initial_lr * factor(step / total)`` over every parameter group,
    including groups added later (unfreezing), which OneCycleLR and CosineAnnealingLR do not handle."""

    def __init__(self, optimizer: torch.optim.Optimizer, shape: str, total_steps: int) -> None:
        if shape not in ("onecycle", "cosine"):
            raise ZooUserError(f"unknown scheduler '{shape}'; choose none, onecycle or cosine")
        self.shape, self.total_steps = shape, max(total_steps, 1)
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        factor = _lr_factor(self.shape, min(self.last_epoch / self.total_steps, 1.0))
        return [g.setdefault("initial_lr", g["lr"]) * factor for g in self.optimizer.param_groups]


class TransferClassifier(ClassifierModule):
    """Fine-tunes a torchvision/timm backbone (ResNet, DenseNet, ...) with a new head; full test report.

    Args:
        num_classes / in_channels / image_size / task: linked from the DataModule by the CLI.
            ``task`` is ``multiclass`` (cross-entropy), ``binary`` (one logit, BCE) or
            ``multilabel`` (``num_classes`` labels, BCE-with-logits).
        backbone: a torchvision classification model or timm model name (``timm:NAME`` forces timm).
        pretrained / weights: ``auto|true|false`` hub weights, or a local state dict / zoo checkpoint.
        stem_stride: down-sampling of the stem (4 = ImageNet conv+max-pool, 2 = no max-pool,
            1 = neither); None picks 4 from 128 px, 2 from 16 px, else 1.
        freeze_epochs: epochs with the backbone frozen (batch norm in eval); None: 1 when starting
            from loaded weights, else 0.
        backbone_lr_ratio / layer_decay: the backbone's last stage trains at ``lr * ratio``, each
            earlier stage ``layer_decay`` times slower; None: 0.1 / 0.7 from loaded weights, else 1 / 1.
        dropout: dropout before the new linear head.
        optimizer / lr / weight_decay / momentum / scheduler / label_smoothing: the recipe.
    """

    data_defaults = {"normalize": False}  # the backbone normalises [0, 1] input with its own mean/std

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        task: ClassificationTask = "multiclass",
        backbone: str = "resnet18",
        pretrained: Pretrained = "auto",
        weights: str | None = None,
        stem_stride: int | None = None,
        freeze_epochs: int | None = None,
        backbone_lr_ratio: float | None = None,
        layer_decay: float | None = None,
        dropout: float = 0.0,
        optimizer: OptimizerName = "adamw",
        lr: float = 2e-3,
        weight_decay: float = 0.05,
        momentum: float = 0.9,
        scheduler: SchedulerName = "onecycle",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if task not in ("multiclass", "binary", "multilabel"):
            raise ZooUserError(f"task must be multiclass, binary or multilabel, got '{task}'")
        if num_classes < (1 if task == "multilabel" else 2) or (task == "binary" and num_classes != 2):
            raise ZooUserError(f"num_classes={num_classes} does not fit task '{task}' "
                               "(binary needs 2, multiclass >= 2)")
        if in_channels not in (1, 3):
            raise ZooUserError(f"in_channels must be 1 or 3 (grey is repeated to RGB), got {in_channels}")
        self.save_hyperparameters()
        if stem_stride is None:
            stem_stride = 4 if image_size >= 128 else 2 if image_size >= 16 else 1
        self.stem_stride = stem_stride
        bb = build_backbone(backbone, stem_stride)
        self.backbone, self.stages, self.backbone_name = bb.module, bb.stages, f"{bb.source}:{bb.name}"
        outputs = 1 if task == "binary" else num_classes
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(bb.num_features, outputs))
        self.register_buffer("input_mean", torch.tensor(bb.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(bb.std).view(1, -1, 1, 1), persistent=False)
        what = f"backbone '{self.backbone_name}'"
        state = resolve_weights(pretrained, weights, bb.load_hub, what)
        if state is not None:
            load_matching(self.backbone, bb.clean_state(state), what)
        loaded = state is not None
        self.recipe = dict(
            freeze_epochs=(1 if loaded else 0) if freeze_epochs is None else freeze_epochs,
            backbone_lr_ratio=(0.1 if loaded else 1.0) if backbone_lr_ratio is None else backbone_lr_ratio,
            layer_decay=(0.7 if loaded else 1.0) if layer_decay is None else layer_decay,
        )
        rank_zero_info(f"{what}: {'loaded weights' if loaded else 'random init'}, stem stride {stem_stride}, "
                       + ", ".join(f"{k}={v}" for k, v in self.recipe.items()))
        self._init_task_metrics(num_classes, task, label_smoothing)
        self.example_input_array = torch.zeros(1, in_channels, image_size, image_size)
        self._test_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _init_task_metrics(self, num_classes: int, task: str, label_smoothing: float) -> None:
        if task == "multiclass":
            self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
            kw: dict[str, Any] = dict(task="multiclass", num_classes=num_classes)
        else:
            self.criterion = nn.BCEWithLogitsLoss()
            kw = dict(task="binary") if task == "binary" else dict(task="multilabel", num_labels=num_classes)
        self._init_stage_metrics(**kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.head(self.backbone((x - self.input_mean) / self.input_std))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax (multiclass), or sigmoid of each logit (binary: N positive-class probabilities)."""
        if self.hparams.task == "multiclass":
            return logits.softmax(dim=-1)
        probs = logits.sigmoid()
        return probs.reshape(probs.shape[0]) if self.hparams.task == "binary" else probs

    def train(self, mode: bool = True) -> "TransferClassifier":
        """Like ``nn.Module.train``, but frozen batch-norm layers of the backbone stay in eval mode."""
        super().train(mode)
        if mode:
            apply_frozen_bn_eval(self.backbone)
        return self

    def _shared_step(self, batch: Any, stage: str) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = self(x)
        if self.hparams.task == "multiclass":
            loss, preds = self.criterion(logits, y), logits.argmax(dim=-1)
        else:
            logits = logits.squeeze(-1) if self.hparams.task == "binary" else logits
            loss, preds = self.criterion(logits, y.float()), (logits > 0).long()
        self._log_step(stage, loss, preds, y.long())
        return {"loss": loss, "preds": preds, "target": y, "logits": logits}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints hold every weight: record the resolved recipe and no initial weights, so
        ``load_from_checkpoint`` neither needs the original weights file nor tries the hub."""
        if "hyper_parameters" in checkpoint:
            checkpoint["hyper_parameters"] = {**checkpoint["hyper_parameters"], "pretrained": "false", "weights": None,
                                              "stem_stride": self.stem_stride, **self.recipe}

    # ---- fine-tuning schedule -------------------------------------------------------------------
    def configure_callbacks(self) -> list[Any]:
        n = self.recipe["freeze_epochs"]
        return [BackboneFreezeUnfreeze(unfreeze_at_epoch=n)] if n > 0 else []

    def backbone_param_groups(self) -> list[dict[str, Any]]:
        """One group per backbone stage: the last at ``lr * backbone_lr_ratio``, earlier ones decayed."""
        named = dict(self.backbone.named_parameters())
        ratio, decay, n = self.recipe["backbone_lr_ratio"], self.recipe["layer_decay"], len(self.stages)
        groups = [{"params": [named[p] for p in stage if p in named],
                   "lr": self.hparams.lr * ratio * decay ** (n - 1 - i)} for i, stage in enumerate(self.stages)]
        grouped = {id(p) for g in groups for p in g["params"]}
        rest = [p for p in named.values() if id(p) not in grouped]  # parameters outside the timm/child groups
        if rest:
            groups.append({"params": rest, "lr": self.hparams.lr * ratio})
        return groups

    def param_groups(self) -> list[dict[str, Any]]:
        groups = [{"params": list(self.head.parameters()), "lr": self.hparams.lr}, *self.backbone_param_groups()]
        groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
        return [g for g in groups if g["params"]]

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = build_optimizer(self.param_groups(), hp.optimizer, hp.lr, hp.weight_decay, hp.momentum)
        if hp.scheduler == "none":
            return opt
        sched = ProgressLR(opt, hp.scheduler, self._total_steps())
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        n, task = getattr(dm, "num_classes", None), getattr(dm, "task", "multiclass")
        if n is not None and n != self.hparams.num_classes:
            raise ZooUserError(f"model has num_classes={self.hparams.num_classes} but the data has {n} classes; "
                               "drop --model.num_classes (the CLI links it from the data)")
        if task != self.hparams.task:
            raise ZooUserError(f"model task '{self.hparams.task}' does not match the data's '{task}'; "
                               "drop --model.task (the CLI links it from the data)")
        if getattr(dm, "normalize", False):  # the CLI defaults it off (data_defaults); a user who forces it is told
            raise ZooUserError(f"{type(dm).__name__} normalises with the data set's mean/std, but {self.backbone_name} "
                               "normalises [0, 1] input itself: drop --data.normalize true (normalize=False)")

    # ---- test report and prediction -------------------------------------------------------------
    def on_test_epoch_start(self) -> None:
        self._test_outputs = []

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        out = self._shared_step(batch, "test")
        self._test_outputs.append((self.probabilities(out["logits"]).detach(), out["target"].detach()))
        return out

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if not self._test_outputs:
            return
        probs = torch.cat([p for p, _ in self._test_outputs])
        target = torch.cat([t for _, t in self._test_outputs])
        self._test_outputs = []
        if self.trainer.world_size > 1:
            probs, target = (self.all_gather(t).flatten(0, 1) for t in (probs, target))
        numbers, figures = classification_report(self.hparams.task, probs, target, self._class_names())
        for key, value in numbers.items():
            self.log(f"test/{key}", value, sync_dist=False, rank_zero_only=True)
        for name, fig in figures.items():
            log_figure(self.trainer, name, fig)

    def _class_names(self) -> list[str]:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        names = list(getattr(dm, "class_names", None) or [])
        if len(names) != self.hparams.num_classes:
            names = [str(i) for i in range(self.hparams.num_classes)]
        return names

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        x, items = (batch[0], batch[1]) if isinstance(batch, (list, tuple)) and len(batch) > 1 else (batch, None)
        names = list(items) if items is not None and not isinstance(items, torch.Tensor) else None  # file paths
        return {"probs": self.probabilities(self(x)).cpu(), "items": names}

    def write_predictions(self, predictions: list[Any], out_dir: Path, datamodule: Any) -> Path:
        """``predictions.csv``: one row per image with the predicted class (or labels) and probabilities."""
        names = [str(n) for n in (getattr(datamodule, "class_names", None) or range(self.hparams.num_classes))]
        probs = torch.cat([b["probs"] for b in predictions])
        items = [i for b in predictions for i in (b["items"] or [])]
        if len(items) != len(probs):  # in-memory data: the DataModule's file names, else row numbers
            known = list(getattr(datamodule, "predict_names", None) or [])
            items = known if len(known) == len(probs) else [str(i) for i in range(len(probs))]
        return write_class_predictions(Path(out_dir) / "predictions.csv", items, probs, names, self.hparams.task)
