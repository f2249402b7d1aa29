"""Autoencoders: dense or convolutional (DCGAN-style) encoder/decoder, denoising mode, a VAE, and
anomaly detection by reconstruction error.

``anomaly_classes`` removes those classes from training and validation; at test the per-image
reconstruction error scores every image and ``test/auroc`` says how well it separates them.

Example:
    >>> ae = Autoencoder(in_channels=1, image_size=28, latent_dim=16)
    >>> ae(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 1, 28, 28])
"""
from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from zoo.errors import ZooUserError
from zoo.generative_metrics import PixelSpaceMixin
from zoo.models.base import OptimizerName, SchedulerName, ZooModule
from zoo.models.dcgan import DCGANDiscriminator, DCGANGenerator, check_latent_dim, mlp

__all__ = ["Autoencoder", "VAE", "kl_divergence"]


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample, summed over latent dimensions."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(dim=1)


class Autoencoder(PixelSpaceMixin, ZooModule):
    """Autoencoder (conv or dense) with optional input noise and reconstruction-error anomaly AUROC.

    Args:
        num_classes / in_channels / image_size: filled in from the DataModule by the CLI.
        arch: ``conv`` (DCGAN-style stride-2 convs; sizes b*2^k, b in 3..7) or ``dense`` (MLP on pixels).
        latent_dim: bottleneck size.
        width: conv channels at full resolution (``conv``).
        hidden: hidden layer widths of the encoder, mirrored in the decoder (``dense``).
        noise_std: Gaussian noise added to training inputs (denoising autoencoder), in data units.
        anomaly_classes: class labels left out of training/validation and scored as anomalies at test.
        optimizer / lr / weight_decay / scheduler: the optimisation recipe.
        sample_every: write reconstruction and interpolation grids every N epochs (0: never).
    """

    monitor, monitor_mode = "val/loss", "min"
    predict_hint = ("its reconstructions and samples are the PNGs in the run's artifacts/; from Python, "
                    "Autoencoder.load_from_checkpoint(path)(images) reconstructs")
    latent_factor = 1  # the encoder outputs latent_dim * latent_factor numbers

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 8,
                 arch: Literal["conv", "dense"] = "conv", latent_dim: int = 16, width: int = 32,
                 hidden: tuple[int, ...] = (256, 128), noise_std: float = 0.0, anomaly_classes: tuple[int, ...] = (),
                 optimizer: OptimizerName = "adamw", lr: float = 2e-3, weight_decay: float = 1e-5,
                 scheduler: SchedulerName = "cosine", sample_every: int = 5) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_latent_dim(latent_dim)
        if noise_std < 0:
            raise ZooUserError(f"noise_std must be >= 0, got {noise_std}")
        bad = [c for c in anomaly_classes if not 0 <= c < num_classes]
        if bad or len(set(anomaly_classes)) >= num_classes:
            raise ZooUserError(f"anomaly_classes {list(anomaly_classes)} "
                               f"must be some (not all) of 0..{num_classes - 1}")
        out = latent_dim * self.latent_factor
        if arch == "conv":
            self.encoder = DCGANDiscriminator(in_channels, image_size, width, "batch", out_features=out)
            self.decoder = DCGANGenerator(latent_dim, in_channels, image_size, width, out_activation="none")
        elif arch == "dense":
            pixels = in_channels * image_size * image_size
            self.encoder = nn.Sequential(nn.Flatten(), mlp(pixels, hidden, out))
            self.decoder = nn.Sequential(mlp(latent_dim, hidden[::-1], pixels),
                                         nn.Unflatten(1, (in_channels, image_size, image_size)))
        else:
            raise ZooUserError(f"unknown arch '{arch}'; choose conv or dense")
        self.register_buffer("anomalous", torch.tensor(list(anomaly_classes), dtype=torch.long))
        self.test_auroc = torchmetrics.classification.BinaryAUROC()
        self.example_input_array = torch.zeros(2, in_channels, image_size, image_size)

    # --- the pieces the sample callbacks use -------------------------------------------------------
    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[:, : self.hparams.latent_dim]

    def decode_unit(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_unit(self.decoder(z)).clamp(0, 1)

    def reconstruct_unit(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_unit(self.encode_latent(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode_latent(x))

    def configure_callbacks(self) -> list:
        from zoo.callbacks.samplers import LatentInterpolation, SampleGrid

        every = self.hparams.sample_every
        return [SampleGrid(every), LatentInterpolation(every)] if every > 0 else []

    # --- training --------------------------------------------------------------------------------
    def loss_terms(self, inputs: torch.Tensor, target: torch.Tensor, stage: str) -> dict[str, torch.Tensor]:
        """The loss and its parts for a batch; ``recon`` is the reconstruction (data units)."""
        recon = self(inputs)
        return {"loss": F.mse_loss(recon, target), "recon": recon}

    def _split(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = (batch[0], batch[1]) if isinstance(batch, (list, tuple)) and len(batch) > 1 else (batch, None)
        is_anomaly = torch.isin(y, self.anomalous) if y is not None else torch.zeros(len(x), dtype=torch.bool,
                                                                                      device=x.device)
        return x, is_anomaly

    def _fit_step(self, batch: Any, stage: str) -> torch.Tensor | None:
        x, is_anomaly = self._split(batch)
        x = x[~is_anomaly]  # anomalies never take part in training or validation
        if len(x) == 0:
            return None
        inputs = x + self.hparams.noise_std * torch.randn_like(x) if stage == "train" and self.hparams.noise_std else x
        terms = self.loss_terms(inputs, x, stage)
        for name, value in terms.items():
            if name != "recon":
                self.log(f"{stage}/{name}", value, on_step=stage == "train", on_epoch=True, prog_bar=name == "loss",
                         batch_size=len(x))
        return terms["loss"]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        return self._fit_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._fit_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, is_anomaly = self._split(batch)
        recon = self(x)
        score = (self.to_unit(recon) - self.to_unit(x)).pow(2).flatten(1).mean(dim=1)  # pixel-space MSE in [0,1]
        for name, mask in (("mse", ~is_anomaly), ("mse_anomalous", is_anomaly)):
            if mask.any():
                self.log(f"test/{name}", score[mask].mean(), on_epoch=True, batch_size=int(mask.sum()))
        if len(self.anomalous):
            self.test_auroc.update(score, is_anomaly.long())
            self.log("test/auroc", self.test_auroc, on_epoch=True)

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return (self.to_unit(self(x)) - self.to_unit(x)).pow(2).flatten(1).mean(dim=1)


class VAE(Autoencoder):
    """Variational autoencoder: Gaussian encoder (reparameterisation), KL weight with linear annealing,
    sampling from the N(0, I) prior. Loss = summed squared error per image + weight * KL.

    Args (beyond ``autoencoder``'s):
        kl_weight: final weight of the KL term (beta; 1 is the ELBO with a unit-variance decoder).
        kl_anneal_steps: training steps over which the weight rises linearly from 0 (0: no annealing).
    """

    latent_factor = 2

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 8,
                 arch: Literal["conv", "dense"] = "conv", latent_dim: int = 16, width: int = 32,
                 hidden: tuple[int, ...] = (256, 128), noise_std: float = 0.0, anomaly_classes: tuple[int, ...] = (),
                 kl_weight: float = 1.0, kl_anneal_steps: int = 500, optimizer: OptimizerName = "adamw",
                 lr: float = 2e-3, weight_decay: float = 1e-5, scheduler: SchedulerName = "cosine",
                 sample_every: int = 5) -> None:
        super().__init__(num_classes, in_channels, image_size, arch, latent_dim, width, hidden, noise_std,
                         anomaly_classes, optimizer, lr, weight_decay, scheduler, sample_every)
        if kl_weight < 0 or kl_anneal_steps < 0:
            raise ZooUserError("kl_weight and kl_anneal_steps must be >= 0")
        self.save_hyperparameters()

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z|x)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.hparams.latent_dim, generator=generator).to(self.device)

    def kl_weight_now(self) -> float:
        hp = self.hparams
        if not hp.kl_anneal_steps or not self.training:
            return hp.kl_weight  # validation / test always use the full weight, so val/loss is comparable
        return hp.kl_weight * min(1.0, self.global_step / hp.kl_anneal_steps)

    def loss_terms(self, inputs: torch.Tensor, target: torch.Tensor, stage: str) -> dict[str, torch.Tensor]:
        mu, logvar = self.encode(inputs)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if stage == "train" else mu
        recon = self.decoder(z)
        rec = F.mse_loss(recon, target, reduction="sum") / len(target)
        kl = kl_divergence(mu, logvar).mean()
        return {"loss": rec + self.kl_weight_now() * kl, "rec": rec, "kl": kl, "recon": recon}
