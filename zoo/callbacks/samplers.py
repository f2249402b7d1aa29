"""Image callbacks for generative models, written through :func:`zoo.artifacts.log_image` (PNG in the
run folder, plus W&B / TensorBoard images when those loggers are active).

The callbacks duck-type the LightningModule:

* ``sample_latent(n, generator)`` + ``decode_unit(z)`` (GAN, VAE): samples from a fixed noise batch
  (images in [0, 1]; a 2-D point model gets a scatter plot against real points instead);
* ``to_unit(x)`` + ``reconstruct_unit(x)`` (autoencoders): inputs next to their reconstructions;
* ``encode_latent(x)`` (autoencoders without a prior): interpolation between encoded real images.

Example:
    >>> trainer = L.Trainer(callbacks=[SampleGrid(every_n_epochs=5), LatentInterpolation(5)])  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any

import lightning as L
import torch

from zoo.artifacts import log_figure, log_image

__all__ = ["SampleGrid", "LatentInterpolation", "image_grid", "slerp"]


def image_grid(images: torch.Tensor, nrow: int, min_cell: int = 64) -> torch.Tensor:
    """(N, C, H, W) images in [0, 1] -> one (C, H', W') grid with white gaps; small images are enlarged (nearest
    neighbour, whole multiples) until a cell is at least ``min_cell`` pixels high, so 8x8 digits stay readable."""
    from torchvision.utils import make_grid

    images = images.detach().float().clamp(0, 1).cpu()
    scale = max(1, -(-min_cell // images.shape[-2]))
    if scale > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
    return make_grid(images, nrow=nrow, padding=2, pad_value=1.0)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of ``a`` and ``b`` at fractions ``t`` -> (len(t), *a.shape)."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(-1).clamp(-1 + 1e-6, 1 - 1e-6))[None, :, None]
    t = t.view(-1, 1, 1)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def _first_batch(trainer: L.Trainer, n: int) -> Any:
    """The first ``n`` items of the first validation batch (training batch when there is no validation)."""
    dm = getattr(trainer, "datamodule", None)
    loader = dm.val_dataloader() if dm is not None else (trainer.val_dataloaders or trainer.train_dataloader)
    batch = next(iter(loader))
    x = batch[0] if isinstance(batch, (list, tuple)) else batch
    return x[:n]


class _EveryNEpochs(L.Callback):
    """Calls :meth:`write` every ``every_n_epochs`` training epochs and once more at the end of training."""

    def __init__(self, every_n_epochs: int = 5, seed: int = 0) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs, self.seed, self._written_epoch = every_n_epochs, seed, -1

    def _maybe_write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or self._written_epoch == trainer.current_epoch or trainer.sanity_checking:
            return
        self._written_epoch = trainer.current_epoch
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                self.write(trainer, pl_module)
        finally:
            pl_module.train(was_training)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._maybe_write(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._maybe_write(trainer, pl_module)

    def _noise(self, pl_module: L.LightningModule, n: int) -> torch.Tensor:
        return pl_module.sample_latent(n, torch.Generator().manual_seed(self.seed))

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        raise NotImplementedError


class SampleGrid(_EveryNEpochs):
    """Grids of samples from a fixed noise batch (``samples``) and of inputs beside reconstructions
    (``reconstructions``), whichever the model supports; 2-D points become a scatter plot."""

    def __init__(self, every_n_epochs: int = 5, num_samples: int = 64, seed: int = 0) -> None:
        super().__init__(every_n_epochs, seed)
        self.num_samples = num_samples

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if hasattr(pl_module, "sample_latent") and hasattr(pl_module, "decode_unit"):
            samples = pl_module.decode_unit(self._noise(pl_module, self.num_samples))
            if samples.dim() == 2:
                self._scatter(trainer, pl_module)
            else:
                log_image(trainer, "samples", image_grid(samples, nrow=int(len(samples) ** 0.5)))
        if hasattr(pl_module, "reconstruct_unit"):
            x = _first_batch(trainer, self.num_samples // 2).to(pl_module.device)
            pairs = torch.stack([pl_module.to_unit(x), pl_module.reconstruct_unit(x)], dim=1).flatten(0, 1)
            log_image(trainer, "reconstructions", image_grid(pairs, nrow=16))

    def _scatter(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fake = pl_module.decode_unit(self._noise(pl_module, 2500)).cpu()
        fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
        real = _first_batch(trainer, 2500).cpu()
        ax.scatter(real[:, 0], real[:, 1], s=2, c="0.6", label="real")
        ax.scatter(fake[:, 0], fake[:, 1], s=2, c="tab:red", alpha=0.5, label="generated")
        ax.set(aspect="equal", title=f"epoch {trainer.current_epoch}")
        ax.legend(loc="upper right", fontsize=7, markerscale=4)
        fig.tight_layout()
        log_figure(trainer, "samples", fig)


class LatentInterpolation(_EveryNEpochs):
    """Rows of decoded latents interpolated between two endpoints (``interpolation`` image).

    Endpoints are prior samples (spherical interpolation) for models with ``sample_latent`` and
    encodings of real images (linear interpolation) for plain autoencoders.
    """

    def __init__(self, every_n_epochs: int = 5, rows: int = 6, steps: int = 10, seed: int = 1) -> None:
        super().__init__(every_n_epochs, seed)
        self.rows, self.steps = rows, steps

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        t = torch.linspace(0, 1, self.steps, device=pl_module.device)
        if hasattr(pl_module, "sample_latent"):
            z = self._noise(pl_module, 2 * self.rows)
            path = slerp(z[: self.rows], z[self.rows:], t)
        else:
            z = pl_module.encode_latent(_first_batch(trainer, 2 * self.rows).to(pl_module.device))
            a, b = z[: len(z) // 2], z[len(z) // 2: 2 * (len(z) // 2)]
            path = a[None] + t.view(-1, 1, 1) * (b - a)[None]
        images = pl_module.decode_unit(path.transpose(0, 1).flatten(0, 1))  # row-major: one row per pair
        if images.dim() == 4:
            log_image(trainer, "interpolation", image_grid(images, nrow=self.steps))
