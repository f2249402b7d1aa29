"""LSTM forecaster and time-series DataModule: leak-free windows, train-only scaling, exact inverse
transforms, original-scale metrics beside baselines, forecasts past the end, and clear CSV errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from zoo.datamodules import TimeSeriesDataModule
from zoo.datamodules._holt_winters import HoltWinters
from zoo.datamodules._ts_transforms import generate_series
from zoo.errors import ZooUserError
from zoo.models import LSTMForecaster
from zoo.models.lstm import baseline_forecasts
from zoo.registry import create_model, get_model_entry

SMALL = dict(lookback=12, horizon=6, test_size=12, val_size=6, batch_size=16)


def write_csv(tmp_path: Path, n: int = 96, **columns) -> Path:
    frame = generate_series(n, seed=3).rename(columns={"value": "sales"})
    for name, values in columns.items():
        frame[name] = values
    path = tmp_path / "series.csv"
    frame.assign(month=frame["month"].dt.strftime("%Y-%m")).to_csv(path, index=False)
    return path


def linked_model(dm: TimeSeriesDataModule, **kwargs) -> LSTMForecaster:
    return create_model("lstm", **{f: getattr(dm, f) for f in dm.link_fields}, **kwargs)


def test_registry_links_shapes() -> None:
    assert get_model_entry("lstm").datamodule == "timeseries"
    dm = TimeSeriesDataModule(**SMALL)
    dm.setup()
    model = linked_model(dm)
    x = dm.splits["train"][0]
    assert x.shape[1:] == (12, 3)  # lookback, one target + sin/cos season features
    assert model(x[:4]).shape == (4, 6, 1)


@pytest.mark.parametrize("baseline", ["holt_winters", "none"])
def test_windows_never_cross_blocks_and_scaler_sees_train_only(tmp_path: Path, baseline: str) -> None:
    base = TimeSeriesDataModule(path=str(write_csv(tmp_path)), baseline=baseline, **SMALL)
    base.setup()
    n = len(base.raw)
    val_start, test_start = n - 18, n - 12
    origins = {s: base.splits[s][4] for s in ("train", "val", "test")}
    assert int(origins["train"].max()) + 6 <= val_start
    assert int(origins["val"].min()) >= val_start and int(origins["val"].max()) + 6 <= test_start
    assert int(origins["test"].min()) >= test_start and int(origins["test"].max()) + 6 == n
    # poison validation and test rows: nothing used for training may change
    frame = pd.read_csv(tmp_path / "series.csv")
    frame.loc[val_start:, "sales"] = 1e6
    frame.to_csv(tmp_path / "poisoned.csv", index=False)
    poisoned = TimeSeriesDataModule(path=str(tmp_path / "poisoned.csv"), baseline=baseline, **SMALL)
    poisoned.setup()
    for a, b in zip(base.splits["train"], poisoned.splits["train"]):
        assert torch.equal(a, b)
    np.testing.assert_allclose(poisoned.transform.mean, base.transform.mean)
    np.testing.assert_allclose(poisoned.transform.std, base.transform.std)
    raw = base.raw[:val_start]
    if baseline == "none":
        diff = raw[12:, 0] - raw[:-12, 0]
        np.testing.assert_allclose(base.transform.mean, [diff.mean()])
        np.testing.assert_allclose(base.transform.std, [diff.std()])
    else:  # smoothing weights and residual scale come from training rows; the filter only looks back
        np.testing.assert_allclose(poisoned.holt_winters.weights, base.holt_winters.weights)
        residuals = (raw - base.holt_winters.forecast(raw, horizon=6)[0])[12:]
        np.testing.assert_allclose(base.transform.mean, [0.0])
        np.testing.assert_allclose(base.transform.std, residuals.std(axis=0))


def test_holt_winters_forecasts_only_look_back_and_follow_trend_and_season() -> None:
    t = np.arange(120.0)
    y = (100 + 0.5 * t) * (1 + 0.2 * np.sin(2 * np.pi * t / 12)) + np.random.default_rng(0).normal(0, 1, 120)
    hw = HoltWinters(12).fit(y[:96, None])
    assert hw.multiplicative.tolist() == [True]
    table = hw.forecast(y[:, None], horizon=12)[1]
    changed = hw.forecast(np.r_[y[:100], y[100:] * 3][:, None], horizon=12)[1]
    np.testing.assert_array_equal(table[:101], changed[:101])  # values from row 100 on never reach origins <= 100
    assert np.isnan(table[:12]).all() and np.isfinite(table[12:]).all()
    errors = np.abs(table[108, :, 0] - y[108:])
    assert errors.mean() < 0.5 * np.abs(y[96:108] - y[108:]).mean()  # well under seasonal naive (a year of trend)
    assert HoltWinters(12).fit(y[:96, None] - 150).multiplicative.tolist() == [False]  # not all positive


@pytest.mark.parametrize("baseline,log,difference,center", [
    ("none", False, True, True), ("none", True, True, False), ("none", True, False, True),
    ("none", False, False, False), ("holt_winters", False, True, True), ("holt_winters", True, True, True)])
def test_inverse_transform_round_trips(tmp_path: Path, baseline: str, log: bool, difference: bool,
                                       center: bool) -> None:
    other = 1e5 + 2e4 * np.cos(np.arange(96) / 3.0)  # beyond float16's range (65504)
    dm = TimeSeriesDataModule(path=str(write_csv(tmp_path, other=other)), target=["sales", "other"], log=log,
                              baseline=baseline, difference=difference, center=center, lookback=12, horizon=18,
                              test_size=18, val_size=18)
    dm.setup()
    for split in ("train", "test"):
        _, y, history, truth, origin = dm.splits[split]
        back = dm.inverse(y.double(), history.double(), origin=origin)
        torch.testing.assert_close(back, truth.double(), rtol=1e-5, atol=1e-4)  # horizon 18 > season 12
        amp = dm.inverse(y.half(), history, origin=origin)  # what an AMP model emits: inverted in float32
        assert amp.dtype == torch.float32 and torch.isfinite(amp).all()
        torch.testing.assert_close(amp, truth, rtol=1e-2, atol=0.5)


def test_baselines_repeat_last_value_and_last_season() -> None:
    history = torch.arange(24, dtype=torch.float32).view(1, 24, 1)
    out = baseline_forecasts(history, horizon=14, season_length=12)
    assert out["naive"].flatten().tolist() == [23.0] * 14
    assert out["seasonal_naive"].flatten().tolist() == [*range(12, 24), 12.0, 13.0]


def test_model_beats_naive_on_seasonal_series_and_plots(make_trainer, tmp_path: Path) -> None:
    torch.manual_seed(0)
    dm = TimeSeriesDataModule(lookback=24, horizon=12, test_size=24, batch_size=16)
    model = linked_model(dm, hidden_size=32)
    trainer = make_trainer(max_epochs=15)
    trainer.fit(model, datamodule=dm)
    first = trainer.callback_metrics["val/loss"].item()
    result = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert result["test/rmse"] < 0.6 * result["test/naive_rmse"]
    assert result["test/rmse"] < 1.2 * result["test/seasonal_naive_rmse"]
    assert {"test/mae", "test/mape", "test/smape", "test/seasonal_naive_smape", "test/naive_mape",
            "test/holt_winters_rmse"} <= set(result)
    assert 0 < result["test/mape"] < 20  # percent, on the original scale (values ~100-150)
    assert np.isfinite(first)
    assert list((tmp_path / "artifacts").glob("forecast_step*.png"))


def test_predict_writes_future_timestamps_from_checkpoint_state(make_trainer, tmp_path: Path) -> None:
    csv = write_csv(tmp_path)
    dm = TimeSeriesDataModule(path=str(csv), **SMALL)
    model = linked_model(dm, hidden_size=8)
    make_trainer(max_epochs=1).fit(model, datamodule=dm)
    state = dm.state_dict()
    fresh = TimeSeriesDataModule(path=str(tmp_path / "gone.csv"), **SMALL)  # training CSV no longer needed
    fresh.load_state_dict(state)
    loader = fresh.predict_input(str(csv))
    preds = make_trainer().predict(model, dataloaders=loader)
    out = model.write_predictions(preds, tmp_path / "pred", fresh)
    table = pd.read_csv(out)
    assert list(table.columns) == ["month", "sales"] and len(table) == 6
    assert table["month"].iloc[0].startswith("2008-01") and table["month"].iloc[-1].startswith("2008-06")
    assert np.isfinite(table["sales"]).all() and table["sales"].between(20, 200).all()
    direct = model.write_predictions(make_trainer().predict(model, dataloaders=dm.predict_input(str(csv))),
                                     tmp_path / "pred2", dm)
    pd.testing.assert_frame_equal(pd.read_csv(direct), table)
    with pytest.raises(ZooUserError, match="trained with --data.baseline holt_winters"):
        TimeSeriesDataModule(path=str(csv), baseline="none", **SMALL).load_state_dict(state)


@pytest.mark.parametrize("edit,message", [
    (lambda f: f.assign(sales=f["sales"].where(f.index != 40)), "missing value"),
    (lambda f: f.assign(sales=f["sales"].astype(object).where(f.index != 7, "12,5 units")),
     "non-numeric cell '12,5 units' at data row 8"),
    (lambda f: f.head(40), "needs >= "),
    (lambda f: f.assign(month="not a date"), "does not parse"),
    (lambda f: f.assign(sales=5.0), "constant"),
])
def test_bad_csv_gets_a_clear_error(tmp_path: Path, edit, message: str) -> None:
    path = write_csv(tmp_path)
    edit(pd.read_csv(path)).to_csv(path, index=False)
    with pytest.raises(ZooUserError, match=message):
        TimeSeriesDataModule(path=str(path), **SMALL).setup()


def test_missing_values_can_be_interpolated(tmp_path: Path) -> None:
    path = write_csv(tmp_path)
    frame = pd.read_csv(path)
    frame.loc[40, "sales"] = np.nan
    frame.to_csv(path, index=False)
    dm = TimeSeriesDataModule(path=str(path), fill_missing="interpolate", **SMALL)
    dm.setup()
    assert dm.raw[40, 0] == pytest.approx((frame["sales"][39] + frame["sales"][41]) / 2)


def test_missing_file_column_and_impossible_sizes(tmp_path: Path) -> None:
    with pytest.raises(ZooUserError, match="not found"):
        TimeSeriesDataModule(path=str(tmp_path / "nope.csv")).setup()
    path = write_csv(tmp_path)
    with pytest.raises(ZooUserError, match="columns found: month, sales"):
        TimeSeriesDataModule(path=str(path), target="revenue").setup()
    with pytest.raises(ZooUserError, match="test_size"):
        TimeSeriesDataModule(horizon=24, test_size=12)
    with pytest.raises(ZooUserError, match="needs >= "):
        TimeSeriesDataModule(path=str(path), lookback=80).setup()
    with pytest.raises(ZooUserError, match="strictly positive"):
        TimeSeriesDataModule(path=str(write_csv(tmp_path, sales=np.linspace(-5, 5, 96))), log=True).setup()


def test_holt_winters_baseline_needs_a_season_and_three_of_them(tmp_path: Path) -> None:
    path = str(write_csv(tmp_path))
    with pytest.raises(ZooUserError, match="season_length >= 2; pass --data.baseline none"):
        TimeSeriesDataModule(path=path, season_length=1, **SMALL).setup()
    TimeSeriesDataModule(path=path, season_length=1, baseline="none", **SMALL).setup()
    with pytest.raises(ZooUserError, match="needs >= 90 training rows .three seasons., got 78"):
        TimeSeriesDataModule(path=path, season_length=30, **SMALL).setup()
