"""Vision Transformer for small images, trained from scratch (timm's ``VisionTransformer``), with an
attention-map artifact: the last block's attention of the class token (or, with mean pooling, the mean
attention each patch receives) over a few test images.

Example:
    >>> from zoo.models import ViTClassifier
    >>> model = ViTClassifier(num_classes=10, in_channels=1, image_size=28, patch_size=4)
    >>> model(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""
from __future__ import annotations

from functools import partial
from typing import Any, Literal

import torch
from torch import nn

from zoo.artifacts import log_figure
from zoo.errors import ZooUserError
from zoo.models.base import ClassifierModule, OptimizerName, SchedulerName
from zoo.models.plots import ConfusionMatrixMixin

__all__ = ["ViTClassifier", "last_layer_attention", "plot_attention"]


@torch.no_grad()
def last_layer_attention(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Attention weights of the last block (batch, heads, tokens, tokens), prefix tokens first.

    timm's blocks use the fused ``scaled_dot_product_attention``, which returns no weights, so they are
    recomputed from the input of the last block's attention (caught with a forward hook).
    """
    block = vit.blocks[-1]
    seen: dict[str, torch.Tensor] = {}
    handle = block.norm1.register_forward_hook(lambda _m, _i, out: seen.update(x=out))
    try:
        vit(x)
    finally:
        handle.remove()
    attn, h = block.attn, seen["x"]
    b, n, _ = h.shape
    q, k, _ = attn.qkv(h).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


def plot_attention(images: torch.Tensor, maps: torch.Tensor, titles: list[str], title: str) -> Any:
    """Each image above its attention map (upsampled to the image size, overlaid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n + 0.4, 3.6), dpi=100, squeeze=False)
    for i in range(n):
        img = images[i].float()
        img = (img - img.min()) / (img.max() - img.min() + 1e-8)
        shown = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
        heat = torch.nn.functional.interpolate(maps[i][None, None], size=img.shape[-2:], mode="nearest")[0, 0]
        axes[0, i].imshow(shown, cmap="gray")
        axes[0, i].set_title(titles[i], fontsize=8)
        axes[1, i].imshow(shown, cmap="gray")
        axes[1, i].imshow(heat, cmap="inferno", alpha=0.6)
        for ax in axes[:, i]:
            ax.set_xticks([]), ax.set_yticks([])
    axes[0, 0].set_ylabel("test image", fontsize=8)
    axes[1, 0].set_ylabel("attention", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def conv_stem(in_channels: int, embed_dim: int, stride: int) -> nn.Sequential:
    """log2(stride) 3x3 stride-2 convolutions (BN, ReLU), widths doubling up to ``embed_dim // 2``; timm's
    ``HybridEmbed`` adds the 1x1 projection to ``embed_dim``."""
    n = stride.bit_length() - 1
    widths = [max(embed_dim >> (n - i), 8) for i in range(n)]
    layers: list[nn.Module] = []
    for c_in, c_out in zip([in_channels, *widths], widths):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers) if layers else nn.Sequential(nn.Identity())


class ViTClassifier(ConfusionMatrixMixin, ClassifierModule):
    """Vision Transformer image classifier trained from scratch, with attention maps of test images.

    Args:
        num_classes / in_channels / image_size: filled in from the DataModule by the CLI.
        patch_size: side of the square patches; it must divide ``image_size``. With ``stem conv`` it is the
            stem's total stride (a power of two).
        stem: ``patch`` (ViT's linear patch embedding) or ``conv`` (3x3 stride-2 convolutions with batch norm,
            then a 1x1 projection: Xiao et al. 2021, "Early convolutions help transformers see better"; timm's
            ``HybridEmbed``), the same token grid either way.
        embed_dim / depth / num_heads / mlp_ratio: token width, transformer blocks, attention heads and
            MLP expansion.
        pooling: ``cls`` (a class token) or ``mean`` (average of the patch tokens) before the head.
        dropout / drop_path: dropout rate and stochastic-depth rate.
        optimizer / lr / weight_decay / momentum / scheduler: the optimisation recipe (no weight decay on
            biases, norms, position embedding and class token).
        label_smoothing: cross-entropy label smoothing.
        attention_images: test images in the ``attention_maps`` artifact (0: none).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        patch_size: int = 4,
        stem: Literal["patch", "conv"] = "patch",
        embed_dim: int = 128,
        depth: int = 6,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        pooling: Literal["cls", "mean"] = "cls",
        dropout: float = 0.0,
        drop_path: float = 0.1,
        optimizer: OptimizerName = "adamw",
        lr: float = 2e-3,
        weight_decay: float = 0.05,
        momentum: float = 0.9,
        scheduler: SchedulerName = "onecycle",
        label_smoothing: float = 0.1,
        attention_images: int = 8,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ZooUserError(f"patch_size {patch_size} does not divide image_size {image_size}; pick a divisor "
                               f"(e.g. --model.patch_size {next(p for p in (4, 2, 1) if image_size % p == 0)})")
        if embed_dim % num_heads:
            raise ZooUserError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        if pooling not in ("cls", "mean"):
            raise ZooUserError(f"unknown pooling '{pooling}'; choose cls or mean")
        if stem not in ("patch", "conv"):
            raise ZooUserError(f"unknown stem '{stem}'; choose patch or conv")
        if stem == "conv" and patch_size & (patch_size - 1):
            raise ZooUserError(f"with --model.stem conv, patch_size is the stem's stride and must be a power of two "
                               f"(got {patch_size}); e.g. --model.patch_size 4")
        self.save_hyperparameters()
        from timm.models.vision_transformer import VisionTransformer

        embedding: dict[str, Any] = {"patch_size": patch_size}
        if stem == "conv":
            from timm.models.vision_transformer_hybrid import HybridEmbed

            embedding = {"patch_size": 1, "embed_layer": partial(
                HybridEmbed, backbone=conv_stem(in_channels, embed_dim, patch_size))}
        self.net = VisionTransformer(
            img_size=image_size, in_chans=in_channels, num_classes=num_classes, **embedding,
            embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
            class_token=pooling == "cls", global_pool="token" if pooling == "cls" else "avg",
            drop_rate=dropout, pos_drop_rate=dropout, drop_path_rate=drop_path)
        self._init_metrics(num_classes, label_smoothing)
        self.example_input_array = torch.zeros(1, in_channels, image_size, image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def param_groups(self) -> list[dict[str, Any]]:
        skip = {f"net.{name}" for name in self.net.no_weight_decay()}
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        decay = [p for n, p in named if p.dim() >= 2 and n not in skip]
        rest = [p for n, p in named if not (p.dim() >= 2 and n not in skip)]
        return [{"params": decay}, {"params": rest, "weight_decay": 0.0}]

    def patch_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Per image, the last block's attention over the patch grid (batch, grid, grid), heads averaged:
        from the class token with ``cls`` pooling, else the mean attention each patch receives."""
        attn = last_layer_attention(self.net, x).mean(dim=1)
        prefix = self.net.num_prefix_tokens
        weights = attn[:, 0, prefix:] if self.hparams.pooling == "cls" else attn[:, prefix:, prefix:].mean(dim=1)
        grid = self.hparams.image_size // self.hparams.patch_size
        return weights.reshape(-1, grid, grid)

    def on_test_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        super().on_test_batch_end(outputs, batch, batch_idx, dataloader_idx)
        if batch_idx == 0 and isinstance(outputs, dict):
            n = self.hparams.attention_images
            self._attention_batch = (batch[0][:n], outputs["preds"][:n], batch[1][:n])

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if self.hparams.attention_images <= 0 or getattr(self, "_attention_batch", None) is None:
            return
        images, preds, target = self._attention_batch
        maps = self.patch_attention(images).cpu()
        dm = getattr(self.trainer, "datamodule", None)
        names = [str(n) for n in (getattr(dm, "class_names", None) or range(self.hparams.num_classes))]
        titles = [f"{names[int(p)]}" + ("" if p == t else f"\n(true {names[int(t)]})") for p, t in zip(preds, target)]
        what = "class-token attention" if self.hparams.pooling == "cls" else "mean attention received"
        log_figure(self.trainer, "attention_maps", plot_attention(images.cpu(), maps, titles,
                                                                  f"ViT last block: {what} (predicted class above)"))
        self._attention_batch = None
