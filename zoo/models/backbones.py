"""Feature extractors for transfer learning: any torchvision classification model or any timm model.

``build_backbone`` returns the network without its classifier (so it maps images to a feature
vector), the feature width, the pretrained normalisation, the hub loader for its weights and the
parameter stages (input to output) used for discriminative learning rates. Names are looked up in
torchvision first, then timm; ``timm:NAME`` or ``torchvision:NAME`` forces the library.

Example:
    >>> bb = build_backbone("resnet18", stem_stride=2)
    >>> bb.num_features, bb.source, len(bb.stages)
    (512, 'torchvision', 5)
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from zoo.errors import ZooUserError
from zoo.pretrained import torchvision_state_dict

__all__ = ["Backbone", "build_backbone", "adapt_stem"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class Backbone:
    """A headless network: ``module(x)`` has shape (N, ``num_features``)."""

    module: nn.Module
    num_features: int
    source: str
    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    load_hub: Callable[[], dict[str, torch.Tensor]]
    head_prefix: str = ""  # state-dict prefix of the classifier that was removed ("fc.")
    stages: list[list[str]] = field(default_factory=list)  # parameter names, input -> output

    def clean_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Backbone tensors of a zoo checkpoint or of a full torchvision/timm state dict."""
        if any(k.startswith("backbone.") for k in state):
            return {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        if self.head_prefix:
            return {k: v for k, v in state.items() if not k.startswith(self.head_prefix)}
        return state


def _torchvision_names() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _resolve(name: str) -> tuple[str, str]:
    """(library, model name) for a backbone name, or a user error listing close matches."""
    source, _, rest = name.partition(":")
    if rest and source in ("timm", "torchvision"):
        name = rest
    else:
        source = ""
    tv_names = _torchvision_names()
    if source in ("", "torchvision") and name in tv_names:
        return "torchvision", name
    import timm

    if source in ("", "timm") and timm.is_model(name):
        return "timm", name
    known = (tv_names if source == "torchvision" else timm.list_models() if source == "timm"
             else tv_names + timm.list_models())
    close = difflib.get_close_matches(name, known, n=4, cutoff=0.6)
    hint = (f"did you mean {', '.join(close)}?" if close
            else "see torchvision.models.list_models() or timm.list_models()")
    raise ZooUserError(f"unknown backbone '{name}'; {hint}")


def _group_children(module: nn.Module, prefix: str = "") -> list[list[str]]:
    """Parameter names grouped by top-level child; consecutive leaf layers (conv1, bn1) form one group."""
    kids = [(n, c) for n, c in module.named_children() if any(True for _ in c.parameters())]
    if len(kids) == 1 and any(True for _ in kids[0][1].children()):
        return _group_children(kids[0][1], f"{prefix}{kids[0][0]}.")
    groups: list[list[str]] = []
    last_leaf = False
    for name, child in kids:
        names = [f"{prefix}{name}.{p}" for p, _ in child.named_parameters()]
        leaf = not any(True for _ in child.children())
        if leaf and last_leaf:
            groups[-1].extend(names)
        else:
            groups.append(names)
        last_leaf = leaf
    return groups


def _torchvision(name: str) -> Backbone:
    import torchvision

    net = torchvision.models.get_model(name, weights=None)
    if getattr(net, "aux_logits", False):
        raise ZooUserError(f"backbone '{name}' has auxiliary classifiers, which are not supported; pick another")
    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ZooUserError(f"backbone '{name}' has no linear classifier to replace; pick another backbone")
    head_name, head = linears[-1]
    net.set_submodule(head_name, nn.Identity())
    try:
        weights_enum = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError):
        weights_enum = None
    prep = weights_enum.transforms() if weights_enum is not None else None
    mean = tuple(getattr(prep, "mean", IMAGENET_MEAN))
    std = tuple(getattr(prep, "std", IMAGENET_STD))
    prefix = f"{head_name}."

    def load_hub() -> dict[str, torch.Tensor]:
        if weights_enum is None:
            raise ValueError(f"torchvision has no pretrained weights for {name}")
        state = torchvision_state_dict(weights_enum)
        return {k: v for k, v in state.items() if not k.startswith(prefix)}

    return Backbone(net, head.in_features, "torchvision", name, mean, std, load_hub, prefix, _group_children(net))


def _timm(name: str) -> Backbone:
    import timm
    from timm.models import group_parameters

    net = timm.create_model(name, pretrained=False, num_classes=0)
    cfg = dict(getattr(net, "pretrained_cfg", {}) or {})
    classifier = cfg.get("classifier")
    prefix = f"{classifier}." if isinstance(classifier, str) else ""
    try:
        groups = group_parameters(net, net.group_matcher(coarse=True))
        stages = [list(v) for _, v in sorted(groups.items())]
    except (AttributeError, NotImplementedError):
        stages = _group_children(net)

    def load_hub() -> dict[str, torch.Tensor]:
        return timm.create_model(name, pretrained=True, num_classes=0).state_dict()

    return Backbone(net, net.num_features, "timm", name, tuple(cfg.get("mean", IMAGENET_MEAN)),
                    tuple(cfg.get("std", IMAGENET_STD)), load_hub, prefix, stages)


def adapt_stem(net: nn.Module, stem_stride: int) -> None:
    """Reduce the stem's down-sampling to ``stem_stride`` (1, 2 or 4) for small images.

    The stem's max-pool (if any, e.g. ResNet ``maxpool``, DenseNet ``pool0``) becomes the identity
    first, then the first strided convolution gets stride 1. Weights keep their shapes, so
    pretrained state dicts still load.
    """
    if stem_stride not in (1, 2, 4):
        raise ZooUserError(f"stem_stride must be 1, 2 or 4, got {stem_stride}")
    leaves = [(n, m) for n, m in net.named_modules() if not any(True for _ in m.children())][:8]
    conv = next((m for _, m in leaves if isinstance(m, nn.Conv2d) and m.stride[0] > 1), None)
    pool = next(((n, m) for n, m in leaves if isinstance(m, nn.MaxPool2d)), None)
    pool_stride = 1
    if pool is not None:
        pool_stride = pool[1].stride if isinstance(pool[1].stride, int) else pool[1].stride[0]
    native = (conv.stride[0] if conv is not None else 1) * pool_stride
    if stem_stride >= native:
        return
    if pool is not None:
        net.set_submodule(pool[0], nn.Identity())
        native //= pool_stride
    if conv is not None and stem_stride < native:
        conv.stride = (stem_stride, stem_stride)


def build_backbone(name: str, stem_stride: int = 4) -> Backbone:
    """A headless torchvision or timm network with its stem reduced to ``stem_stride``."""
    source, model_name = _resolve(name)
    bb = _torchvision(model_name) if source == "torchvision" else _timm(model_name)
    adapt_stem(bb.module, stem_stride)
    return bb
