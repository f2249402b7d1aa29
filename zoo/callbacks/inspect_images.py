"""What an image model looks at: feature maps of chosen conv layers, the first layer's filters and a saliency
map (Grad-CAM on the last conv layer for classifiers, input-gradient saliency otherwise), drawn for a few test
images at the end of testing (or of fitting, without a test). Models whose input is not an image are skipped.

Example:
    >>> cam = grad_cam(model, conv_layer, images)  # (N, H, W) in [0, 1]  # doctest: +SKIP
"""
from __future__ import annotations

import fnmatch
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import nn

__all__ = ["ImageInsight", "grad_cam", "input_saliency"]


def _logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor | None:
    out = model(images)
    return out if isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[0] == len(images) else None


def grad_cam(model: nn.Module, layer: nn.Module, images: torch.Tensor) -> torch.Tensor | None:
    """Grad-CAM (Selvaraju et al. 2017) of each image's predicted class at ``layer``, upsampled to the image and
    scaled to [0, 1]: (N, H, W). None when the model's output is not (N, classes) logits."""
    saved: dict[str, torch.Tensor] = {}

    def keep(module: nn.Module, args: Any, out: torch.Tensor) -> None:
        out.retain_grad()
        saved["act"] = out

    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = _logits(model, images)
            if logits is None or "act" not in saved:
                return None
            logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    finally:
        handle.remove()
    act, grad = saved["act"].detach(), saved["act"].grad
    cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * act).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return cam / cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)


def input_saliency(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """|d output / d pixel| (max over channels), scaled to [0, 1] per image: (N, H, W)."""
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        out = out if isinstance(out, torch.Tensor) else torch.stack([o.float().sum() for o in out])
        score = out.gather(1, out.argmax(1, keepdim=True)).sum() if out.ndim == 2 else out.float().pow(2).sum()
        score.backward()
    sal = x.grad.abs().amax(dim=1)
    return sal / sal.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)


class ImageInsight(Callback):
    """Feature maps of the conv layers matching ``layers`` (default: the first and the last conv layer), the
    first layer's filters and saliency maps for ``num_images`` test images, as PNGs in ``artifacts/`` and on
    every logger."""

    def __init__(self, layers: str | None = None, num_images: int = 4) -> None:
        self.layers, self.num_images = layers, num_images
        self.done = False

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._draw(trainer, pl_module, "test")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.test_dataloaders is None:  # fit without a test: draw on validation images instead
            self._draw(trainer, pl_module, "val")

    def _images(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> torch.Tensor | None:
        example = pl_module.example_input_array
        dm = trainer.datamodule
        if not isinstance(example, torch.Tensor) or example.ndim != 4 or dm is None:
            return None
        batch = next(iter(getattr(dm, f"{stage}_dataloader")()), None)
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1:] != example.shape[1:]:
            return None
        return x[: self.num_images].float().to(pl_module.device)

    def _draw(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.done or not trainer.is_global_zero:
            return
        images = self._images(trainer, pl_module, stage)
        convs = [(n, m) for n, m in pl_module.named_modules() if isinstance(m, nn.Conv2d)]
        if images is None or not convs:
            return
        self.done = True
        from zoo.artifacts import log_figure

        chosen = [(n, m) for n, m in convs if fnmatch.fnmatch(n, self.layers)] if self.layers else \
            list(dict.fromkeys([convs[0], convs[-1]]))
        was_training = pl_module.training
        pl_module.eval()
        try:
            maps = _record(pl_module, images[:1], chosen)
            log_figure(trainer, "feature_maps", _maps_figure(images[0], maps))
            log_figure(trainer, "first_layer_filters", _filters_figure(convs[0][0], convs[0][1].weight))
            cam = grad_cam(pl_module, convs[-1][1], images)
            title = f"Grad-CAM at {convs[-1][0]}" if cam is not None else "input-gradient saliency"
            cam = cam if cam is not None else input_saliency(pl_module, images)
            log_figure(trainer, "saliency", _saliency_figure(images, cam, title))
        finally:
            pl_module.zero_grad(set_to_none=True)
            pl_module.train(was_training)


def _record(model: nn.Module, x: torch.Tensor, layers: list[tuple[str, nn.Module]]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda mod, a, o, n=n: out.__setitem__(n, o.detach()[0].cpu()))
               for n, m in layers]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return out


def _show(x: torch.Tensor) -> Any:
    """A CHW image tensor (any range) as an HxW or HxWx3 array in [0, 1] for imshow."""
    x = x.detach().float().cpu()
    x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)
    return x[0].numpy() if x.shape[0] != 3 else x.permute(1, 2, 0).numpy()


def _maps_figure(image: torch.Tensor, maps: dict[str, torch.Tensor]) -> Any:
    import matplotlib.pyplot as plt

    cols = 8
    fig, axes = plt.subplots(1 + 2 * len(maps), cols, figsize=(cols * 1.3, (1 + 2 * len(maps)) * 1.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(_show(image), cmap="gray")
    axes[0, 0].set_title("input", fontsize=8)
    for i, (name, fmap) in enumerate(maps.items()):
        for j in range(min(2 * cols, fmap.shape[0])):
            ax = axes[1 + 2 * i + j // cols, j % cols]
            ax.imshow(fmap[j].numpy(), cmap="viridis")
            ax.set_title(f"{name} ch{j}", fontsize=7)
    fig.suptitle("feature maps (first channels of each layer)")
    fig.tight_layout()
    return fig


def _filters_figure(name: str, weight: torch.Tensor) -> Any:
    import matplotlib.pyplot as plt

    w = weight.detach().float().cpu()[:32]
    cols = 8
    rows = -(-len(w) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.2), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, f in enumerate(w):
        axes[k // cols, k % cols].imshow(_show(f if f.shape[0] == 3 else f.mean(0, keepdim=True)), cmap="gray")
        axes[k // cols, k % cols].set_title(f"{k}", fontsize=7)
    fig.suptitle(f"first-layer filters ({name}, {tuple(weight.shape[1:])})")
    fig.tight_layout()
    return fig


def _saliency_figure(images: torch.Tensor, cam: torch.Tensor, title: str) -> Any:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(images), figsize=(2.2 * len(images), 4.6), squeeze=False)
    for i in range(len(images)):
        axes[0, i].imshow(_show(images[i]), cmap="gray")
        axes[0, i].set_title(f"test image {i}", fontsize=8)
        axes[1, i].imshow(_show(images[i]), cmap="gray")
        axes[1, i].imshow(cam[i].detach().cpu().numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
        axes[1, i].set_title("saliency", fontsize=8)
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    return fig
