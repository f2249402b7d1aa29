"""Johnson et al. (2016) fast style transfer: a feed-forward image-transformation network for one style.

The network (reflection-padded convs, two stride-2 downsamplings, residual blocks with instance
norm, nearest-neighbour upsampling + conv) is trained over content crops with the perceptual
losses of ``zoo.models.vgg_features``; afterwards one forward pass stylises any image. Inputs of
any size work: they are reflection-padded to a multiple of 4 and the output is cropped back.

Example:
    $ python train.py --model fast_style --data-dir PHOTOS --data.style ../shared/data/style/starry_night.jpg
    $ python train.py predict --model fast_style --ckpt-path runs/fast_style/<run>/checkpoints/last.ckpt \\
        --input photos/ --output-dir stylised/

    >>> net = TransformerNet(base_channels=8, num_residual=1)
    >>> tuple(net(torch.rand(1, 3, 33, 47)).shape)
    (1, 3, 33, 47)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ZooUserError
from zoo.models.base import OptimizerName, SchedulerName, ZooModule
from zoo.models.vgg_features import FrozenLossNetCheckpointMixin, PerceptualLoss, VGGArch, log_style_outputs
from zoo.pretrained import Pretrained

__all__ = ["TransformerNet", "FastStyleTransfer"]


def conv_layer(c_in: int, c_out: int, kernel: int, stride: int = 1, norm: bool = True,
               relu: bool = True) -> nn.Sequential:
    """Reflection pad -> conv -> (instance norm) -> (ReLU)."""
    layers: list[nn.Module] = [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(c_in, c_out, kernel, stride)]
    if norm:
        layers.append(nn.InstanceNorm2d(c_out, affine=True))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """x + (conv-IN-ReLU-conv-IN)(x), same size and channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_layer(channels, channels, 3), conv_layer(channels, channels, 3, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TransformerNet(nn.Module):
    """Johnson's image-transformation network; output has the input's size (any H, W >= 4)."""

    def __init__(self, base_channels: int = 32, num_residual: int = 5) -> None:
        super().__init__()
        c = base_channels
        self.down = nn.Sequential(conv_layer(3, c, 9), conv_layer(c, 2 * c, 3, 2), conv_layer(2 * c, 4 * c, 3, 2))
        self.res = nn.Sequential(*[ResidualBlock(4 * c) for _ in range(num_residual)])
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv_layer(4 * c, 2 * c, 3),
                                nn.Upsample(scale_factor=2, mode="nearest"), conv_layer(2 * c, c, 3),
                                conv_layer(c, 3, 9, norm=False, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % 4, -w % 4  # two stride-2 convs: pad to a multiple of 4, crop back afterwards
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        return self.up(self.res(self.down(x)))[..., :h, :w]


class FastStyleTransfer(FrozenLossNetCheckpointMixin, ZooModule):
    """Johnson fast style transfer: train a feed-forward stylizer for one style, then stylise in one pass.

    Args:
        base_channels / num_residual: width of the first conv (32 in the paper) and residual blocks (5).
        arch / pooling / content_layers / style_layers / style_layer_weights: the VGG loss network
            (Johnson: vgg16, content relu2_2, style relu1_2, relu2_2, relu3_3, relu4_3).
        content_weight / style_weight / tv_weight: perceptual loss weights.
        pretrained / weights: ImageNet VGG weights (``auto|true|false``) or a local file.
        optimizer / lr / weight_decay / scheduler: the optimisation recipe (Adam 1e-3 in the paper).
        image_every_n_steps: save a stylised preview every N training steps (0: only at the end).
    """

    monitor = "val/loss"
    monitor_mode = "min"

    def __init__(
        self,
        base_channels: int = 32,
        num_residual: int = 5,
        arch: VGGArch = "vgg16",
        content_layers: tuple[str, ...] = ("relu2_2",),
        style_layers: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3"),
        style_layer_weights: tuple[float, ...] | None = None,
        content_weight: float = 1.0,
        style_weight: float = 1e6,
        tv_weight: float = 1.0,
        pooling: Literal["max", "avg"] = "max",
        pretrained: Pretrained = "auto",
        weights: str | None = None,
        optimizer: OptimizerName = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        scheduler: SchedulerName = "none",
        image_every_n_steps: int = 100,
    ) -> None:
        super().__init__()
        if base_channels < 1 or num_residual < 0:
            raise ZooUserError(f"base_channels must be >= 1 and num_residual >= 0, got {base_channels}, {num_residual}")
        self.save_hyperparameters()
        self.net = TransformerNet(base_channels, num_residual)
        self.loss_net = PerceptualLoss(arch, content_layers, style_layers, style_layer_weights, content_weight,
                                       style_weight, tv_weight, pretrained, weights, pooling)
        self.example_input_array = torch.zeros(1, 3, 64, 64)
        self._style_t: list[torch.Tensor] | None = None
        self._preview: tuple[torch.Tensor, torch.Tensor] | None = None

    def export_dynamic_axes(self, n_inputs: int) -> list[dict[int, str]]:
        return [{0: "batch", 2: "height", 3: "width"}]

    def export_notes(self, out_dir: Path) -> str:
        return "input0 = RGB images as float [batch, 3, H, W] in [0, 1] (H and W multiples of 4); output = the " \
            "stylised images, same shape, in [0, 1]"

    @property
    def vgg_pretrained(self) -> bool:
        return self.loss_net.vgg.pretrained

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stylised image; clamped to [0, 1] in eval mode (training keeps the raw output for the loss)."""
        y = self.net(x)
        return y if self.training else y.clamp(0, 1)

    def _shared_step(self, batch: Any, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        contents, style = batch
        if self._style_t is None:  # one style per model: its Grams are computed once per process
            self._style_t = self.loss_net.style_targets(style)
        out = self(contents)
        losses = self.loss_net(out, self.loss_net.content_targets(contents), self._style_t)
        on_step = stage == "train"
        for name, value in losses.items():
            self.log(f"{stage}/{name}", value, on_step=on_step, on_epoch=True, prog_bar=name == "loss",
                     batch_size=len(contents))
        self.log(f"{stage}/vgg_pretrained", float(self.vgg_pretrained), on_step=False, on_epoch=True,
                 batch_size=len(contents))
        return losses["loss"], out

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, out = self._shared_step(batch, "train")
        every = self.hparams.image_every_n_steps
        if every and self.global_step % every == 0:
            self._save_images("progress", batch[0][:1], batch[1], out[:1].clamp(0, 1))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "val")
        if batch_idx == 0:
            self._preview = (batch[0][:1].detach(), batch[1].detach())

    def test_step(self, batch: Any, batch_idx: int) -> None:
        _, out = self._shared_step(batch, "test")
        self._save_images(f"test_result{batch_idx}", batch[0], batch[1], out)

    def on_train_end(self) -> None:
        if self._preview is not None:
            content, style = self._preview
            was_training = self.training
            self.eval()
            with torch.no_grad():
                self._save_images("result", content, style, self(content))
            self.train(was_training)

    def _save_images(self, name: str, content: torch.Tensor, style: torch.Tensor, result: torch.Tensor) -> None:
        title = f"Johnson fast style ({self.hparams.arch}), step {self.global_step}"
        log_style_outputs(self.trainer, name, content, style, result, self.vgg_pretrained, title)

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        x, names = batch
        return {"images": self(x).clamp(0, 1).cpu(), "names": list(names)}

    def write_predictions(self, predictions: list[Any], out_dir: Path, datamodule: Any) -> Path:
        """One ``<name>_stylized.png`` per input image in ``out_dir``; returns the folder."""
        from PIL import Image

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for batch in predictions:
            for image, name in zip(batch["images"], batch["names"]):
                array = (image.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
                Image.fromarray(array).save(out_dir / f"{name}_stylized.png")
        return out_dir
