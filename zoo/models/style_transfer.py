"""Gatys et al. (2016) neural style transfer: the generated image itself is the trained parameter.

Each training step is one optimiser call on ``self.image``: ``lbfgs_iters`` LBFGS iterations
(strong-Wolfe line search, about 1.2 loss evaluations per iteration) or one Adam step, against
Gram-matrix style, feature content and total-variation losses from a frozen VGG (see
``zoo.models.vgg_features``). The image stays valid: the VGG losses see it clamped to [0, 1], a
penalty (``range_weight``) pulls pixels outside back in (else their gradient would be zero and
they would stick), the parameter is projected onto [0, 1] after every Adam step, and for LBFGS
(whose curvature memory a projection would corrupt) at scale changes and at the end; saved
images and test losses use the clamped image. ``scales=(0.5, 1.0)`` optimises coarse-to-fine:
the step budget is split evenly, and at each new scale the image is upsampled and the optimiser
restarted.

Example:
    $ python train.py --model style_transfer --data-dir ../shared/data/style \\
        --data.content tubingen.jpg --data.style starry_night.jpg --data.size 256 --max-epochs 4

    >>> model = StyleTransfer(image_shape=(32, 32), pretrained="false")
    >>> tuple(model().shape)
    (1, 3, 32, 32)
"""
from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from zoo.datamodules.interfaces import StylePairData
from zoo.errors import ZooUserError
from zoo.models.base import ZooModule
from zoo.models.vgg_features import FrozenLossNetCheckpointMixin, PerceptualLoss, VGGArch, log_style_outputs
from zoo.pretrained import Pretrained

__all__ = ["StyleTransfer", "preserve_colors"]

_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def preserve_colors(result: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Luminance-only transfer: the result's luminance (Y) with the content's colour (IQ), in [0, 1]."""
    m = _RGB_TO_YIQ.to(result)
    yiq_r, yiq_c = (torch.einsum("ij,bjhw->bihw", m, t) for t in (result, content))
    yiq = torch.cat([yiq_r[:, :1], yiq_c[:, 1:]], dim=1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(m), yiq).clamp(0, 1)


def _resize(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(shape):
        return x
    return F.interpolate(x, size=shape, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


class StyleTransfer(FrozenLossNetCheckpointMixin, ZooModule):
    """Gatys neural style transfer: optimise an image (LBFGS/Adam) to match VGG content and Gram style.

    Args:
        image_shape: (H, W) of the generated image; the CLI links it from the DataModule.
        arch: ``vgg16`` or ``vgg19``.
        pooling: ``max`` or ``avg`` (Gatys preferred average pooling).
        content_layers / style_layers / style_layer_weights: VGG layer names (``relu4_2``, ``conv3_1``,
            ``pool2``) and one weight per style layer (default 1/L each).
        content_weight / style_weight / tv_weight: loss weights.
        range_weight: weight of the squared distance of pixels outside [0, 1] (with the clamp, a box
            constraint LBFGS can live with).
        init: start from the ``content`` image or uniform ``noise`` (drawn from the seeded global RNG).
        optimizer / lr: ``lbfgs`` (lr 1.0 by default) or ``adam`` (lr 0.02, one update per step).
        lbfgs_iters: LBFGS iterations per training step.
        lbfgs_history: LBFGS history size.
        lbfgs_line_search: strong-Wolfe line search (false: fixed steps).
        scales: coarse-to-fine image scales, e.g. (0.25, 0.5, 1.0); the last must be 1.0.
        preserve_color: keep the content's colours in the outputs (YIQ luminance-only transfer).
        pretrained / weights: ImageNet VGG weights (``auto|true|false``) or a local file.
        image_every_n_steps: save the current image every N steps (0: only at the end).
    """

    monitor = None
    predict_hint = ("it optimises one image per run (the result is artifacts/result_*.png in the run folder); "
                    "train fast_style to stylise new images with predict")
    supports_multi_device = False
    export_formats = ()
    data_interface = StylePairData

    def __init__(
        self,
        image_shape: tuple[int, int] = (256, 256),
        arch: VGGArch = "vgg19",
        content_layers: tuple[str, ...] = ("relu4_2",),
        style_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        style_layer_weights: tuple[float, ...] | None = None,
        content_weight: float = 1.0,
        style_weight: float = 1e6,
        tv_weight: float = 1.0,
        range_weight: float = 100.0,
        init: Literal["content", "noise"] = "content",
        optimizer: Literal["lbfgs", "adam"] = "lbfgs",
        lr: float | None = None,
        lbfgs_iters: int = 10,
        lbfgs_history: int = 50,
        lbfgs_line_search: bool = True,
        scales: tuple[float, ...] = (1.0,),
        preserve_color: bool = False,
        pooling: Literal["max", "avg"] = "max",
        pretrained: Pretrained = "auto",
        weights: str | None = None,
        image_every_n_steps: int = 5,
    ) -> None:
        super().__init__()
        if len(image_shape) != 2 or min(image_shape) < 16:
            raise ZooUserError(f"image_shape must be (H, W) with both >= 16, got {tuple(image_shape)}")
        if optimizer not in ("lbfgs", "adam"):
            raise ZooUserError(f"unknown optimizer '{optimizer}' for style_transfer; choose lbfgs or adam")
        if init not in ("content", "noise"):
            raise ZooUserError(f"unknown init '{init}'; choose content or noise")
        if not scales or list(scales) != sorted(scales) or scales[-1] != 1.0 or scales[0] <= 0:
            raise ZooUserError(f"scales must increase and end at 1.0, e.g. 0.5 1.0; got {tuple(scales)}")
        if range_weight < 0:
            raise ZooUserError(f"range_weight must be >= 0, got {range_weight}")
        if lbfgs_iters < 1:
            raise ZooUserError(f"lbfgs_iters must be >= 1, got {lbfgs_iters}")
        if lr is not None and lr <= 0:
            raise ZooUserError(f"lr must be positive, got {lr}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.loss_net = PerceptualLoss(arch, content_layers, style_layers, style_layer_weights, content_weight,
                                       style_weight, tv_weight, pretrained, weights, pooling)
        self.image = nn.Parameter(torch.rand(1, 3, *self._shape(scales[0])))
        self.register_buffer("initialised", torch.tensor(False))
        self._targets: dict[str, Any] = {}

    @property
    def vgg_pretrained(self) -> bool:
        return self.loss_net.vgg.pretrained

    def _shape(self, scale: float) -> tuple[int, int]:
        h, w = self.hparams.image_shape
        return max(16, round(h * scale)), max(16, round(w * scale))

    def forward(self) -> torch.Tensor:
        """The current generated image in [0, 1] (colour-preserved when asked)."""
        image = self.image.detach().clamp(0, 1)
        content = self._targets.get("content")
        if self.hparams.preserve_color and content is not None and content.shape == image.shape:
            image = preserve_colors(image, content)
        return image

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.hparams.optimizer == "lbfgs":
            return torch.optim.LBFGS([self.image], lr=self.hparams.lr or 1.0, max_iter=self.hparams.lbfgs_iters,
                                     history_size=self.hparams.lbfgs_history,
                                     line_search_fn="strong_wolfe" if self.hparams.lbfgs_line_search else None)
        return torch.optim.Adam([self.image], lr=self.hparams.lr or 0.02)

    def _set_targets(self, content: torch.Tensor, style: torch.Tensor, shape: tuple[int, int]) -> None:
        """Content features and style Grams at ``shape`` (the style image scaled by the same factor)."""
        if self._targets.get("shape") == shape:
            return
        factor = shape[0] / content.shape[-2]
        style_shape = (max(16, round(style.shape[-2] * factor)), max(16, round(style.shape[-1] * factor)))
        content = _resize(content, shape)
        self._targets = dict(shape=shape, content=content, content_t=self.loss_net.content_targets(content),
                             style_t=self.loss_net.style_targets(_resize(style, style_shape)))

    def _check_batch(self, content: torch.Tensor) -> None:
        if tuple(content.shape[-2:]) != tuple(self.hparams.image_shape):
            raise ZooUserError(f"content image is {tuple(content.shape[-2:])} but the model was built for "
                               f"image_shape {tuple(self.hparams.image_shape)}; drop --model.image_shape (the CLI "
                               f"links it from --data.size) or make them match")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        content, style = batch
        self._check_batch(content)
        scales = self.hparams.scales
        phase = min(len(scales) - 1, self.global_step * len(scales) // max(1, self._total_steps()))
        shape = self._shape(scales[phase])
        if not bool(self.initialised):
            start = _resize(content, shape) if self.hparams.init == "content" else torch.rand_like(self.image)
            self.image.data = start.to(self.image, copy=True).contiguous()  # never alias the batch
            self.initialised.fill_(True)
        elif tuple(self.image.shape[-2:]) != shape:  # next scale: upsample and restart the optimiser
            self._project()
            self.image.data = _resize(self.image.data, shape).contiguous()
            self.trainer.strategy.setup_optimizers(self.trainer)
        self._set_targets(content, style, shape)

    def _losses(self, image: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        image = self.image if image is None else image
        inside = (image >= 0) & (image <= 1)  # torch's clamp has zero gradient *on* the bounds: keep it there
        valid = torch.where(inside, image, image.detach().clamp(0, 1))  # the VGG losses see a valid image ...
        losses = self.loss_net(valid, self._targets["content_t"], self._targets["style_t"])
        losses["range_loss"] = (image - valid).pow(2).mean()  # ... and pixels outside are pulled back
        losses["loss"] = losses["loss"] + self.hparams.range_weight * losses["range_loss"]
        return losses

    def _log_losses(self, stage: str, losses: dict[str, torch.Tensor]) -> None:
        on_step = stage == "train"
        for name, value in losses.items():
            self.log(f"{stage}/{name}", value.detach(), on_step=on_step, on_epoch=not on_step,
                     prog_bar=name in ("loss", "style_loss"), batch_size=1)
        self.log(f"{stage}/vgg_pretrained", float(self.vgg_pretrained), on_step=on_step, on_epoch=not on_step,
                 batch_size=1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        opt = self.optimizers()
        first: dict[str, torch.Tensor] = {}
        evals = [0]

        def closure() -> torch.Tensor:
            opt.zero_grad()
            losses = self._losses()
            self.manual_backward(losses["loss"])
            evals[0] += 1
            first.update(first or losses)  # the loss at the step's starting point, not a line-search trial
            return losses["loss"]

        opt.step(closure=closure)
        if self.hparams.optimizer == "adam":  # projecting inside LBFGS would corrupt its curvature memory
            self._project()
        self._log_losses("train", first)
        self.log("train/closure_evals", float(evals[0]), on_step=True, on_epoch=False, batch_size=1)
        every = self.hparams.image_every_n_steps
        if every and self.global_step % every == 0:
            self._save_images("progress", batch)
        return first["loss"].detach()

    @torch.no_grad()
    def _project(self) -> None:
        self.image.clamp_(0, 1)

    def _save_images(self, name: str, batch: Any) -> None:
        content, style = batch
        shape = tuple(content.shape[-2:])
        title = f"Gatys {self.hparams.arch}, step {self.global_step}"
        log_style_outputs(self.trainer, name, content, style, _resize(self(), shape), self.vgg_pretrained, title)

    def on_train_end(self) -> None:
        self._project()
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "content_image"):
            content, style = dm.content_image.to(self.device), dm.style_image.to(self.device)
            self._save_images("result", (content, style))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        content, style = batch
        self._check_batch(content)
        self._set_targets(content, style, tuple(self.image.shape[-2:]))
        with torch.no_grad():
            self._log_losses("test", self._losses(self.image.clamp(0, 1)))  # range_loss 0: the output image
        self._save_images("test_result", batch)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint["state_dict"].get("image")
        if saved is not None and saved.shape != self.image.shape:  # saved during a coarser scale
            self.image.data = torch.empty_like(saved)
