"""Semi-supervised image classification: FixMatch, hard pseudo-labelling and Mean Teacher around a zoo image
backbone (the CNN of ``cnn`` or a torchvision/timm network as ``resnet`` builds it), with an EMA teacher
(``torch.optim.swa_utils.AveragedModel``) that also does the evaluation.

The image DataModule keeps ``--data.labelled_per_class`` labels per class and serves the rest of the
training split unlabelled beside them (``zoo/datamodules/semi_supervised.py``); the unlabelled images' true
labels ride along for the ``train/pseudo_acc`` monitor only and never reach a loss. Logged per epoch:
``train/sup_loss``, ``train/unsup_loss``, ``train/mask_rate`` (share of unlabelled images whose pseudo-label
confidence reaches ``threshold``) and ``train/pseudo_acc`` (accuracy of those pseudo-labels).

Usage:
    python train.py --model semi_supervised --data mnist --data-dir ../shared/data --data.labelled_per_class 10
    python train.py -c recipes/ssl_mnist_100_labels.yaml --data-dir ../shared/data

Example:
    >>> model = SemiSupervisedClassifier(num_classes=10, in_channels=1, image_size=28, method="fixmatch")
    >>> model(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""
from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn
from torch.optim.swa_utils import AveragedModel

from zoo.errors import ZooUserError
from zoo.models.base import ClassifierModule, OptimizerName, SchedulerName
from zoo.models.plots import ConfusionMatrixMixin

__all__ = ["SemiSupervisedClassifier", "ema_with_warmup"]

Method = Literal["fixmatch", "pseudo_label", "mean_teacher", "supervised"]
#: The unlabelled views each method asks the DataModule for (``supervised`` trains on the labels alone).
VIEWS: dict[str, tuple[str, ...]] = {"fixmatch": ("weak", "strong"), "pseudo_label": ("weak",),
                                     "mean_teacher": ("weak", "weak"), "supervised": ()}


def ema_with_warmup(decay: float) -> Any:
    """``AveragedModel`` ``multi_avg_fn``: EMA with decay ``min(decay, 1 - 1/(n+1))`` after ``n`` updates (so
    the teacher follows the student closely at first, as in Mean Teacher); integer buffers are copied."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor | int) -> None:
        d = min(decay, 1.0 - 1.0 / (int(n) + 1))
        if averaged and torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:
            for a, c in zip(averaged, current):
                a.copy_(c)

    return update


class _GreyToRGB(nn.Module):
    """A headless torchvision/timm network and a linear head; grey images are repeated to 3 channels."""

    def __init__(self, body: nn.Module, features: int, num_classes: int) -> None:
        super().__init__()
        self.body, self.head = body, nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x))


class SemiSupervisedClassifier(ConfusionMatrixMixin, ClassifierModule):
    """Semi-supervised classifier (FixMatch, pseudo-label, Mean Teacher) from a few labels plus unlabelled images.

    Args:
        num_classes / in_channels / image_size: filled in from the DataModule by the CLI.
        method: ``fixmatch`` (pseudo-labels from a weak view train the strong view), ``pseudo_label`` (hard
            pseudo-labels of the weak view train that view), ``mean_teacher`` (the student matches the EMA
            teacher's softmax on another weak view) or ``supervised`` (the labelled subset alone, the reference).
        backbone: ``cnn`` (the zoo's CNN with ``channels`` / ``hidden`` / ``dropout``) or ``resnet`` (the
            transfer backbone ``arch`` from scratch, stem reduced to ``stem_stride``).
        channels / hidden / dropout: CNN conv widths, hidden linear width and head dropout.
        arch / stem_stride: torchvision/timm network for ``resnet``; stem stride None picks 2 from 16 px, else 1.
        threshold: confidence a pseudo-label needs to count (fixmatch, pseudo_label; the mask-rate monitor).
        lambda_u: weight of the unlabelled loss (fixmatch, pseudo_label).
        mu: unlabelled images per labelled image in a step (unlabelled batch = mu x the data's batch size).
        consistency: Mean Teacher's consistency weight (MSE of the softmaxes) after the ramp-up.
        rampup_steps: sigmoid ramp-up of the unlabelled weight (mean_teacher, pseudo_label); 0 for none.
        ema_decay: decay of the EMA teacher (warmed up from 0); the teacher is Mean Teacher's target.
        eval_teacher: evaluate, predict and export with the EMA teacher instead of the student.
        select_on_val: pick the best checkpoint and stop early on ``val/acc`` (labels beyond the subset);
            off by default: the last (EMA) model is tested.
        optimizer / lr / weight_decay / momentum / scheduler: the optimisation recipe.
    """

    trainer_defaults = {"max_epochs": 20}
    #: The labels kept per class when the command line says nothing (a DataModule without them is refused).
    data_defaults = {"labelled_per_class": 10}

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        method: Method = "fixmatch",
        backbone: Literal["cnn", "resnet"] = "cnn",
        channels: tuple[int, ...] = (32, 64, 128),
        hidden: int = 128,
        dropout: float = 0.0,
        arch: str = "resnet18",
        stem_stride: int | None = None,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        mu: int = 7,
        consistency: float = 50.0,
        rampup_steps: int = 500,
        ema_decay: float = 0.999,
        eval_teacher: bool = True,
        select_on_val: bool = False,
        optimizer: OptimizerName = "adamw",
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        scheduler: SchedulerName = "cosine",
    ) -> None:
        super().__init__()
        if method not in VIEWS:
            raise ZooUserError(f"unknown method '{method}'; choose fixmatch, pseudo_label, mean_teacher or supervised")
        if backbone not in ("cnn", "resnet"):
            raise ZooUserError(f"unknown backbone '{backbone}'; choose cnn or resnet")
        if not 0.0 <= threshold <= 1.0 or not 0.0 <= ema_decay < 1.0 or mu < 1 or rampup_steps < 0:
            raise ZooUserError(f"need threshold in [0, 1] (got {threshold}), ema_decay in [0, 1) (got {ema_decay}), "
                               f"mu >= 1 (got {mu}) and rampup_steps >= 0 (got {rampup_steps})")
        self.save_hyperparameters()
        self.net = self._build_net(num_classes, in_channels, image_size)
        self.teacher = AveragedModel(self.net, multi_avg_fn=ema_with_warmup(ema_decay), use_buffers=True)
        self.unlabelled_views, self.unlabelled_ratio = VIEWS[method], mu  # read by the image DataModule
        self.monitor = "val/acc" if select_on_val else None
        self._init_metrics(num_classes)
        for name in ("sup_loss", "unsup_loss", "mask_rate", "pseudo_acc"):
            setattr(self, f"train_{name}", torchmetrics.MeanMetric())
        self.example_input_array = torch.zeros(1, in_channels, image_size, image_size)

    def _build_net(self, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        hp = self.hparams
        if hp.backbone == "cnn":
            from zoo.models.cnn import CNNClassifier

            cnn = CNNClassifier(num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                                channels=tuple(hp.channels), dropout=0.0, hidden=hp.hidden, head_dropout=hp.dropout)
            return nn.Sequential(cnn.features, cnn.head)
        from zoo.models.backbones import build_backbone

        stride = hp.stem_stride if hp.stem_stride is not None else 2 if image_size >= 16 else 1
        bb = build_backbone(hp.arch, stride)
        return _GreyToRGB(bb.module, bb.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.teacher if self.hparams.eval_teacher else self.net)(x)

    def train(self, mode: bool = True) -> "SemiSupervisedClassifier":
        """Like ``nn.Module.train``; the EMA teacher always stays in eval mode (its batch norm uses averaged stats)."""
        super().train(mode)
        self.teacher.train(False)
        return self

    def setup(self, stage: str) -> None:
        # The teacher is never trained: frozen while fitting (before DDP wraps the model, so it ignores these
        # parameters), differentiable otherwise (input-gradient tools such as --debug-stats' Grad-CAM).
        self.teacher.requires_grad_(stage != "fit")
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage != "fit" or dm is None:
            return
        if not hasattr(dm, "labelled_per_class"):
            raise ZooUserError(f"semi_supervised needs an in-memory image DataModule with --data.labelled_per_class "
                               f"(digits, mnist, fashion_mnist, cifar10); {type(dm).__name__} has none")
        if dm.labelled_per_class is None and self.unlabelled_views:
            raise ZooUserError("semi_supervised needs --data.labelled_per_class N: the labels kept per class (the "
                               "rest of the training images are unlabelled)")

    def param_groups(self) -> list[torch.nn.Parameter]:
        return [p for p in self.net.parameters() if p.requires_grad]

    def unsup_weight(self) -> float:
        """The unlabelled loss weight now: ``lambda_u`` (FixMatch), else ramped up over ``rampup_steps``."""
        hp = self.hparams
        base = hp.consistency if hp.method == "mean_teacher" else hp.lambda_u
        if hp.method == "fixmatch" or hp.rampup_steps == 0:
            return base
        t = min(self.global_step / hp.rampup_steps, 1.0)
        return base * math.exp(-5.0 * (1.0 - t) ** 2)

    def _monitor(self, probs: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """Confidence mask of the pseudo-labels; updates the mask rate and the (hidden-label) pseudo-label accuracy."""
        conf, pseudo = probs.max(dim=1)
        mask = conf >= self.hparams.threshold
        self.train_mask_rate.update(mask.float().mean(), weight=len(mask))
        if mask.any():  # monitoring only: `hidden` never enters a loss
            self.train_pseudo_acc.update((pseudo[mask] == hidden[mask]).float().mean(), weight=int(mask.sum()))
        return mask

    def _unsupervised(self, x_l: torch.Tensor, views: list[torch.Tensor],
                      hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(labelled logits, unlabelled loss) of one step."""
        method, n = self.hparams.method, len(x_l)
        if method == "fixmatch":
            weak, strong = views
            with torch.no_grad():
                probs = self.net(weak).softmax(dim=1)
            mask = self._monitor(probs, hidden)
            logits = self.net(torch.cat([x_l, strong]))
            per_sample = F.cross_entropy(logits[n:], probs.argmax(dim=1), reduction="none")
            return logits[:n], (per_sample * mask).mean()
        if method == "pseudo_label":
            logits = self.net(torch.cat([x_l, views[0]]))
            probs = logits[n:].detach().softmax(dim=1)
            mask = self._monitor(probs, hidden)
            per_sample = F.cross_entropy(logits[n:], probs.argmax(dim=1), reduction="none")
            return logits[:n], (per_sample * mask).mean()
        student_view, teacher_view = views  # mean_teacher
        with torch.no_grad():
            target = self.teacher(teacher_view).softmax(dim=1)
        self._monitor(target, hidden)
        logits = self.net(torch.cat([x_l, student_view]))
        return logits[:n], F.mse_loss(logits[n:].softmax(dim=1), target)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        labelled = batch["labelled"] if isinstance(batch, dict) else batch
        x_l, y_l = labelled
        if isinstance(batch, dict) and self.unlabelled_views:
            *views, hidden = batch["unlabelled"]
            logits, unsup = self._unsupervised(x_l, list(views), hidden)
        else:
            logits, unsup = self.net(x_l), torch.zeros((), device=x_l.device)
        sup = self.criterion(logits, y_l)
        loss = sup + self.unsup_weight() * unsup
        self.train_sup_loss.update(sup.detach(), weight=len(y_l))
        self.train_unsup_loss.update(unsup.detach(), weight=len(y_l))
        self._log_step("train", loss, logits.argmax(dim=-1), y_l)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.teacher.update_parameters(self.net)

    def on_train_end(self) -> None:
        self.teacher.requires_grad_(True)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        for name in ("sup_loss", "unsup_loss", "mask_rate", "pseudo_acc"):
            metric = getattr(self, f"train_{name}")
            if metric.update_count:
                self.log(f"train/{name}", metric, prog_bar=name == "mask_rate")
