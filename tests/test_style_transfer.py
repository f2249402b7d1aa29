"""Style transfer: Gram/perceptual losses, VGG layer names, Gatys optimisation, the fast stylizer, bad input."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.datamodules.style import ContentFolderDataModule, StylePairDataModule, load_image
from zoo.errors import ZooUserError
from zoo.models.fast_style import FastStyleTransfer, TransformerNet
from zoo.models.style_transfer import StyleTransfer, preserve_colors
from zoo.models.vgg_features import PerceptualLoss, VGGFeatures, gram_matrix, vgg_layer_names
from zoo.registry import create_model, get_model_entry


def _png(path: Path, mode: str, size: tuple[int, int] = (32, 32), seed: int = 0) -> str:
    from PIL import Image

    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(arr[..., 0] if channels == 1 else arr, mode).save(path)
    return str(path)


@pytest.fixture
def pair(tmp_path: Path) -> StylePairDataModule:
    """A smooth colour-gradient "photo" and a high-contrast diagonal-stripe "painting", 32x32."""
    from PIL import Image

    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    content = np.stack([xx, yy, 1 - xx], -1)
    stripes = 0.15 + 0.7 * ((xx + yy) * 4 % 1 < 0.5)
    style = np.stack([stripes, 0.3 + 0.0 * xx, 1 - stripes], -1)
    for name, arr in (("c.png", content), ("s.png", style)):
        Image.fromarray((arr * 255).round().astype(np.uint8)).save(tmp_path / name)
    return StylePairDataModule(content=str(tmp_path / "c.png"), style=str(tmp_path / "s.png"), size=32)


def test_gram_matrix_matches_naive_loop() -> None:
    f = torch.randn(2, 4, 3, 5)
    naive = torch.zeros(2, 4, 4)
    for b in range(2):
        for i in range(4):
            for j in range(4):
                naive[b, i, j] = (f[b, i] * f[b, j]).sum() / (4 * 3 * 5)
    assert torch.allclose(gram_matrix(f), naive, atol=1e-6)


def test_style_and_content_loss_of_an_image_with_itself_is_zero() -> None:
    loss = PerceptualLoss("vgg16", ("relu2_2", "relu3_3"), ("relu1_2", "relu3_3"), pretrained="false", tv_weight=0.0)
    x, other = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    same = loss(x, loss.content_targets(x), loss.style_targets(x))
    assert same["style_loss"].item() == 0.0 and same["content_loss"].item() == 0.0
    diff = loss(other, loss.content_targets(x), loss.style_targets(x))
    assert diff["style_loss"].item() > 0 and diff["content_loss"].item() > 0 and diff["loss"].item() > 0


def test_vgg_layer_names_match_torchvision_indices() -> None:
    from torchvision.models.vgg import cfgs, make_layers

    for arch, cfg, expect in (("vgg16", "D", {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "pool5": 30}),
                              ("vgg19", "E", {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20,
                                              "relu4_2": 22, "relu5_1": 29, "pool5": 36})):
        names, modules = vgg_layer_names(arch), list(make_layers(cfgs[cfg]))
        assert len(names) == len(modules)
        assert {n: names.index(n) for n in expect} == expect
        kinds = {"conv": torch.nn.Conv2d, "relu": torch.nn.ReLU, "pool": torch.nn.MaxPool2d}
        assert all(isinstance(m, kinds[n.rstrip("0123456789_")]) for n, m in zip(names, modules))


def test_unknown_layer_and_bad_weights_are_user_errors() -> None:
    with pytest.raises(ZooUserError, match="no layer 'relu6_1'"):
        VGGFeatures("vgg16", ("relu6_1",), pretrained="false")
    with pytest.raises(ZooUserError, match="one weight per layer"):
        PerceptualLoss("vgg16", style_layers=("relu1_2", "relu2_2"), style_layer_weights=(1.0,), pretrained="false")
    with pytest.raises(ZooUserError, match="unknown VGG arch"):
        vgg_layer_names("vgg11")


def test_weights_file_loads_and_mismatch_is_reported(tmp_path: Path) -> None:
    src = VGGFeatures("vgg16", ("relu2_2",), pretrained="false")
    torch.nn.init.constant_(src.features[0].weight, 0.5)
    whole = VGGFeatures("vgg16", ("pool5",), pretrained="false").features.state_dict()
    full = {f"features.{k}": v for k, v in whole.items()}
    full["features.0.weight"] = src.features[0].weight.clone()
    torch.save(full, tmp_path / "vgg16.pt")
    dst = VGGFeatures("vgg16", ("relu2_2",), weights=str(tmp_path / "vgg16.pt"))
    assert dst.pretrained and torch.equal(dst.features[0].weight, src.features[0].weight)
    with pytest.raises(ZooUserError, match="do not fit"):
        VGGFeatures("vgg19", ("relu2_2",), weights=str(tmp_path / "vgg16.pt"))


def test_pretrained_auto_warns_and_true_fails_offline() -> None:
    cached = list((Path(torch.hub.get_dir()) / "checkpoints").glob("vgg16-*.pth"))
    if cached:
        pytest.skip("ImageNet VGG16 weights are cached here")
    with pytest.warns(UserWarning, match="RANDOM"):
        assert not VGGFeatures("vgg16", ("relu1_2",), pretrained="auto").pretrained
    with pytest.raises(ZooUserError, match="cannot be had"):
        VGGFeatures("vgg16", ("relu1_2",), pretrained="true")


@pytest.mark.parametrize("optimizer,steps,scales", [("lbfgs", 6, (1.0,)), ("lbfgs", 6, (0.5, 1.0)),
                                                    ("adam", 40, (1.0,))])
def test_gatys_total_loss_falls_90_percent_on_32px(make_trainer, pair, optimizer, steps, scales) -> None:
    """LBFGS: 6 steps x 5 iterations (also coarse-to-fine: 16 px, then 32 px); Adam: 40 steps.

    The reference is the loss of the starting point (the content image) at full size.
    """
    pair.steps_per_epoch = steps
    model = create_model("style_transfer", image_shape=pair.image_shape, arch="vgg16", pretrained="false",
                         optimizer=optimizer, lr=0.1 if optimizer == "adam" else None, scales=scales,
                         lbfgs_iters=5, image_every_n_steps=5, style_layers=("relu1_2", "relu2_2", "relu3_3"),
                         content_layers=("relu3_3",))
    history: list[float] = []

    class Track(__import__("lightning").Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            history.append(float(trainer.callback_metrics["train/loss"]))

    trainer = make_trainer(callbacks=[Track()])
    trainer.fit(model, pair)
    assert len(history) == steps
    final = trainer.test(model, pair, verbose=False)[0]
    with torch.no_grad():
        start = model._losses(model._targets["content"])
    assert final["test/loss"] <= 0.1 * start["loss"].item(), (final, start, history)
    assert model.image.shape[-2:] == (32, 32) and 0 <= model.image.min() and model.image.max() <= 1
    assert final["test/vgg_pretrained"] == 0.0 and final["test/style_loss"] < 0.1 * start["style_loss"].item()
    art = {p.name.rsplit("_step", 1)[0] for p in (Path(trainer.default_root_dir) / "artifacts").glob("*.png")}
    assert {"progress", "progress_panel", "result", "result_panel", "test_result_panel"} <= art


def test_gatys_content_init_and_colour_preservation() -> None:
    content = 0.35 + 0.3 * torch.rand(1, 3, 16, 16)  # muted colours: the swap stays inside the RGB cube
    assert torch.allclose(preserve_colors(content, content), content, atol=1e-5)
    grey = torch.rand(1, 1, 16, 16).mul(0.2).add(0.4).expand(-1, 3, -1, -1)
    mixed = preserve_colors(grey, content)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    assert torch.allclose((mixed * luma).sum(1), (grey * luma).sum(1), atol=1e-4)  # result's luminance
    chroma = lambda x: x - (x * luma).sum(1, keepdim=True)  # noqa: E731
    assert torch.allclose(chroma(mixed), chroma(content), atol=1e-4)  # content's colour
    entry = get_model_entry("gatys")
    assert entry.cls is StyleTransfer and entry.datamodule == "style_pair"
    with pytest.raises(ZooUserError, match="scales"):
        StyleTransfer(image_shape=(32, 32), scales=(1.0, 0.5), pretrained="false", arch="vgg16")


@pytest.mark.parametrize("h,w", [(33, 47), (17, 21), (64, 31)])
def test_fast_network_keeps_odd_sizes(h: int, w: int) -> None:
    net = TransformerNet(base_channels=8, num_residual=1)
    assert net(torch.rand(2, 3, h, w)).shape == (2, 3, h, w)


def test_fast_style_trains_checkpoints_without_vgg_and_predicts(make_trainer, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        _png(folder / f"p{i}.png", "RGB", size=(48, 40), seed=i)
    dm = ContentFolderDataModule(data_dir=str(folder), style=_png(tmp_path / "s.png", "RGB", seed=9), size=32,
                                 batch_size=2, samples_per_epoch=8, val_samples=2)
    torch.manual_seed(0)
    model = FastStyleTransfer(base_channels=8, num_residual=1, pretrained="false", lr=3e-3, image_every_n_steps=0,
                              style_layers=("relu1_2", "relu2_2"), content_layers=("relu2_2",))
    val_losses: list[float] = []

    class Track(__import__("lightning").Callback):
        def on_validation_epoch_end(self, trainer, *args) -> None:  # the sanity check gives the untrained loss
            val_losses.append(float(trainer.callback_metrics["val/loss"]))

    trainer = make_trainer(max_epochs=4, enable_checkpointing=True, callbacks=[Track()])
    trainer.fit(model, dm)
    assert len(val_losses) == 5 and min(val_losses[1:]) < 0.5 * val_losses[0], val_losses
    ckpt = trainer.checkpoint_callback.best_model_path
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert state and not any(k.startswith("loss_net.") for k in state)
    reloaded = FastStyleTransfer.load_from_checkpoint(ckpt).eval()
    x = torch.rand(1, 3, 35, 29)
    assert torch.allclose(reloaded(x), model.eval()(x), atol=1e-6)
    preds = trainer.predict(reloaded, dataloaders=dm.predict_input(str(folder)))
    out = reloaded.write_predictions(preds, tmp_path / "out", dm)
    from PIL import Image

    assert sorted(p.name for p in out.glob("*.png")) == ["p0_stylized.png", "p1_stylized.png"]
    assert Image.open(out / "p0_stylized.png").size == (48, 40)


def test_fast_style_loss_falls_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = FastStyleTransfer(base_channels=8, num_residual=1, pretrained="false",
                              style_layers=("relu1_2", "relu2_2"), content_layers=("relu2_2",))
    contents, style = torch.rand(2, 3, 32, 32), torch.rand(1, 3, 32, 32)
    targets, grams = model.loss_net.content_targets(contents), model.loss_net.style_targets(style)
    opt = torch.optim.Adam(model.net.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = model.loss_net(model.net(contents), targets, grams)["loss"]
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_image_inputs_are_converted_and_bad_ones_rejected(tmp_path: Path) -> None:
    for mode in ("L", "RGBA"):
        img = load_image(_png(tmp_path / f"{mode}.png", mode, size=(40, 20)), 20)
        assert img.shape == (1, 3, 10, 20) and 0 <= img.min() and img.max() <= 1
    (tmp_path / "bad.jpg").write_text("not an image")
    with pytest.raises(ZooUserError, match="cannot read image"):
        load_image(tmp_path / "bad.jpg")
    with pytest.raises(ZooUserError, match="does not exist"):
        load_image(tmp_path / "missing.jpg")
    for size in (0, -3):
        with pytest.raises(ZooUserError, match="size"):
            StylePairDataModule(size=size)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ZooUserError, match="no images"):
        ContentFolderDataModule(size=32).predict_input(str(tmp_path / "empty"))
    with pytest.raises(ZooUserError, match="neither an image file nor a folder"):
        ContentFolderDataModule(size=32).predict_input(str(tmp_path / "nowhere"))


def test_offline_defaults_are_sklearn_photos() -> None:
    dm = StylePairDataModule(size=48, steps_per_epoch=3)
    content, style = next(iter(dm.train_dataloader()))
    assert dm.image_shape == (32, 48) and content.shape == (1, 3, 32, 48) and style.shape[:2] == (1, 3)
    assert len(dm.train_dataloader()) == 3 and not torch.equal(content, style)
    folder = ContentFolderDataModule(size=32, batch_size=2, samples_per_epoch=4, val_samples=2)
    folder.setup()
    (a, s1), (b, _) = list(folder.train_dataloader())
    assert a.shape == (2, 3, 32, 32) and not torch.equal(a, b) and s1.shape[:2] == (1, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(list(folder.val_dataloader())) == 1
