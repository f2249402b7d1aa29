"""Generative family: DCGAN shapes, manual optimisation, quality metrics, VAE KL, samplers, NaN guard."""
from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from zoo.callbacks.nan_guard import NanGuard, NonFiniteLossError
from zoo.datamodules.images import DigitsDataModule
from zoo.datamodules.points import Grid2DDataModule, Ring2DDataModule, mixture_centers
from zoo.errors import ZooUserError
from zoo.generative_metrics import class_histogram, mode_metrics
from zoo.models.autoencoder import VAE, Autoencoder, kl_divergence
from zoo.models.dcgan import DCGANDiscriminator, DCGANGenerator, dcgan_plan
from zoo.models.gan import GAN, PointGAN
from zoo.registry import create_model


@pytest.mark.parametrize("size", [8, 28, 32])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes(size, channels):
    gan = GAN(in_channels=channels, image_size=size, latent_dim=8, g_width=8, d_width=8)
    fake = gan(torch.randn(3, 8))
    assert fake.shape == (3, channels, size, size)
    assert fake.abs().max() <= 1.0  # tanh output
    assert gan.discriminator(fake).shape == (3, 1)
    ae = Autoencoder(in_channels=channels, image_size=size, latent_dim=4, width=8)
    assert ae(torch.randn(2, channels, size, size)).shape == (2, channels, size, size)


def test_dcgan_plan_and_bad_sizes():
    assert dcgan_plan(8) == (4, 1) and dcgan_plan(28) == (7, 2) and dcgan_plan(32) == (4, 3)
    for size in (9, 30, 4, 100):
        with pytest.raises(ZooUserError, match=r"image_size %d .*e\.g\. 8, 16, 28, 32, 64" % size):
            GAN(image_size=size)
    with pytest.raises(ZooUserError, match="latent_dim must be positive"):
        DCGANGenerator(0, 1, 8)
    with pytest.raises(ZooUserError, match="latent_dim"):
        create_model("vae", latent_dim=-1)
    with pytest.raises(ZooUserError, match="batch norm"):
        GAN(loss="wgan-gp", d_norm="batch")
    with pytest.raises(ZooUserError, match="anomaly_classes"):
        Autoencoder(anomaly_classes=(10,))


def test_dcgan_init_and_norms():
    d = DCGANDiscriminator(1, 8, width=16, norm="layer")
    conv = d.net[0]
    assert abs(conv.weight.std().item() - 0.02) < 0.01
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in GAN(image_size=8).discriminator.modules())


def _snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def _changed(before, module):
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


class _SpyGAN(GAN):
    """Records which networks each optimisation step changed."""

    def discriminator_step(self, real):
        g, d = _snapshot(self.generator), _snapshot(self.discriminator)
        loss = super().discriminator_step(real)
        self.record.append(("D", _changed(g, self.generator), _changed(d, self.discriminator)))
        return loss

    def generator_step(self, n):
        g, d = _snapshot(self.generator), _snapshot(self.discriminator)
        loss = super().generator_step(n)
        self.record.append(("G", _changed(g, self.generator), _changed(d, self.discriminator)))
        return loss


@pytest.mark.parametrize("loss,n_critic", [("bce", 1), ("hinge", 1), ("wgan-gp", 2)])
def test_manual_optimisation_updates_only_the_intended_network(make_trainer, loss, n_critic):
    gan = _SpyGAN(image_size=8, latent_dim=8, g_width=8, d_width=8, loss=loss, n_critic=n_critic, sample_every=0)
    gan.record = []
    g0, d0 = _snapshot(gan.generator), _snapshot(gan.discriminator)
    make_trainer(limit_train_batches=2, limit_val_batches=0).fit(gan, DigitsDataModule(batch_size=16))
    # step -> (changed G, changed D): D steps touch only D, G steps only G
    expected = [("D", False, True), ("G", True, False), ("D", False, True)] + \
        ([("G", True, False)] if n_critic == 1 else [])
    assert gan.record == expected
    assert _changed(g0, gan.generator) and _changed(d0, gan.discriminator)
    assert not gan.automatic_optimization


def test_mode_metrics_known_answer():
    centers = mixture_centers("ring", 8)
    assert torch.allclose(centers.norm(dim=1), torch.full((8,), 2.0))
    std = 0.02
    samples = torch.cat([
        centers[0].repeat(100, 1),                                   # on mode 0: high quality
        centers[1].repeat(100, 1) + torch.tensor([0.05, 0.0]),       # 2.5 std from mode 1: high quality
        centers[2].repeat(100, 1) + torch.tensor([0.0, 0.07]),       # 3.5 std from mode 2: not
        torch.zeros(97, 2),                                          # centre of the ring: not
        centers[3].repeat(3, 1),                                     # too few to count mode 3 as covered
    ])
    out = mode_metrics(samples, centers, std)
    assert out["modes"] == 2
    assert out["hq_frac"] == pytest.approx(203 / 400)
    assert mode_metrics(centers.repeat(10, 1), centers, std)["modes"] == 8


def test_point_datamodules_and_bad_configs():
    dm = Ring2DDataModule(num_train=512, num_val=64, num_test=2500)
    dm.setup()
    x, mode = dm.splits["test"]
    assert mode_metrics(x, dm.centers, dm.std) == pytest.approx({"modes": 8, "hq_frac": 1.0, "mode_min_frac": 0.11},
                                                                abs=0.02)
    grid = Grid2DDataModule()
    assert grid.num_modes == 25 and grid.centers.min() == -4 and grid.centers.max() == 4
    with pytest.raises(ZooUserError, match="num_modes must be positive"):
        Ring2DDataModule(num_modes=0)
    with pytest.raises(ZooUserError, match="square number"):
        Ring2DDataModule(layout="grid", num_modes=24)


def test_class_histogram():
    out = class_histogram(torch.tensor([0, 0, 1, 1, 2, 2, 2, 2, 2, 2] * 10), num_classes=4)
    assert out["classes_present"] == 3 and out["class_frac_2"] == pytest.approx(0.6) and out["class_min_frac"] == 0


def test_vae_kl_closed_form():
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(4.0)]])
    # 0.5 * (mu^2 + var - 1 - log var) per dimension: 0.5 * 1 + 0.5 * (4 - 1 - log 4)
    assert kl_divergence(mu, logvar).item() == pytest.approx(0.5 + 0.5 * (3 - math.log(4.0)))
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    ref = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(kl_divergence(mu, logvar), ref, atol=1e-5)
    vae = VAE(image_size=8, latent_dim=4, width=8, kl_weight=2.0, kl_anneal_steps=100)
    assert vae.kl_weight_now() == 0.0  # training mode at step 0: annealing starts at 0
    vae.eval()
    x = torch.randn(4, 1, 8, 8)
    terms = vae.loss_terms(x, x, "val")
    assert terms["loss"].item() == pytest.approx((terms["rec"] + 2.0 * terms["kl"]).item(), rel=1e-5)


def _pngs(root, prefix):
    return sorted((root / "artifacts").glob(f"{prefix}_step*.png"))


@pytest.mark.parametrize("with_logger", [False, True])
def test_samplers_write_pngs(make_trainer, tmp_path, with_logger):
    logger = CSVLogger(tmp_path, name="csv") if with_logger else False
    gan = GAN(image_size=8, latent_dim=8, g_width=8, d_width=8, sample_every=1)
    make_trainer(limit_train_batches=2, max_epochs=2, logger=logger).fit(gan, DigitsDataModule(batch_size=16))
    assert len(_pngs(tmp_path, "samples")) == 2 and len(_pngs(tmp_path, "interpolation")) == 2
    from PIL import Image

    grid = Image.open(_pngs(tmp_path, "samples")[0])
    assert grid.size == (8 * 66 + 2, 8 * 66 + 2)  # 64 samples, 8x8 grid, 8x8 digits enlarged to 64 px, 2-pixel gaps


def test_autoencoder_and_vae_samplers(make_trainer, tmp_path):
    dm = DigitsDataModule(batch_size=32)
    for cls in (Autoencoder, VAE):
        make_trainer(limit_train_batches=2, limit_val_batches=1, default_root_dir=tmp_path / cls.__name__).fit(
            cls(image_size=8, width=8, sample_every=1), dm)
    for name in ("Autoencoder", "VAE"):
        assert len(_pngs(tmp_path / name, "reconstructions")) == 1 and len(_pngs(tmp_path / name, "interpolation")) == 1
    assert not _pngs(tmp_path / "Autoencoder", "samples") and _pngs(tmp_path / "VAE", "samples")  # VAE: prior


def test_autoencoder_learns_and_scores_anomalies(make_trainer):
    torch.manual_seed(0)
    dm = DigitsDataModule(batch_size=64)
    ae = Autoencoder(image_size=8, arch="dense", hidden=(128,), latent_dim=8, anomaly_classes=(0,), sample_every=0)
    trainer = make_trainer(max_epochs=8)
    trainer.fit(ae, dm)
    out = trainer.test(ae, dm, verbose=False)[0]
    x = dm.splits["test"][0].float() / 255
    baseline = (x - x.mean(0)).pow(2).mean().item()  # predicting the mean image
    assert out["test/mse"] < 0.6 * baseline
    assert out["test/mse_anomalous"] > out["test/mse"] and out["test/auroc"] > 0.6


def test_gan_test_metrics(make_trainer):
    torch.manual_seed(0)
    gan = GAN(image_size=8, latent_dim=8, g_width=8, d_width=8, classifier_epochs=2, sample_every=0)
    out = make_trainer().test(gan, DigitsDataModule(batch_size=128), verbose=False)[0]
    assert out["test/classifier_acc"] > 0.5
    assert 0 <= out["test/fid_classifier_real"] < out["test/fid_classifier"]  # untrained G is far from the data
    assert 1 <= out["test/classes_present"] <= 10
    assert sum(out[f"test/class_frac_{c}"] for c in range(10)) == pytest.approx(1.0)
    with pytest.raises(ZooUserError, match="does not exist"):
        make_trainer().test(GAN(image_size=8, classifier_ckpt="/no.ckpt", sample_every=0), DigitsDataModule())


def test_point_gan_runs_and_scores(make_trainer, tmp_path):
    dm = Ring2DDataModule(num_train=1024, num_val=256, num_test=256)
    gan = PointGAN(hidden=(32, 32), pack=2, sample_every=1, num_eval_samples=500)
    trainer = make_trainer(max_epochs=1, limit_train_batches=3)
    trainer.fit(gan, dm)
    assert {"val/hq_frac", "val/modes"} <= set(trainer.callback_metrics) and len(_pngs(tmp_path, "samples")) == 1
    out = trainer.test(gan, dm, verbose=False)[0]
    assert 0 <= out["test/modes"] <= 8 and 0 <= out["test/hq_frac"] <= 1
    assert out["test/modes_real"] == 8 and out["test/hq_frac_real"] > 0.98


class _Exploding(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        return loss * float("nan") if batch_idx == 2 else loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_nan_guard_stops_before_checkpointing(make_trainer, tmp_path):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(40, 2)), batch_size=4)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1, filename="{step}")
    trainer = make_trainer(callbacks=[NanGuard(), ckpt], enable_checkpointing=True)
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at step 3 \(epoch 0, batch 2\)"):
        trainer.fit(_Exploding(), data)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step=1.ckpt", "step=2.ckpt"]
    assert isinstance(NonFiniteLossError("x"), ZooUserError)


@pytest.mark.parametrize("model,augment", [("gan", "none"), ("autoencoder", "none"), ("vae", "none"), ("cnn", "shift")])
def test_generative_models_learn_unaugmented_images(build_cli, model: str, augment: str) -> None:
    """MNIST's preset augments (random shift) for classifiers; GANs and autoencoders get the images as they are."""
    cli = build_cli(model, "mnist", "--data.data_dir=/nonexistent")
    assert cli.datamodule.augment == augment
    cli = build_cli(model, "mnist", "--data.data_dir=/x", "--data.augment=flip_shift")
    assert cli.datamodule.augment == "flip_shift"


def test_augmenting_datamodule_warns_a_generative_model(make_trainer) -> None:
    dm = DigitsDataModule(batch_size=32, augment="shift")
    with pytest.warns(UserWarning, match="will learn the augmented images"):
        make_trainer(max_steps=1, limit_val_batches=0).fit(GAN(latent_dim=8, sample_every=0), dm)


def test_ema_generator_is_what_checkpoints_and_evaluation_use(make_trainer, tmp_path) -> None:
    """With ema_decay the saved state_dict is Lightning's weight average; the running weights are kept for resuming."""
    L.seed_everything(0)
    with pytest.raises(ZooUserError, match="ema_decay must be in"):
        PointGAN(ema_decay=1.0)
    model = PointGAN(hidden=(16,), ema_decay=0.5, sample_every=0, num_eval_samples=64)
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    make_trainer(max_steps=6, limit_val_batches=0, enable_checkpointing=True, callbacks=[ckpt]).fit(
        model, Ring2DDataModule(num_train=512, num_val=64, num_test=64, batch_size=64))
    saved = torch.load(ckpt.last_model_path, weights_only=True)
    key = next(k for k in saved["state_dict"] if k.startswith("generator") and k.endswith("weight"))
    assert not torch.equal(saved["state_dict"][key], saved["current_model_state"][key])  # average != running
    assert torch.equal(model.state_dict()[key], saved["state_dict"][key])  # after fit the model holds the average
