"""Semi-supervised learning: the labelled subset, the combined labelled + unlabelled batches, the strong
augmentation, FixMatch / pseudo-label / Mean Teacher steps, hidden labels kept out of the loss, reloads, errors."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from zoo.cli import main
from zoo.datamodules.images import DigitsDataModule, ImageDataModule
from zoo.datamodules.points import Ring2DDataModule
from zoo.datamodules.semi_supervised import combined_train_loader, labelled_split, strong_augment
from zoo.errors import ZooUserError
from zoo.models.semi_supervised import SemiSupervisedClassifier


class EasyShapes(ImageDataModule):
    """Generated 8x8 grey images, 4 classes: a bright 4x4 square in quadrant ``k`` on noise (easy to learn)."""

    native_size = 8
    class_names = ("tl", "tr", "bl", "br")

    def load_arrays(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(0)
        out = {}
        for split, n in (("train", 800), ("test", 80)):
            y = torch.arange(n) % 4
            x = torch.randint(0, 60, (n, 1, 8, 8), generator=gen)
            for k in range(4):
                r, c = divmod(k, 2)
                x[y == k, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 150
            out[split] = (x.to(torch.uint8), y)
        return out


def tiny(method: str = "fixmatch", **kw) -> SemiSupervisedClassifier:
    args = dict(num_classes=10, image_size=8, method=method, channels=(8, 16), hidden=16, mu=2, rampup_steps=2)
    return SemiSupervisedClassifier(**{**args, **kw})


def digits(**kw) -> DigitsDataModule:
    return DigitsDataModule(**{"labelled_per_class": 5, "batch_size": 16, **kw})


class Recorder(L.Callback):
    """The ``train/`` metrics of every epoch (callbacks' epoch-end hooks run before the module logs them)."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def _record(self, trainer: L.Trainer) -> None:
        self.epochs.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch > 0:
            self._record(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer)


def test_labelled_subset_is_balanced_seeded_and_disjoint() -> None:
    full, dm = DigitsDataModule(), digits(labelled_per_class=7)
    full.setup(), dm.setup()
    (x_l, y_l), (x_u, y_u) = dm.splits["train"], dm.unlabelled
    assert torch.bincount(y_l).tolist() == [7] * 10
    assert len(y_l) + len(y_u) == len(full.splits["train"][1])
    rows = {bytes(img.numpy()) for img in x_l}  # no labelled image is among the unlabelled ones
    assert not rows & {bytes(img.numpy()) for img in x_u}
    assert torch.equal(dm.splits["val"][0], full.splits["val"][0])  # val / test untouched
    y = full.splits["train"][1]
    lab, unl = labelled_split(y, 7, seed=3)
    assert torch.equal(lab, labelled_split(y, 7, seed=3)[0]) and not torch.equal(lab, labelled_split(y, 7, seed=4)[0])
    assert len(set(lab.tolist()) & set(unl.tolist())) == 0 and len(lab) + len(unl) == len(y)


def test_combined_loader_views_and_plain_models_get_labels_only() -> None:
    dm = digits()
    loader = combined_train_loader(dm, ("weak", "strong"), ratio=3)
    batches = [b for b, _, _ in loader]
    assert len(batches) == len(dm.unlabelled[1]) // 48 + 1  # one pass over the unlabelled images
    weak, strong, hidden = batches[0]["unlabelled"]
    assert weak.shape == strong.shape == (48, 1, 8, 8) and hidden.shape == (48,)
    assert all(len(b["labelled"][1]) == 16 for b in batches)  # the 50 labels repeat to fill every step
    trainer = L.Trainer(accelerator="cpu", logger=False, max_epochs=1)
    trainer.strategy.connect(tiny("supervised"))  # a model asking for no unlabelled views: (x, y) batches
    dm.trainer = trainer
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 1, 8, 8) and y.shape == (16,)


def test_strong_augmentation_is_seeded_bounded_and_strong() -> None:
    x = torch.rand(64, 1, 28, 28)
    a = strong_augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, strong_augment(x, torch.Generator().manual_seed(0)))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert (a - x).abs().mean() > 0.1
    dm = DigitsDataModule(augment="strong")
    dm.setup()
    xb, _ = next(iter(dm.train_dataloader()))
    xe, _ = next(iter(dm._loader("train", False)))
    assert xb.shape == xe.shape and not torch.equal(xb, xe)


@pytest.mark.parametrize("method", ["fixmatch", "pseudo_label", "mean_teacher", "supervised"])
def test_each_method_fits_and_tests(method: str, make_trainer) -> None:
    model, rec = tiny(method), Recorder()
    trainer = make_trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=1, limit_test_batches=1,
                           callbacks=[rec])
    trainer.fit(model, datamodule=digits())
    logged = rec.epochs[-1]
    assert {"train/loss", "train/sup_loss", "train/unsup_loss"} <= set(logged)
    if method != "supervised":
        assert "train/mask_rate" in logged and 0 <= logged["train/mask_rate"] <= 1
    assert "test/acc" in trainer.test(model, datamodule=digits(), verbose=False)[0]
    assert int(model.teacher.n_averaged) == 3


def test_resnet_backbone_step(make_trainer) -> None:
    model = tiny("fixmatch", backbone="resnet", arch="resnet18", mu=1)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    make_trainer(max_steps=1, limit_val_batches=0).fit(model, datamodule=digits(batch_size=4))


def _fit_state(make_trainer, corrupt: bool) -> tuple[dict[str, torch.Tensor], float]:
    L.seed_everything(0)
    dm, model, rec = digits(), tiny("fixmatch", threshold=0.3), Recorder()
    dm.setup()
    if corrupt:  # scramble the unlabelled images' hidden labels
        x_u, y_u = dm.unlabelled
        dm.unlabelled = (x_u, (y_u + 1 + torch.randint(0, 9, y_u.shape)) % 10)
    make_trainer(max_epochs=2, limit_val_batches=0, callbacks=[rec]).fit(model, datamodule=dm)
    return model.state_dict(), rec.epochs[-1]["train/pseudo_acc"]


def test_corrupted_hidden_labels_change_nothing(make_trainer) -> None:
    clean, acc_clean = _fit_state(make_trainer, corrupt=False)
    dirty, acc_dirty = _fit_state(make_trainer, corrupt=True)
    assert clean.keys() == dirty.keys() and all(torch.equal(clean[k], dirty[k]) for k in clean)
    assert acc_clean != acc_dirty  # the monitor did read them


def test_mask_rate_rises_on_an_easy_task(make_trainer) -> None:
    L.seed_everything(0)
    model = tiny("fixmatch", num_classes=4, lr=3e-3, ema_decay=0.9)
    dm, rec = EasyShapes(labelled_per_class=2, batch_size=8, augment="shift"), Recorder()
    make_trainer(max_epochs=4, limit_val_batches=0, callbacks=[rec]).fit(model, datamodule=dm)
    rates = [e["train/mask_rate"] for e in rec.epochs]
    assert rates[-1] > rates[0] + 0.2 and rates[-1] > 0.5, rates
    assert rec.epochs[-1]["train/pseudo_acc"] > 0.9
    assert trainer_acc(model, dm, make_trainer) > 0.9


def trainer_acc(model: SemiSupervisedClassifier, dm: ImageDataModule, make_trainer) -> float:
    return make_trainer().test(model, datamodule=dm, verbose=False)[0]["test/acc"]


def test_checkpoint_reloads_as_data_only(make_trainer, tmp_path: Path) -> None:
    model = tiny("mean_teacher")
    trainer = make_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(model, datamodule=digits())
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    again = SemiSupervisedClassifier.load_from_checkpoint(tmp_path / "m.ckpt")
    assert again.hparams.method == "mean_teacher" and int(again.teacher.n_averaged) == 2
    x = torch.rand(3, 1, 8, 8)
    model.eval(), again.eval()
    assert torch.equal(model(x), again(x)) and torch.equal(model.net(x), again.net(x))


def test_bad_inputs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture, make_trainer) -> None:
    with pytest.raises(ZooUserError, match="larger than the smallest class"):
        digits(labelled_per_class=500).setup()
    with pytest.raises(ZooUserError, match="labelled_per_class must be >= 1"):
        digits(labelled_per_class=0)
    with pytest.raises(ZooUserError, match="needs --data.labelled_per_class"):
        make_trainer().fit(tiny(), datamodule=DigitsDataModule())
    with pytest.raises(ZooUserError, match="needs an in-memory image DataModule"):  # no images, past the CLI
        make_trainer().fit(tiny(), datamodule=Ring2DDataModule())
    with pytest.raises(ZooUserError, match="unknown method"):
        tiny("vat")
    runs = ["--runs-dir", str(tmp_path / "runs"), "--threads", "1", "--max-epochs", "1"]
    cases = [(["--data.labelled_per_class", "500"], "larger than the smallest class ('"),
             (["--data.labelled_per_class", "0"], "labelled_per_class must be >= 1"),
             (["--data", "ring2d"], "does not fit model 'semi_supervised'")]  # no images: the CLI's own check
    for extra, message in cases:
        assert main(["--model", "semi_supervised", *extra, *runs]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and message in err[-1], err[-3:]
    assert not list((tmp_path / "runs").rglob("*.ckpt"))
