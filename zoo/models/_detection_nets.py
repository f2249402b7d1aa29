"""torchvision detectors assembled for :mod:`zoo.models.detector`: any supported backbone under Faster R-CNN,
RetinaNet, FCOS or SSDlite, with anchors and input sizes of the caller's choosing, plus the figures it logs.

Example:
    >>> net = build_detector("fcos", "resnet18", num_classes=11, min_size=64, max_size=64)
    >>> net.eval()(list(torch.rand(1, 3, 64, 64)))[0]["boxes"].shape[1]
    4
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

import torch
from torch import nn

from zoo.errors import ZooUserError

ARCHS = ("fasterrcnn", "retinanet", "fcos", "ssdlite")
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v3_large")
#: Keys of each arch's loss dict (training mode).
LOSS_KEYS = {"fasterrcnn": ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"),
             "retinanet": ("classification", "bbox_regression"),
             "fcos": ("classification", "bbox_regression", "bbox_ctrness"),
             "ssdlite": ("bbox_regression", "classification")}


def _norm_layer(norm: str) -> Callable[..., nn.Module]:
    from torchvision.ops import FrozenBatchNorm2d

    if norm == "frozen":
        return FrozenBatchNorm2d
    if norm == "batch":
        return nn.BatchNorm2d
    raise ZooUserError(f"unknown norm '{norm}'; choose batch (training from scratch) or frozen (pretrained weights)")


def backbone_classifier(backbone: str, norm: str) -> nn.Module:
    """The torchvision classification network whose feature layers the detector uses (random weights)."""
    import torchvision

    if backbone not in BACKBONES:
        import difflib

        close = difflib.get_close_matches(backbone, BACKBONES, n=2, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"choose one of {', '.join(BACKBONES)}"
        raise ZooUserError(f"unknown detection backbone '{backbone}'; {hint}")
    norm_layer = _norm_layer(norm)
    if backbone.startswith("mobilenet"):
        return torchvision.models.mobilenet_v3_large(weights=None, norm_layer=norm_layer)
    return torchvision.models.get_model(backbone, weights=None, norm_layer=norm_layer)


def backbone_hub_state(backbone: str) -> dict[str, torch.Tensor]:
    """ImageNet weights of the backbone from the torch hub cache (downloads only when online, see
    :func:`zoo.pretrained.torchvision_state_dict`)."""
    import torchvision

    from zoo.pretrained import torchvision_state_dict

    return torchvision_state_dict(torchvision.models.get_model_weights(backbone).DEFAULT)


def _levels(body: nn.Module, size: int = 64) -> int:
    """Feature maps the backbone returns (eval mode for the probe; left in training mode)."""
    with torch.no_grad():
        levels = len(body.eval()(torch.zeros(1, 3, size, size)))
    body.train()
    return levels


def _anchors(sizes: tuple[int, ...] | None, default: tuple[int, ...], ratios: tuple[float, ...], levels: int,
             octaves: bool) -> Any:
    """An AnchorGenerator: one size per level when ``sizes`` has one per level, else every size on every level;
    ``octaves`` adds RetinaNet's 2^(1/3), 2^(2/3) scales of each size."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    sizes = tuple(sizes or default)
    per_level = [(s,) for s in sizes] if len(sizes) == levels else [tuple(sizes)] * levels
    if octaves:
        per_level = [tuple(int(s * 2 ** (k / 3)) for s in lvl for k in range(3)) for lvl in per_level]
    return AnchorGenerator(tuple(per_level), (tuple(ratios),) * levels)


def build_detector(arch: str, backbone: str, num_classes: int, min_size: int, max_size: int,
                   anchor_sizes: tuple[int, ...] | None = None, aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
                   proposals: int = 1000, rois_per_image: int = 512, score_thresh: float = 0.05,
                   nms_thresh: float = 0.5, detections_per_img: int = 100, norm: str = "batch",
                   backbone_state: dict[str, torch.Tensor] | None = None, trainable_layers: int = 5,
                   fpn_channels: int = 256, box_head_dim: int = 1024) -> nn.Module:
    """A torchvision detector with ``num_classes`` outputs (background included) on ``backbone``; ``backbone_state``
    (a classification state dict, e.g. ImageNet weights) is loaded into the backbone before it is cut."""
    from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
    from torchvision.models.detection.backbone_utils import _mobilenet_extractor, _resnet_fpn_extractor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    if arch not in ARCHS:
        raise ZooUserError(f"unknown detection arch '{arch}'; choose {', '.join(ARCHS)}")
    if arch == "ssdlite" and backbone != "mobilenet_v3_large":
        raise ZooUserError(f"ssdlite runs on mobilenet_v3_large only, not '{backbone}'; pass --model.backbone "
                           "mobilenet_v3_large or another arch")
    net = backbone_classifier(backbone, norm)
    if backbone_state is not None:
        from zoo.pretrained import load_matching

        own = net.state_dict()
        load_matching(net, {k: v for k, v in backbone_state.items() if k in own}, f"backbone {backbone}", strict=False)
    mobile = backbone.startswith("mobilenet")
    common = dict(min_size=min_size, max_size=max_size, score_thresh=score_thresh, nms_thresh=nms_thresh,
                  detections_per_img=detections_per_img)
    if arch == "ssdlite":
        return _ssdlite(net, num_classes, min_size, norm, common)
    one_stage = arch in ("retinanet", "fcos")
    extra = LastLevelP6P7(256, 256) if one_stage else None
    if mobile:
        body = _mobilenet_extractor(net, True, min(trainable_layers, 6), extra_blocks=extra)
    else:
        body = _resnet_fpn_extractor(net, min(trainable_layers, 5), [2, 3, 4] if one_stage else None, extra,
                                     norm_layer=None)
    if fpn_channels != 256:  # torchvision's extractors fix 256
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        inputs = [block[0].in_channels for block in body.fpn.inner_blocks]
        last = LastLevelP6P7(fpn_channels, fpn_channels) if one_stage else LastLevelMaxPool()
        body.fpn, body.out_channels = FeaturePyramidNetwork(inputs, fpn_channels, extra_blocks=last), fpn_channels
    levels = _levels(body)
    if arch == "fasterrcnn":
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

        anchors = _anchors(anchor_sizes, (32, 64, 128, 256, 512), aspect_ratios, levels, octaves=False)
        head = TwoMLPHead(body.out_channels * 7 * 7, box_head_dim)
        return FasterRCNN(body, rpn_anchor_generator=anchors, box_batch_size_per_image=rois_per_image, box_head=head,
                          box_predictor=FastRCNNPredictor(box_head_dim, num_classes),
                          rpn_pre_nms_top_n_train=2 * proposals, rpn_post_nms_top_n_train=proposals,
                          rpn_pre_nms_top_n_test=proposals, rpn_post_nms_top_n_test=max(1, proposals // 2),
                          box_score_thresh=common.pop("score_thresh"), box_nms_thresh=common.pop("nms_thresh"),
                          box_detections_per_img=common.pop("detections_per_img"), **common)
    if arch == "retinanet":
        anchors = _anchors(anchor_sizes, (32, 64, 128, 256, 512), aspect_ratios, levels, octaves=True)
        return RetinaNet(body, num_classes, anchor_generator=anchors, **common)
    anchors = _anchors(anchor_sizes, (8, 16, 32, 64, 128), (1.0,), levels, octaves=False)
    return FCOS(body, num_classes, anchor_generator=anchors, **common)


def _ssdlite(net: nn.Module, num_classes: int, size: int, norm: str, common: dict[str, Any]) -> nn.Module:
    """torchvision's ssdlite320_mobilenet_v3_large at ``size`` x ``size`` (its builder fixes 320)."""
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.ssdlite import SSDLiteHead, _mobilenet_extractor

    norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03) if norm == "batch" else _norm_layer(norm)
    body = _mobilenet_extractor(net, 6, norm_layer)
    anchors = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)
    channels = det_utils.retrieve_out_channels(body, (size, size))
    head = SSDLiteHead(channels, anchors.num_anchors_per_location(), num_classes, norm_layer)
    return SSD(body, anchors, (size, size), num_classes, head=head, image_mean=[0.5] * 3, image_std=[0.5] * 3,
               topk_candidates=300, **{k: v for k, v in common.items() if k not in ("min_size", "max_size")})


def pr_curve_figure(precision: torch.Tensor, class_names: list[str]) -> Any:
    """Precision vs recall at IoU 0.5 (all areas, 100 detections) per class and their mean, from torchmetrics'
    extended summary ``precision`` (T, R, K, A, M); -1 (no ground truth) is left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recall = torch.linspace(0, 1, precision.shape[1])
    curves = precision[0, :, :, 0, -1]  # (R, K)
    fig, ax = plt.subplots(figsize=(5, 4))
    for k in range(curves.shape[1]):
        if (curves[:, k] >= 0).any() and curves.shape[1] <= 12:
            name = class_names[k] if k < len(class_names) else str(k)
            ax.plot(recall, curves[:, k].clamp(min=0), lw=1, alpha=0.6, label=name)
    valid = curves >= 0
    mean = (curves.clamp(min=0) * valid).sum(1) / valid.sum(1).clamp(min=1)
    ax.plot(recall, mean, color="black", lw=2, label="mean")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="PR curve at IoU 0.5")
    ax.legend(fontsize=6, ncol=2, loc="lower left")
    fig.tight_layout()
    return fig


def draw_detections(image: torch.Tensor, pred: dict[str, torch.Tensor], class_names: list[str],
                    target: dict[str, torch.Tensor] | None = None, min_score: float = 0.5) -> torch.Tensor:
    """uint8 (3, H, W): true boxes in green, predictions with ``score >= min_score`` in red labelled
    ``class score``."""
    from torchvision.utils import draw_bounding_boxes

    img = (image.detach().cpu().clamp(0, 1) * 255).to(torch.uint8)
    if target is not None and len(target["boxes"]):
        img = draw_bounding_boxes(img, target["boxes"].cpu(), colors="lime", width=1)
    keep = pred["scores"] >= min_score
    names = [f"{class_names[int(c) - 1] if 0 < int(c) <= len(class_names) else int(c)} {float(s):.2f}"
             for c, s in zip(pred["labels"][keep], pred["scores"][keep])]
    if keep.any():
        img = draw_bounding_boxes(img, pred["boxes"][keep].detach().cpu(), labels=names, colors="red", width=1)
    return img
