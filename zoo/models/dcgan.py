"""DCGAN building blocks shared by the GAN and the convolutional autoencoder: a generator/decoder
(latent -> image), a discriminator/encoder (image -> vector), an MLP and the DCGAN weight init.

The stride-2 layers build sizes ``b * 2**k`` with ``b`` in 3..7 and ``k >= 1`` (6, 8, 12, 14, 16,
28, 32, 64, ...); :func:`dcgan_plan` says which sizes work.

Example:
    >>> g = DCGANGenerator(latent_dim=64, out_channels=1, image_size=28)
    >>> g(torch.randn(2, 64)).shape
    torch.Size([2, 1, 28, 28])
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

from zoo.errors import ZooUserError

__all__ = ["dcgan_plan", "DCGANGenerator", "DCGANDiscriminator", "mlp", "dcgan_init", "check_latent_dim"]

Norm = Literal["batch", "layer", "spectral", "none"]


def check_latent_dim(latent_dim: int) -> None:
    if latent_dim <= 0:
        raise ZooUserError(f"latent_dim must be positive, got {latent_dim}; e.g. --model.latent_dim 32")


def dcgan_plan(image_size: int) -> tuple[int, int]:
    """(base size, number of stride-2 layers) for ``image_size``, or a user error listing valid sizes."""
    base, n_up = image_size, 0
    while base % 2 == 0 and base // 2 >= 3:
        base, n_up = base // 2, n_up + 1
    if n_up == 0 or not 3 <= base <= 7:
        raise ZooUserError(
            f"image_size {image_size} cannot be built by DCGAN's stride-2 layers: it must be b*2^k with b in 3..7 "
            f"and k >= 1 (e.g. 8, 16, 28, 32, 64); resize with --data.image_size 32")
    return base, n_up


def dcgan_init(module: nn.Module) -> None:
    """DCGAN paper init: conv/linear weights N(0, 0.02), norm scales N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _norm(kind: Norm, channels: int) -> list[nn.Module]:
    if kind == "batch":
        return [nn.BatchNorm2d(channels)]
    if kind == "layer":  # LayerNorm over C,H,W (valid with a gradient penalty, unlike batch norm)
        return [nn.GroupNorm(1, channels)]
    if kind in ("spectral", "none"):
        return []
    raise ZooUserError(f"unknown norm '{kind}'; choose batch, layer, spectral or none")


def _wrap(layer: nn.Module, kind: Norm) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(layer) if kind == "spectral" else layer


class DCGANGenerator(nn.Module):
    """Latent vector -> image: linear projection to ``b x b``, ``k`` stride-2 transposed convs
    (batch norm + ReLU, halving channels), then a 3x3 conv to ``out_channels`` (tanh or linear)."""

    def __init__(self, latent_dim: int, out_channels: int, image_size: int, width: int = 64,
                 out_activation: Literal["tanh", "none"] = "tanh") -> None:
        super().__init__()
        check_latent_dim(latent_dim)
        base, n_up = dcgan_plan(image_size)
        c = width * 2**n_up
        layers: list[nn.Module] = [nn.Linear(latent_dim, c * base * base, bias=False), nn.Unflatten(1, (c, base, base)),
                                   nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        for _ in range(n_up):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2),
                       nn.ReLU(inplace=True)]
            c //= 2
        layers.append(nn.Conv2d(c, out_channels, 3, padding=1))
        if out_activation == "tanh":
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class DCGANDiscriminator(nn.Module):
    """Image -> ``out_features`` vector: a 3x3 conv (no norm), ``k`` stride-2 convs (norm + LeakyReLU 0.2,
    doubling channels), then a linear layer. Also the encoder of the convolutional autoencoder."""

    def __init__(self, in_channels: int, image_size: int, width: int = 64, norm: Norm = "batch",
                 out_features: int = 1) -> None:
        super().__init__()
        base, n_down = dcgan_plan(image_size)
        c = width
        layers: list[nn.Module] = [_wrap(nn.Conv2d(in_channels, c, 3, padding=1), norm),
                                   nn.LeakyReLU(0.2, inplace=True)]
        for _ in range(n_down):
            layers += [_wrap(nn.Conv2d(c, 2 * c, 4, 2, 1, bias=norm != "batch"), norm), *_norm(norm, 2 * c),
                       nn.LeakyReLU(0.2, inplace=True)]
            c *= 2
        layers += [nn.Flatten(), _wrap(nn.Linear(c * base * base, out_features), norm)]
        self.net = nn.Sequential(*layers)
        if norm != "spectral":  # spectral norm rescales the weights anyway
            dcgan_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def mlp(in_features: int, hidden: Sequence[int], out_features: int, activation: Literal["relu", "leaky_relu"] = "relu",
        out_activation: nn.Module | None = None) -> nn.Sequential:
    """A plain MLP: Linear + activation per hidden width, then a linear output layer."""
    layers: list[nn.Module] = []
    for width in hidden:
        act = nn.ReLU(inplace=True) if activation == "relu" else nn.LeakyReLU(0.2, inplace=True)
        layers += [nn.Linear(in_features, width), act]
        in_features = width
    layers.append(nn.Linear(in_features, out_features))
    if out_activation is not None:
        layers.append(out_activation)
    return nn.Sequential(*layers)
