"""Freeze-then-unfreeze fine-tuning with batch norm kept frozen and discriminative learning rates.

Lightning's ``BackboneFinetuning`` freezes ``pl_module.backbone`` but leaves its batch-norm layers
in training mode (they then normalise with batch statistics). This variant keeps every frozen
batch-norm layer in eval mode (running statistics used and left untouched), and on unfreezing adds
one optimizer parameter group per backbone stage with the learning rates the model asks for
(``pl_module.backbone_param_groups()``), scaled to where the LR schedule currently is.

Example:
    >>> trainer = L.Trainer(callbacks=[BackboneFreezeUnfreeze(unfreeze_at_epoch=2)])  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.optim import Optimizer

__all__ = ["BackboneFreezeUnfreeze", "apply_frozen_bn_eval"]


def apply_frozen_bn_eval(module: nn.Module) -> None:
    """Put batch-norm layers whose parameters are all frozen into eval mode (others untouched)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()


class BackboneFreezeUnfreeze(BaseFinetuning):
    """Train only the head for ``unfreeze_at_epoch`` epochs, then the whole network.

    Args:
        unfreeze_at_epoch: first epoch (0-based) in which the backbone trains.
        backbone_lr_ratio: backbone LR relative to the head's initial LR, used only when the model
            has no ``backbone_param_groups()`` method.
    """

    def __init__(self, unfreeze_at_epoch: int = 1, backbone_lr_ratio: float = 0.1) -> None:
        super().__init__()
        self.unfreeze_at_epoch, self.backbone_lr_ratio = unfreeze_at_epoch, backbone_lr_ratio

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self.freeze(pl_module.backbone, train_bn=False)
        apply_frozen_bn_eval(pl_module.backbone)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        restarting = self._restarting
        super().on_fit_start(trainer, pl_module)
        if restarting and trainer.current_epoch >= self.unfreeze_at_epoch:  # resumed after unfreezing
            self.make_trainable(pl_module.backbone)
            pl_module.backbone.train(pl_module.training)

    def _groups(self, pl_module: L.LightningModule, head_lr: float) -> list[dict[str, Any]]:
        if hasattr(pl_module, "backbone_param_groups"):
            return pl_module.backbone_param_groups()
        return [{"params": list(pl_module.backbone.parameters()), "lr": head_lr * self.backbone_lr_ratio}]

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        if epoch != self.unfreeze_at_epoch:
            return
        head = optimizer.param_groups[0]
        initial = head.get("initial_lr", head["lr"])
        scale = head["lr"] / initial if initial else 1.0  # where the schedule is now
        groups = self._groups(pl_module, initial)
        self.make_trainable(pl_module.backbone)
        present = {id(p) for g in optimizer.param_groups for p in g["params"]}  # by identity, not value
        for group in groups:
            params = [p for p in group["params"] if id(p) not in present]
            if params:
                optimizer.add_param_group({"params": params, "lr": group["lr"] * scale, "initial_lr": group["lr"]})
        pl_module.backbone.train(pl_module.training)
