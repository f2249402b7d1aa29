"""Configurable convolutional classifier: conv blocks -> global pooling -> linear head.

Example:
    >>> from zoo.models import CNNClassifier
    >>> model = CNNClassifier(num_classes=10, in_channels=1, image_size=28)
    >>> model(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from zoo.errors import ZooUserError
from zoo.models.base import ClassifierModule, OptimizerName, SchedulerName
from zoo.models.plots import ConfusionMatrixMixin

__all__ = ["CNNClassifier"]


def check_conv_classifier(num_classes: int, kernel_size: int) -> None:
    """The constructor checks every conv classifier built from :func:`conv_block` shares (one-line errors)."""
    if num_classes < 2:
        raise ZooUserError(f"num_classes must be >= 2, got {num_classes}")
    if kernel_size % 2 == 0 or kernel_size < 1:
        raise ZooUserError(f"kernel_size must be odd and positive, got {kernel_size}")


def conv_block(c_in: int, c_out: int, kernel: int, batch_norm: bool, pool: str, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU(inplace=True))
    if pool == "max":
        layers.append(nn.MaxPool2d(2))
    elif pool == "avg":
        layers.append(nn.AvgPool2d(2))
    if dropout > 0:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


class CNNClassifier(ConfusionMatrixMixin, ClassifierModule):
    """CNN image classifier (conv blocks, batch norm, dropout, pooling) with accuracy and macro-F1.

    Args:
        num_classes / in_channels / image_size: filled in from the DataModule by the CLI.
        channels: output channels of each conv block; a block pools (halves the size) while the
            feature map is larger than 4x4.
        kernel_size: conv kernel size (odd).
        batch_norm / dropout / pool: per-block options (``pool`` is ``max``, ``avg`` or ``none``).
        hidden: width of the hidden linear layer before the classifier (0 for none).
        head_dropout: dropout after the hidden linear layer.
        global_pool: average-pool the last feature map (size-independent head) instead of flattening it.
        init: ``kaiming`` or ``xavier`` weight initialisation.
        optimizer / lr / weight_decay / momentum / scheduler: the optimisation recipe.
        label_smoothing: cross-entropy label smoothing.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        channels: tuple[int, ...] = (32, 64, 128),
        kernel_size: int = 3,
        batch_norm: bool = True,
        dropout: float = 0.1,
        pool: Literal["max", "avg", "none"] = "max",
        hidden: int = 128,
        head_dropout: float = 0.3,
        global_pool: bool = False,
        init: Literal["kaiming", "xavier"] = "kaiming",
        optimizer: OptimizerName = "adamw",
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        scheduler: SchedulerName = "onecycle",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        check_conv_classifier(num_classes, kernel_size)
        if not channels or min(channels) < 1 or not 0 <= dropout < 1:
            raise ZooUserError("channels must be positive widths and dropout in [0, 1), "
                               f"got channels {list(channels)}, dropout {dropout}")
        self.save_hyperparameters()
        blocks, c_in, size = [], in_channels, image_size
        for c_out in channels:
            block_pool = pool if size >= 8 else "none"
            blocks.append(conv_block(c_in, c_out, kernel_size, batch_norm, block_pool, dropout))
            c_in, size = c_out, size // 2 if block_pool != "none" else size
        head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1)] if global_pool else []
        features = c_in if global_pool else c_in * size * size
        head.append(nn.Flatten())
        if hidden:
            head += [nn.Linear(features, hidden), nn.ReLU(inplace=True), nn.Dropout(head_dropout)]
        head.append(nn.Linear(hidden or features, num_classes))
        self.features, self.head = nn.Sequential(*blocks), nn.Sequential(*head)
        self._init_weights(init)
        self._init_metrics(num_classes, label_smoothing)
        self.example_input_array = torch.zeros(1, in_channels, image_size, image_size)

    def _init_weights(self, init: str) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if init == "kaiming":
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                elif init == "xavier":
                    nn.init.xavier_uniform_(m.weight)
                else:
                    raise ZooUserError(f"unknown init '{init}'; choose kaiming or xavier")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
