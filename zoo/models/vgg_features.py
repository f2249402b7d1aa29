"""Frozen VGG feature extractor, Gram matrices and the perceptual losses of neural style transfer.

Shared by ``style_transfer`` (Gatys et al. 2016) and ``fast_style`` (Johnson et al. 2016).
Layers are named like the papers: ``conv3_2``, ``relu4_1``, ``pool2``; ``vgg_layer_names("vgg19")``
lists them in ``features`` order. Weights follow ``--model.pretrained auto|true|false`` and
``--model.weights PATH`` (zoo.pretrained); without ImageNet weights the features are random but
seeded (fixed seed 0), so a rerun or a resumed run sees the same "random VGG".

Example:
    >>> loss = PerceptualLoss("vgg16", content_layers=("relu2_2",), style_layers=("relu1_2", "relu2_2"),
    ...                       pretrained="false")
    >>> x = torch.rand(1, 3, 32, 32)
    >>> out = loss(x, loss.content_targets(x), loss.style_targets(x))
    >>> float(out["style_loss"]), float(out["content_loss"])
    (0.0, 0.0)
"""
from __future__ import annotations

import difflib
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.artifacts import log_figure, log_image
from zoo.errors import ZooUserError
from zoo.pretrained import Pretrained, load_matching, resolve_weights, torchvision_state_dict

__all__ = ["vgg_layer_names", "VGGFeatures", "gram_matrix", "total_variation", "PerceptualLoss",
           "FrozenLossNetCheckpointMixin", "style_panel", "log_style_outputs"]

VGGArch = Literal["vgg16", "vgg19"]
#: torchvision's VGG ``features`` configurations (numbers: conv output channels, "M": max-pool).
VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_arch(arch: str) -> list[int | str]:
    if arch not in VGG_CONFIGS:
        raise ZooUserError(f"unknown VGG arch '{arch}'; choose {' or '.join(VGG_CONFIGS)}")
    return VGG_CONFIGS[arch]


def vgg_layer_names(arch: str) -> list[str]:
    """Names of ``torchvision.models.<arch>().features`` modules by index: conv1_1, relu1_1, ..., pool5."""
    names, block, i = [], 1, 1
    for v in _check_arch(arch):
        if v == "M":
            names.append(f"pool{block}")
            block, i = block + 1, 1
        else:
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
            i += 1
    return names


def _hub_features(arch: str) -> dict[str, torch.Tensor]:
    import torchvision

    return torchvision_state_dict(torchvision.models.get_weight(f"{arch.upper()}_Weights.IMAGENET1K_V1"))


def _features_only(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of the conv stack from a torchvision VGG, a zoo checkpoint or a bare ``features`` state dict."""
    for prefix in ("loss_net.vgg.features.", "vgg.features.", "features."):
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


class VGGFeatures(nn.Module):
    """Frozen VGG16/19 conv stack (ImageNet-normalising its [0, 1] input) returning the named layers.

    ``pretrained`` tells whether ImageNet (or user-file) weights were loaded; False means random
    features (seeded), which still synthesise textures but do not give the papers' look.
    """

    def __init__(self, arch: VGGArch = "vgg19", layers: Sequence[str] = ("relu4_2",), pretrained: Pretrained = "auto",
                 weights: str | None = None, pooling: Literal["max", "avg"] = "max") -> None:
        super().__init__()
        names = vgg_layer_names(arch)
        if not layers:
            raise ZooUserError("no VGG layers given; name at least one, e.g. relu4_2")
        for name in layers:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
                raise ZooUserError(f"{arch} has no layer '{name}'; did you mean {', '.join(close) or names[1]}? "
                                   f"(names look like conv4_2, relu3_1, pool2)")
        if pooling not in ("max", "avg"):
            raise ZooUserError(f"pooling must be max or avg, got '{pooling}'")
        mods: list[nn.Module] = []
        c_in = 3
        for v in VGG_CONFIGS[arch]:
            if v == "M":
                mods.append(nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2))
            else:
                mods += [nn.Conv2d(c_in, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                c_in = int(v)
        self.features = nn.Sequential(*mods)
        with torch.random.fork_rng(devices=[]):  # seeded random features, global RNG untouched
            torch.manual_seed(0)
            for m in self.features:
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)
        state = resolve_weights(pretrained, weights, lambda: _hub_features(arch), f"{arch} (style-transfer features)")
        if state is not None:
            load_matching(self.features, _features_only(state), f"{arch}.features")
        self.pretrained = state is not None
        self.index = {name: names.index(name) for name in layers}
        self.features = self.features[: max(self.index.values()) + 1]  # nothing deeper is ever needed
        self.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        wanted = {i: name for name, i in self.index.items()}
        out, h = {}, (x - self.mean) / self.std
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in wanted:
                out[wanted[i]] = h
        return out


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C) Gram matrix of channel correlations, divided by C*H*W."""
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between vertically and horizontally neighbouring pixels."""
    return (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean() + (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()


class PerceptualLoss(nn.Module):
    """content_weight * content + style_weight * style (Gram) + tv_weight * total variation.

    ``style_loss`` is the sum over style layers of ``w_l * MSE(G(x), G(style))`` (``w_l`` default
    1/L), ``content_loss`` the sum over content layers of the feature MSE; both are reported unweighted.
    """

    def __init__(self, arch: VGGArch = "vgg19", content_layers: Sequence[str] = ("relu4_2",),
                 style_layers: Sequence[str] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
                 style_layer_weights: Sequence[float] | None = None, content_weight: float = 1.0,
                 style_weight: float = 1e6, tv_weight: float = 0.0, pretrained: Pretrained = "auto",
                 weights: str | None = None, pooling: Literal["max", "avg"] = "max") -> None:
        super().__init__()
        if not style_layers:
            raise ZooUserError("style_layers is empty; name at least one VGG layer, e.g. relu1_1")
        lw = list(style_layer_weights) if style_layer_weights else [1.0 / len(style_layers)] * len(style_layers)
        if len(lw) != len(style_layers):
            raise ZooUserError(f"style_layer_weights has {len(lw)} values for {len(style_layers)} style layers; "
                               f"give one weight per layer")
        if min(content_weight, style_weight, tv_weight, *lw) < 0:
            raise ZooUserError("loss weights must be >= 0")
        self.content_layers, self.style_layers, self.layer_weights = list(content_layers), list(style_layers), lw
        self.content_weight, self.style_weight, self.tv_weight = content_weight, style_weight, tv_weight
        layers = list(dict.fromkeys([*self.content_layers, *self.style_layers]))
        self.vgg = VGGFeatures(arch, layers, pretrained, weights, pooling)

    @torch.no_grad()
    def content_targets(self, content: torch.Tensor) -> list[torch.Tensor]:
        feats = self.vgg(content)
        return [feats[name].detach() for name in self.content_layers]

    @torch.no_grad()
    def style_targets(self, style: torch.Tensor) -> list[torch.Tensor]:
        feats = self.vgg(style)
        return [gram_matrix(feats[name]).detach() for name in self.style_layers]

    def forward(self, x: torch.Tensor, content_targets: Sequence[torch.Tensor],
                style_targets: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        feats = self.vgg(x)
        content = sum(F.mse_loss(feats[n], t) for n, t in zip(self.content_layers, content_targets))
        style = sum(w * F.mse_loss(gram_matrix(feats[n]), g.expand(x.shape[0], -1, -1))
                    for n, g, w in zip(self.style_layers, style_targets, self.layer_weights))
        tv = total_variation(x)
        total = self.content_weight * content + self.style_weight * style + self.tv_weight * tv
        return {"loss": total, "content_loss": content, "style_loss": style, "tv_loss": tv}


class FrozenLossNetCheckpointMixin:
    """Keeps the frozen VGG (``self.loss_net.vgg``, rebuilt from the hparams) out of checkpoints.

    Saves ~80 MB per checkpoint; on load the current VGG's tensors are put back so loading stays strict.
    """

    _frozen_prefix = "loss_net.vgg."

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if not k.startswith(self._frozen_prefix)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        own = {self._frozen_prefix + k: v for k, v in self.loss_net.vgg.state_dict().items()}
        checkpoint["state_dict"] = {**own, **checkpoint["state_dict"]}


def style_panel(content: torch.Tensor, style: torch.Tensor, result: torch.Tensor, pretrained: bool,
                title: str = "") -> Any:
    """A matplotlib figure content | style | result; its title says whether the VGG features were random."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = [t.detach().float().cpu().clamp(0, 1)[0].permute(1, 2, 0).numpy() for t in (content, style, result)]
    height = 3.2
    widths = [height * im.shape[1] / im.shape[0] for im in images]
    fig, axes = plt.subplots(1, 3, figsize=(sum(widths), height + 0.7), dpi=100,
                             gridspec_kw={"width_ratios": widths})
    for ax, im, name in zip(axes, images, ("content", "style", "result")):
        ax.imshow(im)
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    features = ("ImageNet VGG features" if pretrained
                else "RANDOM VGG features (no pretrained weights: not the paper's look)")
    fig.suptitle(f"{title} - {features}" if title else features, fontsize=9, color="black" if pretrained else "red")
    fig.tight_layout()
    return fig


def log_style_outputs(trainer: Any, name: str, content: torch.Tensor, style: torch.Tensor, result: torch.Tensor,
                      pretrained: bool, title: str = "") -> None:
    """Save ``<name>`` (the result) and ``<name>_panel`` (content | style | result) PNGs via zoo.artifacts."""
    log_image(trainer, name, result.detach()[0].clamp(0, 1))
    log_figure(trainer, f"{name}_panel", style_panel(content, style, result, pretrained, title))
