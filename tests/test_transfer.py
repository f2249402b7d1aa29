"""Transfer learners (resnet / densenet): backbones, weights, freeze-then-unfreeze, image folders, reports."""
from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from zoo.callbacks.finetuning import BackboneFreezeUnfreeze
from zoo.datamodules.image_folder import DigitsRGBDataModule, ImageFolderDataModule
from zoo.errors import ZooUserError
from zoo.models.evaluation import classification_report
from zoo.models.transfer import TransferClassifier
from zoo.registry import create_model, get_model_entry


def tiny(**kw) -> TransferClassifier:
    args = dict(num_classes=10, image_size=8, pretrained="false")
    return TransferClassifier(**{**args, **kw})


def make_tree(root: Path, classes: dict[str, int], size: int = 12, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, (name, n) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 80, (size, size, 3)) + 60 * k  # class-dependent brightness
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


class Probe(L.Callback):
    """Records the frozen state after every optimizer step."""

    def __init__(self) -> None:
        self.seen: dict[int, dict] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bns = [m for m in pl_module.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
        self.seen[trainer.current_epoch] = dict(
            grads=[p.requires_grad for p in pl_module.backbone.parameters()],
            groups=[g.get("initial_lr", g["lr"]) for g in trainer.optimizers[0].param_groups],
            bn_training=[m.training for m in bns],
            bn_mean=bns[0].running_mean.clone(),
            conv=next(pl_module.backbone.parameters()).detach().clone())


def test_registered_names_and_defaults() -> None:
    assert get_model_entry("resnet").defaults == {} and get_model_entry("resnet").datamodule == "digits_rgb"
    assert get_model_entry("densenet").defaults == {"backbone": "densenet121"}
    model = create_model("densenet", num_classes=4, image_size=8, pretrained="false")
    assert model.backbone_name == "torchvision:densenet121" and model(torch.rand(2, 3, 8, 8)).shape == (2, 4)


def test_freeze_then_unfreeze_toggles_grads_param_groups_and_keeps_bn_frozen(make_trainer) -> None:
    model = tiny(freeze_epochs=1, backbone_lr_ratio=0.1, layer_decay=0.5, lr=1e-2)
    assert [type(c) for c in model.configure_callbacks()] == [BackboneFreezeUnfreeze]
    dm = DigitsRGBDataModule(batch_size=16, image_size=8)
    bn0 = next(m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)).running_mean.clone()
    conv0 = next(model.backbone.parameters()).detach().clone()
    probe = Probe()
    make_trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=1, callbacks=[probe]).fit(model, dm)
    frozen, thawed = probe.seen[0], probe.seen[1]
    assert not any(frozen["grads"]) and frozen["groups"] == [1e-2]  # head only
    assert not any(frozen["bn_training"]) and torch.equal(frozen["bn_mean"], bn0)  # BN eval, stats untouched
    assert torch.equal(frozen["conv"], conv0)
    assert all(thawed["grads"]) and all(thawed["bn_training"]) and not torch.equal(thawed["bn_mean"], bn0)
    assert not torch.equal(thawed["conv"], conv0)
    n = len(model.stages)  # discriminative: last stage at lr * 0.1, each earlier stage halved
    assert thawed["groups"] == pytest.approx([1e-2] + [1e-3 * 0.5 ** (n - 1 - i) for i in range(n)])


def test_frozen_bn_stays_in_eval_through_train_calls() -> None:
    model = tiny()
    BackboneFreezeUnfreeze().freeze_before_training(model)
    model.train()
    assert all(not m.training for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    assert model.head.training


def test_local_weights_load_and_change_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = tiny()
    torch.save({"state_dict": source.state_dict()}, tmp_path / "zoo.ckpt")  # zoo/Lightning checkpoint layout
    plain = {**source.backbone.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    torch.save(plain, tmp_path / "plain.pt")  # torchvision layout, ImageNet head dropped on load
    x = torch.rand(4, 3, 8, 8)
    source.eval()
    for name in ("zoo.ckpt", "plain.pt"):
        torch.manual_seed(1)
        fresh = tiny().eval()
        torch.manual_seed(1)
        loaded = tiny(weights=str(tmp_path / name)).eval()
        assert torch.allclose(loaded.backbone(x), source.backbone(x), atol=1e-6)
        assert not torch.allclose(loaded(x), fresh(x))
        assert loaded.recipe == {"freeze_epochs": 1, "backbone_lr_ratio": 0.1, "layer_decay": 0.7}


def test_weights_of_another_architecture_name_the_keys(tmp_path: Path) -> None:
    torch.save(tiny().backbone.state_dict(), tmp_path / "r18.pt")
    with pytest.raises(ZooUserError, match=r"weights do not fit backbone 'torchvision:densenet121'.*missing: features"):
        tiny(backbone="densenet121", weights=str(tmp_path / "r18.pt"))


def test_pretrained_flags_offline(monkeypatch) -> None:
    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(ZooUserError, match="--model.weights PATH"):
        tiny(pretrained="true")
    with pytest.warns(UserWarning, match="NO PRETRAINED WEIGHTS"):
        model = tiny(pretrained="auto")
    assert model.recipe["freeze_epochs"] == 0


def test_unknown_backbone_lists_close_matches() -> None:
    with pytest.raises(ZooUserError, match="unknown backbone 'resnet19'; did you mean .*resnet18"):
        tiny(backbone="resnet19")


def test_timm_backbone_builds_and_trains_a_step() -> None:
    model = tiny(backbone="resnet10t", num_classes=3)  # timm-only name
    assert model.backbone_name == "timm:resnet10t" and len(model.stages) >= 4
    loss = nn.functional.cross_entropy(model(torch.rand(2, 3, 8, 8)), torch.tensor([0, 2]))
    loss.backward()
    assert all(p.grad is not None for p in model.head.parameters())


@pytest.mark.parametrize("stem, size", [(4, 8), (2, 16), (1, 32)])
def test_stem_stride_sets_layer1_resolution(stem: int, size: int) -> None:
    model = tiny(image_size=32, stem_stride=stem).eval()
    seen = []
    model.backbone.layer1.register_forward_hook(lambda m, i, o: seen.append(o.shape[-1]))
    model(torch.rand(1, 3, 32, 32))
    assert seen == [size]


def test_loss_falls_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = tiny(num_classes=4, in_channels=1)  # grey input is repeated to RGB
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_image_folder_split_corrupt_file_and_batches(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "imgs", {"cat": 10, "dog": 10, "fox": 10})
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(ZooUserError, match="broken.jpg"):
        ImageFolderDataModule(str(root), image_size=16, on_corrupt="error").setup()
    dm = ImageFolderDataModule(str(root), batch_size=8, image_size=16, val_fraction=0.2, test_fraction=0.2)
    with pytest.warns(UserWarning, match=r"skipping 1 unreadable image.*broken.jpg"):
        dm.setup()
    assert (dm.num_classes, dm.task, dm.class_names) == (3, "multiclass", ["cat", "dog", "fox"])
    sizes = {s: len(p) for s, (p, _) in dm.splits.items()}
    assert sizes == {"train": 18, "val": 6, "test": 6}
    assert all(sorted(y.tolist()) == [0, 0, 1, 1, 2, 2] for s, (_, y) in dm.splits.items() if s != "train")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 16, 16) and 0.0 <= x.min() and x.max() <= 1.0 and y.dtype == torch.long
    again = ImageFolderDataModule(str(root), image_size=16, val_fraction=0.2, test_fraction=0.2)
    with pytest.warns(UserWarning):
        again.setup()
    assert again.splits["test"][0] == dm.splits["test"][0]  # seeded


def test_image_folder_bad_trees(tmp_path: Path) -> None:
    one = make_tree(tmp_path / "one", {"only": 3})
    with pytest.raises(ZooUserError, match="only one class folder"):
        ImageFolderDataModule(str(one)).setup()
    empty = make_tree(tmp_path / "empty", {"a": 3, "b": 3})
    (empty / "c").mkdir()
    with pytest.raises(ZooUserError, match="class folder .*c' has no images"):
        ImageFolderDataModule(str(empty)).setup()
    given = make_tree(tmp_path / "given" / "train", {"a": 4, "b": 4})
    make_tree(tmp_path / "given" / "val", {"a": 2, "b": 2})
    dm = ImageFolderDataModule(str(given.parent), image_size=8)
    dm.setup()
    assert dm.task == "binary" and len(dm.splits["train"][0]) == 8 and dm.splits["test"][0] == dm.splits["val"][0]


def test_num_classes_disagreeing_with_data(tmp_path: Path, make_trainer) -> None:
    dm = ImageFolderDataModule(str(make_tree(tmp_path, {"a": 5, "b": 5, "c": 5})), image_size=8,
                               val_fraction=0.2, test_fraction=0.2)
    with pytest.raises(ZooUserError, match="num_classes=5 but the data has 3"):
        make_trainer(fast_dev_run=True).fit(tiny(num_classes=5), dm)


def test_multilabel_report_known_answer() -> None:
    target = torch.tensor([[0, 1, 0], [0, 1, 1], [1, 0, 0], [1, 0, 1]])
    probs = torch.tensor([[0.1, 0.1, 0.2], [0.2, 0.2, 0.6], [0.8, 0.8, 0.7], [0.9, 0.9, 0.8]])
    numbers, figures = classification_report("multilabel", probs, target, ["a", "b", "c"])
    assert numbers["auroc_a"] == pytest.approx(1.0) and numbers["auroc_b"] == pytest.approx(0.0)
    assert numbers["auroc_c"] == pytest.approx(0.75) and numbers["auroc"] == pytest.approx(1.75 / 3)
    assert [numbers[f"precision_{k}"] for k in "abc"] == pytest.approx([1.0, 0.0, 2 / 3])
    assert [numbers[f"recall_{k}"] for k in "abc"] == pytest.approx([1.0, 0.0, 1.0])
    assert set(figures) == {"roc_curves", "precision_recall", "confusion_matrix"}


def test_multilabel_fit_test_writes_report(tmp_path: Path, make_trainer) -> None:
    root = make_tree(tmp_path / "ml", {"x": 8, "y": 8})
    with (root / "labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filename", "labels"])
        for i, p in enumerate(sorted(root.rglob("*.png"))):
            writer.writerow([p.relative_to(root), "sun;sea" if i % 3 == 0 else "sun" if i % 3 == 1 else "sea"])
    dm = ImageFolderDataModule(str(root), batch_size=8, image_size=8, labels_file="labels.csv",
                               val_fraction=0.25, test_fraction=0.25)
    model = tiny(num_classes=dm.num_classes, task=dm.task)
    trainer = make_trainer(max_epochs=1, limit_train_batches=1)
    trainer.fit(model, dm)
    metrics = trainer.test(model, dm)[0]
    assert dm.task == "multilabel" and {"test/auroc", "test/auroc_sea", "test/recall_sun"} <= set(metrics)
    assert {p.name.split("_step")[0] for p in (tmp_path / "artifacts").glob("*.png")} == {
        "roc_curves", "precision_recall", "confusion_matrix"}
    preds = trainer.predict(model, dm.predict_input(str(root / "x")))
    out = model.write_predictions(preds, tmp_path / "pred", dm)
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["input", "prediction", "p_sea", "p_sun"] and len(rows) == 9


def test_checkpoint_reloads_without_the_initial_weights_file(tmp_path: Path, make_trainer) -> None:
    torch.save(tiny().backbone.state_dict(), tmp_path / "init.pt")
    model = tiny(weights=str(tmp_path / "init.pt"))
    trainer = make_trainer(fast_dev_run=True)
    trainer.fit(model, DigitsRGBDataModule(batch_size=16, image_size=8))
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    (tmp_path / "init.pt").unlink()
    again = TransferClassifier.load_from_checkpoint(tmp_path / "run.ckpt", map_location="cpu").eval()
    x = torch.rand(2, 3, 8, 8)
    assert again.recipe == model.recipe and torch.allclose(again(x), model.eval()(x), atol=1e-6)


def test_a_normalising_datamodule_is_refused_not_changed(make_trainer) -> None:
    """The model does not reach into the DataModule: the CLI defaults ``normalize`` off for it (``data_defaults``),
    and a DataModule that normalises anyway is a one-line error, not silently switched off."""
    assert TransferClassifier.data_defaults == {"normalize": False}
    dm = DigitsRGBDataModule(batch_size=16, image_size=8, normalize=True)
    with pytest.raises(ZooUserError, match="drop --data.normalize true"):
        make_trainer(fast_dev_run=True).fit(tiny(), dm)
    assert dm.normalize is True
