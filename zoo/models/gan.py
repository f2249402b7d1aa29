"""GANs with Lightning 2.x manual optimisation: a DCGAN for images (``gan``) and an MLP GAN for
2-D point mixtures (``gan2d``), with non-saturating BCE, hinge and WGAN-GP losses.

``forward(z)`` generates (images in [-1, 1], or points). Quality is measured at test time (see
:mod:`zoo.generative_metrics`): classifier-feature Fréchet distance and class histogram for images,
modes covered and high-quality fraction for points.

Example:
    >>> gan = GAN(in_channels=1, image_size=8, latent_dim=32)
    >>> gan(torch.randn(4, 32)).shape
    torch.Size([4, 1, 8, 8])
"""
from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from zoo.datamodules.interfaces import PointMixtureData, missing_members
from zoo.errors import ZooUserError
from zoo.generative_metrics import PixelSpaceMixin, build_image_quality, mode_metrics
from zoo.models.base import ZooModule
from zoo.models.dcgan import DCGANDiscriminator, DCGANGenerator, Norm, check_latent_dim, mlp

__all__ = ["GANBase", "GAN", "PointGAN", "discriminator_loss", "generator_loss", "gradient_penalty", "r1_penalty"]

GANLoss = Literal["bce", "hinge", "wgan-gp"]


def discriminator_loss(kind: GANLoss, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D's loss without the gradient penalty (added by the caller for WGAN-GP)."""
    if kind == "bce":
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    if kind == "wgan-gp":
        return fake_logits.mean() - real_logits.mean()
    raise ZooUserError(f"unknown GAN loss '{kind}'; choose bce, hinge or wgan-gp")


def generator_loss(kind: GANLoss, fake_logits: torch.Tensor) -> torch.Tensor:
    """G's loss: non-saturating ``-log D(G(z))`` for BCE, ``-D(G(z))`` for hinge and WGAN-GP."""
    return F.softplus(-fake_logits).mean() if kind == "bce" else -fake_logits.mean()


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: ``E[(||grad D(x_hat)|| - 1)^2]`` on random interpolates of real and fake samples."""
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def r1_penalty(critic: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al., 2018): ``E[||grad D(x)||^2]`` on real samples, for sharp, stable modes."""
    real = real.detach().requires_grad_(True)
    grad, = torch.autograd.grad(critic(real).sum(), real, create_graph=True)
    return grad.flatten(1).pow(2).sum(dim=1).mean()


class GANBase(ZooModule):
    """Generator/discriminator training loop shared by the image and point GANs.

    Subclasses build ``self.generator`` and ``self.discriminator`` and implement :meth:`real_from_batch`.
    Each training batch makes one D step; G steps on every ``n_critic``-th batch.
    """

    monitor = None  # no natural validation loss: the CLI skips early stopping and keeps the last checkpoint
    predict_hint = ("a GAN generates from noise, not from inputs: its samples are the PNGs in the run's artifacts/; "
                    "from Python, GAN.load_from_checkpoint(path)(torch.randn(n, latent_dim)) generates n more")
    export_formats = ("onnx", "torchscript")

    def _setup_gan(self, latent_dim: int, loss: str, n_critic: int | None, ema_decay: float = 0.0) -> None:
        check_latent_dim(latent_dim)
        if not 0.0 <= ema_decay < 1.0:
            raise ZooUserError(f"ema_decay must be in [0, 1) (0: off, e.g. 0.999), got {ema_decay}")
        if loss not in ("bce", "hinge", "wgan-gp"):
            raise ZooUserError(f"unknown GAN loss '{loss}'; choose bce, hinge or wgan-gp")
        self.n_critic = n_critic if n_critic is not None else (5 if loss == "wgan-gp" else 1)
        if self.n_critic < 1:
            raise ZooUserError(f"n_critic must be >= 1, got {n_critic}")
        self.automatic_optimization = False
        self.example_input_array = torch.zeros(2, latent_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def weight_averaging(self) -> list:
        """Lightning's EMA of the weights when ``ema_decay`` > 0: validation, test and the saved checkpoints
        use the averaged generator (the running weights stay in the checkpoint for resuming)."""
        from lightning.pytorch.callbacks import EMAWeightAveraging

        decay = self.hparams.get("ema_decay", 0.0)
        return [EMAWeightAveraging(decay=decay)] if decay > 0 else []

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.hparams.latent_dim, generator=generator).to(self.device)

    def real_from_batch(self, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        betas = (hp.beta1, hp.beta2)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=hp.lr, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=hp.lr_d or hp.lr, betas=betas)
        return opt_g, opt_d

    def _optimise(self, opt: Any, loss: torch.Tensor) -> None:
        self.toggle_optimizer(opt)  # only this network's parameters take gradients
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()
        self.untoggle_optimizer(opt)

    def discriminator_step(self, real: torch.Tensor) -> torch.Tensor:
        """One D update on ``real`` and as many detached fakes; returns D's loss."""
        _, opt_d = self.optimizers()
        with torch.no_grad():
            fake = self(self.sample_latent(len(real)))
        kind = self.hparams.loss
        loss = discriminator_loss(kind, self.discriminator(real), self.discriminator(fake))
        if kind == "wgan-gp":
            loss = loss + self.hparams.gp_weight * gradient_penalty(self.discriminator, real, fake)
        if self.hparams.get("r1_weight", 0.0) > 0:
            loss = loss + self.hparams.r1_weight / 2 * r1_penalty(self.discriminator, real)
        self._optimise(opt_d, loss)
        return loss.detach()

    def generator_step(self, n: int) -> torch.Tensor:
        """One G update on ``n`` fresh samples; returns G's loss."""
        opt_g, _ = self.optimizers()
        loss = generator_loss(self.hparams.loss, self.discriminator(self(self.sample_latent(n))))
        self._optimise(opt_g, loss)
        return loss.detach()

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        real = self.real_from_batch(batch)
        d_loss = self.discriminator_step(real)
        out = {"d_loss": d_loss}
        self.log("train/d_loss", d_loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(real))
        if batch_idx % self.n_critic == 0:
            out["loss"] = out["g_loss"] = self.generator_step(len(real))
            self.log("train/g_loss", out["g_loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=len(real))
        return out


class GAN(PixelSpaceMixin, GANBase):
    """DCGAN image generator (BN + ReLU G, BN + LeakyReLU D, DCGAN init) with classifier-feature FID at test.

    Args:
        num_classes / in_channels / image_size: filled in from the DataModule by the CLI
            (sizes b*2^k with b in 3..7, k >= 1: 8, 16, 28, 32, 64, ...).
        latent_dim: size of the Gaussian noise vector.
        g_width / d_width: channels at full resolution (doubling at every halving).
        loss: ``bce`` (non-saturating), ``hinge`` or ``wgan-gp``.
        d_norm: D's normalisation; default batch, and layer norm for WGAN-GP (batch norm breaks the penalty).
        n_critic: D steps per G step (default 1, and 5 for WGAN-GP).
        gp_weight: WGAN-GP's gradient-penalty weight lambda.
        r1_weight: R1 penalty on D's gradient at real images (0: off).
        lr / lr_d / beta1 / beta2: Adam for G (and D; ``lr_d`` defaults to ``lr``).
        classifier_ckpt: a zoo ``cnn`` checkpoint on the same data for the test metrics; when unset a
            CNN is trained on the train split at test time.
        classifier_epochs: epochs of that test-time CNN (when ``classifier_ckpt`` is unset).
        ema_decay: exponential moving average of the weights (Lightning's ``EMAWeightAveraging``) used for
            validation, test and checkpoints; 0 turns it off.
        sample_every: write sample and interpolation grids every N epochs (0: never).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 8, latent_dim: int = 32,
                 g_width: int = 32, d_width: int = 32, loss: GANLoss = "bce", d_norm: Norm | None = None,
                 n_critic: int | None = None, gp_weight: float = 10.0, r1_weight: float = 0.0, lr: float = 5e-4,
                 lr_d: float | None = None,
                 beta1: float = 0.5, beta2: float = 0.999, classifier_ckpt: str | None = None,
                 classifier_epochs: int = 10, ema_decay: float = 0.0, sample_every: int = 5) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._setup_gan(latent_dim, loss, n_critic, ema_decay)
        if d_norm == "batch" and loss == "wgan-gp":
            raise ZooUserError("WGAN-GP's gradient penalty is invalid with batch norm in D; use --model.d_norm layer")
        self.generator = DCGANGenerator(latent_dim, in_channels, image_size, g_width, out_activation="tanh")
        d_norm = d_norm or ("layer" if loss == "wgan-gp" else "batch")
        self.discriminator = DCGANDiscriminator(in_channels, image_size, d_width, d_norm, out_features=1)

    def decode_unit(self, z: torch.Tensor) -> torch.Tensor:
        """Latent vectors -> generated images in [0, 1]."""
        return (self(z) + 1) / 2

    def real_from_batch(self, batch: Any) -> torch.Tensor:
        return self.to_unit(batch[0]) * 2 - 1

    def configure_callbacks(self) -> list:
        from zoo.callbacks.samplers import LatentInterpolation, SampleGrid

        every = self.hparams.sample_every
        return self.weight_averaging() + ([SampleGrid(every), LatentInterpolation(every)] if every > 0 else [])

    def on_test_epoch_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "train_dataloader") or not hasattr(dm, "num_classes"):
            raise ZooUserError("GAN test metrics need an image DataModule (e.g. --data digits or mnist)")
        epochs = 1 if self.trainer.fast_dev_run else self.hparams.classifier_epochs  # a smoke test needs no good CNN
        self.quality, seconds = build_image_quality(dm, self.hparams.classifier_ckpt, epochs, self.device)
        self.log("test/classifier_seconds", seconds)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.quality.update(self.to_unit(x), self.decode_unit(self.sample_latent(len(x))), y)

    def on_test_epoch_end(self) -> None:
        for x, _ in self.trainer.datamodule.train_dataloader():  # real-vs-real reference: train vs test images
            need = self.quality.reference_needed()
            if need <= 0:
                break
            self.quality.update_reference(self.to_unit(x[:need].to(self.device)))
        self.log_dict({f"test/{k}": float(v) for k, v in self.quality.compute().items()})
        del self.quality


class PointGAN(GANBase):
    """MLP GAN for 2-D mixtures (``ring2d``, ``grid2d``) reporting modes covered and high-quality share.

    Args:
        latent_dim: noise size.
        hidden: widths of G's and D's hidden layers.
        loss / n_critic / gp_weight / lr / lr_d / beta1 / beta2: as for ``gan``.
        r1_weight: R1 penalty on D's gradient at real points (0: off).
        pack: PacGAN packing, D judges ``pack`` samples at once (1 = plain GAN). The defaults
            (two-time-scale Adam, PacGAN-2, R1) cover all 8 ``ring2d`` modes; a plain GAN
            (``--model.pack 1 --model.r1_weight 0``) collapses to one or two.
        num_eval_samples: generated points scored against the mode centres at val/test.
        ema_decay: as for ``gan``; on by default here: the averaged generator puts ~92-93 % of its samples
            within 3 std of a mode on ``ring2d`` (85-92 % without).
        sample_every: write a scatter plot of samples every N epochs (0: never).
    """

    trainer_defaults = {"max_epochs": 100}  # 12.8k steps: fewer leave modes half-learnt
    data_interface = PointMixtureData

    def __init__(self, latent_dim: int = 16, hidden: tuple[int, ...] = (128, 128, 128), loss: GANLoss = "bce",
                 n_critic: int | None = None, gp_weight: float = 0.1, r1_weight: float = 0.1, pack: int = 2,
                 lr: float = 2e-4, lr_d: float | None = 8e-4, beta1: float = 0.5, beta2: float = 0.999,
                 num_eval_samples: int = 2500, ema_decay: float = 0.999, sample_every: int = 5) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._setup_gan(latent_dim, loss, n_critic, ema_decay)
        if pack < 1:
            raise ZooUserError(f"pack must be >= 1, got {pack}")
        self.generator = mlp(latent_dim, hidden, 2, "relu")
        self.discriminator = nn.Sequential(nn.Unflatten(0, (-1, pack)), nn.Flatten(1),
                                           mlp(2 * pack, hidden, 1, "leaky_relu"))

    def real_from_batch(self, batch: Any) -> torch.Tensor:
        x = batch[0]
        return x[: len(x) - len(x) % self.hparams.pack]

    def decode_unit(self, z: torch.Tensor) -> torch.Tensor:
        return self(z)

    def configure_callbacks(self) -> list:
        from zoo.callbacks.samplers import SampleGrid

        every = self.hparams.sample_every
        return self.weight_averaging() + ([SampleGrid(every)] if every > 0 else [])

    def _score(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or missing_members(dm, PointMixtureData):
            raise ZooUserError("gan2d metrics need a point-mixture DataModule with centres (--data ring2d or grid2d)")
        gen = torch.Generator().manual_seed(1234)
        fake = self(self.sample_latent(self.hparams.num_eval_samples, gen))
        real = dm.reference_points(stage)
        metrics = {f"{stage}/{k}": float(v) for k, v in mode_metrics(fake, dm.centers, dm.std).items()}
        metrics.update({f"{stage}/{k}_real": float(v) for k, v in mode_metrics(real, dm.centers, dm.std).items()
                        if k != "mode_min_frac"})
        self.log_dict(metrics)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        pass  # scored once per epoch from fresh samples in on_validation_epoch_end

    def on_validation_epoch_end(self) -> None:
        self._score("val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        pass

    def on_test_epoch_end(self) -> None:
        self._score("test")
