"""Registry, image DataModules, in-memory loader and the CNN classifier."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
import ast
import inspect

from zoo.catalog import class_attribute, init_params, scan_datamodules, scan_models
from zoo.datamodules.base import TensorBatchLoader
from zoo.datamodules.images import DigitsDataModule, MNISTDataModule, read_idx
from zoo.errors import ZooUserError
from zoo.models.cnn import CNNClassifier
from zoo.registry import UnknownNameError, get_datamodule_class, get_model_entry


def test_registry_creates_models_and_datamodules() -> None:
    assert "cnn" in zoo.list_models() and zoo.list_models("cn*") == ["cnn"]
    assert {"digits", "mnist", "fashion_mnist", "cifar10"} <= set(zoo.list_datamodules())
    model = zoo.create_model("cnn_classifier", num_classes=3, lr=0.5)  # alias
    assert isinstance(model, CNNClassifier) and model.hparams.num_classes == 3 and model.hparams.lr == 0.5
    assert get_model_entry("cnn").datamodule == "digits"
    assert isinstance(zoo.create_datamodule("digits", batch_size=7), DigitsDataModule)


def test_unknown_names_list_close_matches() -> None:
    with pytest.raises(UnknownNameError, match="did you mean cnn"):
        zoo.create_model("cnnn")
    with pytest.raises(UnknownNameError, match="did you mean mnist"):
        zoo.create_datamodule("minst")


def _runtime_params(cls: type) -> dict[str, object]:
    """Constructor arguments of ``cls`` and, while a signature ends in ``**kwargs``, of its bases."""
    params: dict[str, object] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        sig = inspect.signature(klass.__init__).parameters.values()
        for p in sig:
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                params.setdefault(p.name, p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in sig):
            return params
    return params


@pytest.mark.parametrize("kind", ["model", "datamodule"])
def test_fast_help_signatures_match_the_classes(kind: str) -> None:
    """`--model NAME --help` reads __init__ with ast; it must agree with the imported classes."""
    entries = scan_models() if kind == "model" else scan_datamodules()
    for e in entries:
        cls = get_model_entry(e["name"]).cls if kind == "model" else get_datamodule_class(e["name"])
        fast = {p.name: p.default for p in init_params(e["class"], e["module"])}
        runtime = _runtime_params(cls)
        assert list(fast) == list(runtime), e["name"]
        for name, default in fast.items():
            expected = runtime[name]
            if default is None:
                assert expected is inspect.Parameter.empty, (e["name"], name)
            else:
                value = ast.literal_eval(default)
                assert value == expected or (isinstance(expected, tuple) and list(expected) == value), (e["name"], name)
        if kind == "datamodule":
            assert tuple(class_attribute(e["class"], "link_fields", e["module"]) or ()) == tuple(cls.link_fields)


def test_digits_split_is_disjoint_stratified_and_seeded() -> None:
    def split(seed: int) -> dict[str, torch.Tensor]:
        dm = DigitsDataModule(seed=seed)
        dm.setup()
        return dm.splits

    a, b, c = split(0), split(0), split(1)
    rows = {k: {tuple(x.flatten().tolist()) + (int(y),) for x, y in zip(*a[k])} for k in a}
    assert not (rows["train"] & rows["test"]) and not (rows["val"] & rows["test"])
    assert sum(len(a[k][1]) for k in a) == 1797
    assert all(torch.equal(a[k][0], b[k][0]) for k in a)  # same seed, same split
    assert not torch.equal(a["test"][1], c["test"][1])  # another seed, another split
    counts = torch.bincount(a["test"][1], minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # stratified: ~36 per class


def test_batch_loader_shards_and_reshuffles_deterministically() -> None:
    data = (torch.arange(10), torch.arange(10))
    epoch = {"e": 0}
    shards = [TensorBatchLoader(data, 2, shuffle=True, seed=3, epoch_fn=lambda: epoch["e"], rank=r, world_size=2)
              for r in range(2)]
    seen = [torch.cat([x for x, _ in loader]) for loader in shards]
    assert sorted(torch.cat(seen).tolist()) == list(range(10)) and len(shards[0]) == 3
    assert torch.equal(torch.cat([x for x, _ in shards[0]]), seen[0])  # same epoch, same order
    epoch["e"] = 1
    assert not torch.equal(torch.cat([x for x, _ in shards[0]]), seen[0])


def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = (2051 if array.ndim == 3 else 2049).to_bytes(4, "big")
    header = magic + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_mnist_reads_idx_gz_without_writing(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert read_idx(raw / "t10k-images-idx3-ubyte.gz").shape == (20, 28, 28)
    dm = MNISTDataModule(data_dir=str(tmp_path), batch_size=16, channels=3, image_size=32, val_fraction=0.2)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 3, 32, 32) and len(dm.splits["test"][1]) == 20
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_mnist_missing_files_say_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(ZooUserError, match="does not exist.*shared/data"):
        MNISTDataModule(data_dir=str(tmp_path / "nope")).setup()
    with pytest.raises(ZooUserError, match="no train-images-idx3-ubyte"):
        MNISTDataModule(data_dir=str(tmp_path)).setup()


@pytest.mark.parametrize("size,channels", [(8, 1), (28, 1), (32, 3)])
def test_cnn_shapes_and_backward(size: int, channels: int) -> None:
    model = CNNClassifier(num_classes=7, in_channels=channels, image_size=size, channels=(8, 16, 16))
    out = model(torch.randn(4, channels, size, size))
    assert out.shape == (4, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_cnn_loss_falls_on_a_tiny_batch() -> None:
    torch.manual_seed(0)
    model = CNNClassifier(num_classes=10, in_channels=1, image_size=8, dropout=0.0)
    x, y = torch.randn(32, 1, 8, 8), torch.arange(32) % 10
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


def test_cnn_rejects_bad_hyperparameters() -> None:
    with pytest.raises(ZooUserError, match="kernel_size must be odd"):
        CNNClassifier(kernel_size=4)
    with pytest.raises(ZooUserError, match="unknown init"):
        CNNClassifier(init="orthogonal")


def test_checkpoint_reloads_to_identical_predictions(make_trainer, tmp_path: Path) -> None:
    dm = DigitsDataModule(batch_size=64)
    model = CNNClassifier(num_classes=10, in_channels=1, image_size=8)
    trainer = make_trainer(max_epochs=1, limit_train_batches=5, limit_val_batches=1)
    trainer.fit(model, datamodule=dm)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    reloaded = CNNClassifier.load_from_checkpoint(path)
    x = dm.splits["test"][0][:16].float() / 255
    model.eval()
    reloaded.eval()
    assert torch.equal(model(x), reloaded(x))
    assert reloaded.hparams == model.hparams


def test_epoch_metrics_cover_only_that_epoch(make_trainer) -> None:
    """Accuracy/F1 are accumulated per step and logged once per epoch, reset between epochs: after two
    epochs ``val/acc`` is the final weights' accuracy on the validation split, computed by hand."""
    dm = DigitsDataModule(batch_size=64)
    model = CNNClassifier(num_classes=10, in_channels=1, image_size=8)
    trainer = make_trainer(max_epochs=2, limit_train_batches=3)
    trainer.fit(model, datamodule=dm)
    model.eval()
    with torch.no_grad():
        pairs = [(model(x).argmax(1), y) for x, y in dm.val_dataloader()]
    by_hand = torch.cat([p == y for p, y in pairs]).float().mean()
    assert float(trainer.callback_metrics["val/acc"]) == pytest.approx(float(by_hand), abs=1e-6)
    assert {"train/acc", "train/f1", "val/f1"} <= set(trainer.callback_metrics)


def test_confusion_matrix_counts_the_test_predictions(make_trainer, tmp_path: Path) -> None:
    """``ConfusionMatrixMixin`` (zoo/models/plots.py) counts exactly the test predictions, its diagonal
    agrees with ``test/acc`` (both hooks run), and the PNG lands in the run folder."""
    from zoo.models.plots import ConfusionMatrixMixin

    dm = DigitsDataModule(batch_size=64)
    model = CNNClassifier(num_classes=10, in_channels=1, image_size=8)
    assert isinstance(model, ConfusionMatrixMixin)
    trainer = make_trainer(max_epochs=1, limit_train_batches=3)
    trainer.fit(model, datamodule=dm)
    result = trainer.test(model, datamodule=dm, verbose=False)[0]
    model.eval()
    with torch.no_grad():
        pairs = [(model(x).argmax(1), y) for x, y in dm.test_dataloader()]
    preds, target = torch.cat([p for p, _ in pairs]), torch.cat([y for _, y in pairs])
    by_hand = torch.bincount(target * 10 + preds, minlength=100).view(10, 10)
    cm = model.test_confmat.compute()
    assert torch.equal(cm, by_hand)
    assert result["test/acc"] == pytest.approx(float(cm.diag().sum() / cm.sum()), abs=1e-6)
    assert list((tmp_path / "artifacts").glob("confusion_matrix_step*.png"))
