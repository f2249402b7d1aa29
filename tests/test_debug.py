"""Looking inside a network: activation and gradient statistics, vanishing / exploding warnings, Grad-CAM."""
from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from zoo.callbacks.health import ActivationStats, GradientHealth, activation_stats
from zoo.callbacks.inspect_images import grad_cam


class Regressor(L.LightningModule):
    """A plain MLP regressor for the detectors: ``depth`` layers of ``act``, weights N(0, init_std)."""

    def __init__(self, depth: int = 3, act: type = nn.ReLU, init_std: float | None = None, lr: float = 0.01,
                 width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(8 if i == 0 else width, width), act()]
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))
        if init_std is not None:
            for m in self.net:
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=init_std)
                    nn.init.zeros_(m.bias)
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _loader(scale: float = 1.0) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g) * scale
    y = x.sum(1, keepdim=True)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)


def _fit(model: L.LightningModule, make_trainer, scale: float = 1.0, steps: int = 8) -> list[str]:
    health = GradientHealth(every_n_steps=1)
    trainer = make_trainer(callbacks=[ActivationStats(every_n_steps=1), health], max_steps=steps, max_epochs=-1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, _loader(scale))
    return [str(w.message) for w in caught if "gradients" in str(w.message)]


def test_no_hook_is_left_after_fit(make_trainer) -> None:
    model = Regressor()
    _fit(model, make_trainer)
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def test_activation_stats_match_a_hand_computation() -> None:
    out = torch.tensor([[0.0, 2.0, 0.0], [0.0, 4.0, 1.0]])  # unit 0 is zero for the whole batch: dead
    stats = activation_stats(nn.ReLU(), out)
    assert stats["dead"] == pytest.approx(1 / 3) and stats["mean"] == pytest.approx(7 / 6)
    assert stats["std"] == pytest.approx(out.std().item())
    sig = activation_stats(nn.Sigmoid(), torch.tensor([0.001, 0.5, 0.995, 0.3]))
    assert sig["saturated"] == pytest.approx(0.5)


def test_vanishing_gradients_warn_in_a_deep_sigmoid_net_only(make_trainer) -> None:
    vanishing = _fit(Regressor(depth=10, act=nn.Sigmoid, init_std=0.02), make_trainer)
    assert any("VANISH" in w and "early layer 'net.0'" in w for w in vanishing), vanishing
    assert not _fit(Regressor(depth=10, act=nn.ReLU), make_trainer)  # the same depth with ReLU + Kaiming: silent


def test_exploding_gradients_warn_at_a_huge_learning_rate(make_trainer) -> None:
    messages = _fit(Regressor(depth=2, lr=10.0), make_trainer, scale=3.0, steps=12)
    assert any("EXPLODE" in w and "at step" in w for w in messages), messages
    assert not _fit(Regressor(depth=2, lr=0.01), make_trainer, steps=12)


class BrightnessNet(nn.Module):
    """Class 1 means "bright": positive conv filters, global average pooling, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.conv.weight.uniform_(0.1, 1.0)
            self.conv.bias.zero_()
            self.fc.weight.copy_(torch.tensor([[-1.0] * 4, [1.0] * 4]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def test_grad_cam_highlights_the_informative_region() -> None:
    torch.manual_seed(0)
    model = BrightnessNet()
    images = torch.zeros(3, 1, 16, 16)
    for i, (r, c) in enumerate([(2, 2), (9, 3), (4, 10)]):  # a bright square somewhere in each image
        images[i, 0, r : r + 4, c : c + 4] = 1.0
    cam = grad_cam(model, model.conv, images)
    assert cam.shape == (3, 16, 16) and cam.max() <= 1.0 + 1e-6
    for i, (r, c) in enumerate([(2, 2), (9, 3), (4, 10)]):
        peak = divmod(int(cam[i].argmax()), 16)
        assert r <= peak[0] < r + 4 and c <= peak[1] < c + 4  # the peak lies on the square
        assert cam[i, 14:, 14:].max() < 0.05  # far from it: nothing


def test_debug_switch_writes_heat_map_and_image_panels(tmp_path: Path) -> None:
    from zoo.cli import main

    assert main(["--model", "cnn", "--max-epochs", "1", "--debug-stats", "--debug-every", "2", "--runs-dir",
                 str(tmp_path), "--trainer.limit_train_batches", "6", "--trainer.limit_val_batches", "1"]) == 0
    names = {p.name.split("_step")[0] for p in tmp_path.glob("cnn/*/artifacts/*.png")}
    assert {"gradient_norms", "feature_maps", "first_layer_filters", "saliency"} <= names
    header = next(tmp_path.glob("cnn/*/logs/metrics.csv")).read_text().splitlines()[0]
    assert "debug/grad/features.0.0/norm" in header and "debug/act/features.0.2/dead" in header


def test_metric_curves_plot_each_epoch_once_with_its_own_values(make_trainer, tmp_path: Path) -> None:
    """The end-of-run curves hold, per epoch, the epoch metrics the module logged for that epoch (callbacks' epoch
    hooks run before the module's, so a naive reading would be one epoch late)."""
    import lightning as L

    from zoo.callbacks.curves import MetricCurves
    from zoo.datamodules.images import DigitsDataModule
    from zoo.models.cnn import CNNClassifier

    seen: dict[int, float] = {}

    class Spy(L.Callback):  # reads val/loss after the module's own epoch-end hooks have logged it
        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            seen[trainer.current_epoch] = float(trainer.callback_metrics["val/loss"])

    curves = MetricCurves()
    trainer = make_trainer(max_epochs=3, limit_train_batches=4, limit_val_batches=2, callbacks=[curves, Spy()])
    trainer.fit(CNNClassifier(num_classes=10, in_channels=1, image_size=8), DigitsDataModule(batch_size=32))
    assert curves.history["val/loss"] == pytest.approx(seen) and sorted(seen) == [0, 1, 2]
    assert set(curves.panels()) >= {"loss", "acc"} and list(curves.panels())[0] == "loss"
    assert len(list((tmp_path / "artifacts").glob("curves_step*.png"))) == 1


def test_log_image_keeps_uint8_tensors_as_they_are(make_trainer, tmp_path: Path) -> None:
    """A uint8 (C, H, W) tensor (torchvision's draw_bounding_boxes / make_grid output) is saved pixel for pixel,
    not read as [0, 1] floats (which turned every photo white)."""
    import numpy as np
    from PIL import Image

    from zoo.artifacts import log_image

    image = torch.randint(0, 256, (3, 12, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    path = log_image(make_trainer(), "grid", image, step=0)
    assert np.array_equal(np.asarray(Image.open(path)), image.permute(1, 2, 0).numpy())
    floats = torch.rand(3, 12, 16, generator=torch.Generator().manual_seed(1))
    saved = np.asarray(Image.open(log_image(make_trainer(), "floats", floats, step=0)))
    assert np.abs(saved.astype(float) - floats.permute(1, 2, 0).numpy() * 255).max() <= 0.5 + 1e-6
