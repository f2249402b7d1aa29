"""Dense networks on tables (`mlp`, data `tabular`): typing, leakage, target scaling, every task and loss,
label conventions, predict with the saved transforms, and one-line errors for bad tables."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from zoo.cli import main
from zoo.datamodules._tabular_prep import TablePrep, infer_columns, infer_task
from zoo.datamodules.tabular import TabularDataModule
from zoo.errors import ZooUserError
from zoo.models._tabular_report import plot_importance
from zoo.models.mlp import TabularMLP


def make_table(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Two numeric features (``b`` with empty cells), a categorical one (with empty cells) and targets of every kind."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    c = rng.choice(["red", "green", "blue"], size=n)
    effect = pd.Series(c).map({"red": 1.5, "green": 0.0, "blue": -1.5}).to_numpy()
    score = 2 * a + effect + 0.1 * rng.normal(size=n)
    frame = pd.DataFrame({"a": a, "b": b, "c": c, "price": 100 * score + 500, "size": 3 * b - a,
                          "sold": np.where(score > 0, "yes", "no"),
                          "tier": pd.cut(score, [-np.inf, -1, 1, np.inf], labels=["low", "mid", "high"]).astype(str),
                          "l1": (a > 0).astype(int), "l2": (effect > 0).astype(int)})
    frame.loc[rng.choice(n, 20, replace=False), "b"] = np.nan
    frame.loc[rng.choice(n, 10, replace=False), "c"] = None
    return frame


def table_dm(frame: pd.DataFrame, tmp_path: Path, target, **kw) -> TabularDataModule:
    frame.to_csv(tmp_path / "t.csv", index=False)
    dm = TabularDataModule(path=str(tmp_path / "t.csv"), target=target, drop=kw.pop("drop", None), batch_size=64, **kw)
    dm.setup()
    return dm


def model_for(dm: TabularDataModule, **kw) -> TabularMLP:
    return TabularMLP(task=dm.task, num_numeric=dm.num_numeric, cardinalities=dm.cardinalities,
                      num_outputs=dm.num_outputs, target_mean=dm.target_mean, target_std=dm.target_std,
                      hidden=(32, 32), dropout=0.0, lr=5e-3, **kw)


def sample_rows(path: Path) -> Path:
    """Rows of the default table (diabetes) without its target, for `train.py predict` in test_every_model."""
    from zoo.datamodules.tabular import load_bundled

    frame, targets = load_bundled("diabetes")
    frame.drop(columns=targets).head(6).to_csv(path / "rows.csv", index=False)
    return path / "rows.csv"


FEATURES_ONLY = ["price", "size", "sold", "tier", "l1", "l2"]


def test_column_typing_and_missing_values() -> None:
    frame = make_table()
    num, cat = infer_columns(frame, ["price"], None, None, [c for c in FEATURES_ONLY if c != "price"])
    assert (num, cat) == (["a", "b"], ["c"])
    assert infer_task(frame, ["price"]) == "regression" and infer_task(frame, ["sold"]) == "binary"
    assert infer_task(frame, ["tier"]) == "multiclass" and infer_task(frame, ["l1", "l2"]) == "multilabel"
    assert infer_task(frame, ["price", "size"]) == "regression"
    prep = TablePrep(scaling="none")
    prep.fit(frame, ["a", "b"], ["c"], ["price"], "regression")
    x = prep.features(frame)
    empty_b, empty_c = frame["b"].isna().to_numpy(), frame["c"].isna().to_numpy()
    assert prep.input_names == ["a", "b", "b_missing", "c"] and prep.cardinalities == [5]  # unknown + 3 + <missing>
    assert np.allclose(x[empty_b, 1], np.nanmedian(frame["b"])) and np.array_equal(x[:, 2], empty_b.astype(np.float32))
    assert len(set(x[empty_c, 3])) == 1 and x[empty_c, 3][0] > 0 and 0 not in x[:, 3]  # <missing> is a category
    no_flag = TablePrep(scaling="none", missing_indicator=False)
    no_flag.fit(frame, ["a", "b"], ["c"], ["price"], "regression")
    assert no_flag.input_names == ["a", "b", "c"]


def test_transforms_are_fitted_on_training_rows_only(tmp_path: Path) -> None:
    frame = make_table()
    dm = table_dm(frame, tmp_path, "price", drop=FEATURES_ONLY[1:], scaling="standard")
    train = frame.iloc[dm.split_rows["train"]]
    assert set(dm.split_rows["train"]).isdisjoint(dm.split_rows["test"])
    assert abs(len(dm.split_rows["val"]) - 0.16 * 240) <= 1
    assert dm.prep.medians[1] == pytest.approx(np.nanmedian(train["b"]))
    assert dm.prep.mean[0] == pytest.approx(train["a"].mean())
    assert dm.target_mean[0] == pytest.approx(train["price"].mean())
    # a huge outlier in the test rows changes nothing that was fitted
    spoiled = frame.copy()
    spoiled.loc[dm.split_rows["test"], ["a", "price"]] = 1e9
    refit = table_dm(spoiled, tmp_path, "price", drop=FEATURES_ONLY[1:], scaling="standard")
    assert refit.prep.state_dict() == dm.prep.state_dict()
    quantile = table_dm(frame, tmp_path, "price", drop=FEATURES_ONLY[1:])
    assert abs(float(quantile.splits["train"][0][:, 0].mean())) < 0.2  # normal output on the training rows


def test_target_scaling_is_inverted_for_metrics_and_outputs(tmp_path: Path) -> None:
    frame = make_table()
    dm = table_dm(frame, tmp_path, "price", drop=FEATURES_ONLY[1:], target_divisor=100)
    y_train = dm.splits["train"][1]
    assert abs(float(y_train.mean())) < 1e-5 and float(y_train.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    model = model_for(dm)
    original = frame["price"].to_numpy()[dm.split_rows["test"]] / 100
    assert torch.allclose(model.outputs(dm.splits["test"][1])[:, 0], torch.tensor(original, dtype=torch.float32),
                          atol=1e-4)


@pytest.mark.parametrize("target,loss", [("price", "mse"), ("price", "mae"), ("price", "huber"),
                                         (["price", "size"], "mse"), ("sold", "bce"), ("sold", "hinge"),
                                         ("tier", "cross_entropy"), ("tier", "hinge"),
                                         (["l1", "l2"], "bce"), (["l1", "l2"], "hinge")])
def test_every_task_and_loss_beats_a_trivial_baseline(target, loss, tmp_path: Path, make_trainer) -> None:
    targets = [target] if isinstance(target, str) else target
    dm = table_dm(make_table(), tmp_path, target, drop=[c for c in FEATURES_ONLY if c not in targets])
    model = model_for(dm, loss=loss)
    trainer = make_trainer(max_epochs=25, limit_val_batches=0)
    trainer.fit(model, dm)
    (result,) = trainer.test(model, dm, verbose=False)
    y_train, y_test = dm.splits["train"][1], dm.splits["test"][1]
    if dm.task == "regression":  # the training mean's RMSE on the original scale
        truth = y_test * model.y_std + model.y_mean
        baseline = float((truth - (y_train * model.y_std + model.y_mean).mean(0)).pow(2).mean().sqrt())
        assert result["test/rmse"] < 0.5 * baseline and result["test/r2"] > 0.6
    else:
        majority = float((y_test == y_train.mode(dim=0).values).float().mean())  # per label for multi-label
        assert result["test/acc"] > majority + 0.1 and result["test/auroc"] > 0.85
    if dm.task == "multilabel":
        assert {"test/f1_l1", "test/f1_l2"} <= set(result)
    if len(targets) > 1 and dm.task == "regression":
        assert {"test/rmse_price", "test/rmse_size"} <= set(result)


def test_hinge_and_bce_label_conventions() -> None:
    binary = TabularMLP(task="binary", num_numeric=1, num_outputs=1, loss="hinge")
    y = torch.tensor([1, 0])
    assert binary.criterion(torch.tensor([[2.0], [-2.0]]), y) == 0  # {0, 1} -> {-1, +1}, margin 1
    assert binary.criterion(torch.tensor([[0.0], [0.0]]), y) == 1
    assert binary.outputs(torch.tensor([[3.0], [-3.0]])).shape == (2,)  # positive-class probability
    bce = TabularMLP(task="multilabel", num_numeric=1, num_outputs=2, loss="bce")
    assert bce.criterion(torch.tensor([[20.0, -20.0]]), torch.tensor([[1.0, 0.0]])) < 1e-6
    multi = TabularMLP(task="multiclass", num_numeric=1, num_outputs=3, loss="hinge")
    assert multi.criterion(torch.tensor([[3.0, 0.0, 0.0]]), torch.tensor([0])) == 0
    for task, loss, outputs in (("regression", "bce", 1), ("binary", "mse", 1), ("multiclass", "bce", 3),
                                ("multilabel", "cross_entropy", 2)):
        with pytest.raises(ZooUserError, match=f"does not fit a {task} task"):
            TabularMLP(task=task, num_numeric=1, num_outputs=outputs, loss=loss)
    with pytest.raises(ZooUserError, match="all equal"):
        TabularMLP(residual=True, hidden=(32, 16))


def test_periodic_embeddings_and_residual_blocks_shape() -> None:
    model = TabularMLP(num_numeric=3, cardinalities=[4, 2], num_outputs=2, residual=True, norm="batch",
                       numeric_embedding="periodic", hidden=(16, 16))
    assert model(torch.tensor([[0.1, -0.2, 0.3, 3.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0]])).shape == (2, 2)


def _fit(tmp_path: Path, csv: Path, *extra: str) -> Path:
    args = ["--model", "mlp", "--data.path", str(csv), "--max-epochs", "3", "--threads", "1",
            "--runs-dir", str(tmp_path / "runs"), "--model.hidden", "[16]", *extra]
    assert main(args) == 0
    (metrics,) = (tmp_path / "runs" / "mlp").glob("*/metrics.json")
    return Path(json.loads(metrics.read_text())["best_checkpoint"])


def test_predict_on_a_new_csv_uses_the_saved_transforms(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    frame = make_table()
    frame.to_csv(tmp_path / "train.csv", index=False)
    ckpt = _fit(tmp_path, tmp_path / "train.csv", "--data.target", "tier",
                "--data.drop", '["price", "size", "sold", "l1", "l2"]')
    state = torch.load(ckpt, weights_only=True)  # everything fitted is plain data
    assert state["TabularDataModule"]["prep"]["vocab"] == [["<missing>", "blue", "green", "red"]]
    rows = frame[["c", "b", "a"]].head(7).assign(note="ignored")  # other order, an extra column, no target
    rows.to_csv(tmp_path / "rows.csv", index=False)
    capsys.readouterr()
    assert main(["predict", "--ckpt-path", str(ckpt), "--input", str(tmp_path / "rows.csv"),
                 "--runs-dir", str(tmp_path / "runs")]) == 0
    out = pd.read_csv(re.search(r"predictions: (\S+)", capsys.readouterr().out).group(1))
    assert list(out.columns[:4]) == ["c", "b", "a", "note"] and len(out) == 7
    model = TabularMLP.load_from_checkpoint(ckpt, map_location="cpu").eval()
    prep = TablePrep()
    prep.load_state_dict(state["TabularDataModule"]["prep"])
    with torch.no_grad():
        probs = model.outputs(model(torch.from_numpy(prep.features(frame.head(7)))))
    assert np.allclose(out[["p_high", "p_low", "p_mid"]].to_numpy(), probs.numpy(), atol=1e-4)
    assert list(out["prediction"]) == [["high", "low", "mid"][i] for i in probs.argmax(1).tolist()]
    # a training column missing, and an unseen category (a warning, or an error when asked for)
    frame[["a", "c"]].to_csv(tmp_path / "no_b.csv", index=False)
    assert main(["predict", "--ckpt-path", str(ckpt), "--input", str(tmp_path / "no_b.csv")]) == 2
    assert "lacks the training column(s) b" in capsys.readouterr().err
    rows.assign(c="purple").to_csv(tmp_path / "purple.csv", index=False)
    with pytest.warns(UserWarning, match="unseen in training"):
        assert main(["predict", "--ckpt-path", str(ckpt), "--input", str(tmp_path / "purple.csv"),
                     "--runs-dir", str(tmp_path / "runs")]) == 0
    prep.on_unseen = "error"
    with pytest.raises(ZooUserError, match="'purple', a category not seen in training"):
        prep.features(rows.assign(c="purple"))
    rows.assign(a="oops").to_csv(tmp_path / "oops.csv", index=False)
    assert main(["predict", "--ckpt-path", str(ckpt), "--input", str(tmp_path / "oops.csv")]) == 2
    assert "column 'a' of 'oops.csv' is numeric but row 0 holds 'oops'" in capsys.readouterr().err


@pytest.mark.parametrize("spoil,message", [
    (lambda f: f, "target column 'missing' is not in the table"),
    (lambda f: f.assign(sold="yes"), "has a single class 'yes'"),
    (lambda f: f.assign(b=np.nan), "column 'b' is empty in every row; drop it with --data.drop b"),
    (lambda f: f.assign(a=f["a"].astype(str).where(f.index != 5, "abc")),
     "column 'a' is numeric but row 5 holds 'abc'"),
    (lambda f: f.iloc[:0], "has a header but no data rows"),
    (None, "is empty; it needs a header row"),
])
def test_bad_tables_exit_2_with_one_line(spoil, message, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv = tmp_path / "bad.csv"
    if spoil is None:
        csv.write_text("")
    else:
        spoil(make_table()).to_csv(csv, index=False)
    target = "missing" if message.startswith("target column") else "sold"
    args = ["--model", "mlp", "--data.path", str(csv), "--data.target", target, "--runs-dir", str(tmp_path / "runs")]
    assert main(args) == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert message in line, err


def test_bundled_tables_and_parquet(tmp_path: Path) -> None:
    kinds = {name: TabularDataModule(dataset=name) for name in ("diabetes", "breast_cancer", "wine", "linnerud")}
    assert [(dm.task, dm.num_outputs) for dm in kinds.values()] == [("regression", 1), ("binary", 1), ("multiclass", 3),
                                                                      ("regression", 3)]
    assert kinds["breast_cancer"].class_names == ["benign", "malignant"]
    pytest.importorskip("pyarrow")
    make_table().to_parquet(tmp_path / "t.parquet")
    dm = TabularDataModule(path=str(tmp_path / "t.parquet"), target="tier", drop=["price", "size", "sold", "l1", "l2"])
    assert dm.task == "multiclass" and dm.cardinalities == [5]


def test_importance_plot_shows_the_top_columns_most_important_first() -> None:
    scores = torch.tensor([0.1, 0.5, -0.2, 0.3, 0.05])
    fig = plot_importance(scores, ["a", "b", "c", "d", "e"], "RMSE increase", top=3)
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[::-1] == ["b", "d", "a"]  # barh draws the first label at the bottom
    assert [bar.get_width() for bar in ax.patches][::-1] == pytest.approx([0.5, 0.3, 0.1])
    assert ax.get_xlabel() == "RMSE increase" and ax.get_title()
