"""Forecasting windows from a CSV of one or more series (offline default: a generated seasonal series).

Split (chronological): the test block is the last ``test_size`` steps, the validation block the
``val_size`` steps before it, training is everything earlier. A window forecasts ``horizon`` steps
from an origin ``o`` using the ``lookback`` steps before it; its targets lie entirely inside one
block, so no training target comes from validation or test, and the transform (log, Holt-Winters
baseline or seasonal difference, scaling) is fitted on the training rows only. Inputs may reach back
into earlier blocks (that history is known at forecast time).

Targets (``baseline``): ``holt_winters`` (default) makes the model forecast the scaled residual of a
damped Holt-Winters forecast from the same origin (a hybrid in the spirit of ES-RNN: the smoothing
model carries level and season, the LSTM corrects it), with the one-step Holt-Winters residuals as
inputs; ``none`` makes it forecast the (log / seasonally differenced / scaled) series itself.

Each batch is ``(x, y, history, truth, origin)``: inputs [B, lookback, input_size], transformed
targets [B, horizon, num_targets], the raw values before the origin [B, max(lookback, season), T],
the raw truth [B, horizon, T] and the origin index [B], so metrics and baselines run on the original scale.

Example:
    >>> dm = TimeSeriesDataModule()  # lookback 36, horizon 12
    >>> dm.setup("fit")
    >>> x, y, history, truth, origin = next(iter(dm.train_dataloader()))
    >>> tuple(x.shape[1:]), tuple(y.shape[1:])
    ((36, 3), (12, 1))
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np
import pandas as pd
import torch

from zoo.datamodules._holt_winters import HoltWinters
from zoo.datamodules._ts_transforms import (FillMissing, SeriesTransform, future_times, generate_series,
                                            log_positive, read_series_csv, window_origins)
from zoo.datamodules.base import InMemoryDataModule
from zoo.errors import ZooUserError

__all__ = ["TimeSeriesDataModule"]

DEFAULT_CSV = Path("timeseries") / "airline-passengers.csv"
Baseline = Literal["holt_winters", "none"]


class TimeSeriesDataModule(InMemoryDataModule):
    """Sliding forecast windows over CSV series with a leak-free chronological split.

    Args:
        path: CSV file (absolute, or relative to ``data_dir``). None: ``<data_dir>/timeseries/airline-passengers.csv``
            when ``data_dir`` is given, else the generated series (:func:`generate_series`, seeded by ``seed``).
        time_column: timestamp column; ``auto`` = the first column when it is not numeric, ``none`` = row numbers.
        target: column(s) to forecast; None = every numeric non-time, non-covariate column.
        covariates: extra numeric input columns (observed in the past only, scaled on training rows).
        calendar_features: add sin/cos of each step's position in the season (month of year for monthly data).
        lookback / horizon / stride: input length (default: three seasons of monthly data), forecast length,
            step between training window origins.
        test_size / val_size: lengths of the final test block and of the validation block before it
            (``val_size`` None = ``test_size``).
        baseline: ``holt_winters`` (forecast the residual of damped Holt-Winters, :mod:`._holt_winters`) or
            ``none`` (forecast the transformed series); see the module docstring.
        log / season_length: log transform (before either baseline), length of the season.
        difference: with ``baseline none``, seasonal differencing ``y_t - y_{t-season_length}``.
        scale / center: divide (after log/difference, or the Holt-Winters residuals) by the training-part
            std; with ``baseline none`` subtract its mean when ``center`` (off: a zero output means "same
            as last season", i.e. the seasonal-naive forecast).
        fill_missing: ``error`` (default), ``interpolate`` (linear) or ``ffill`` for empty cells.
        generated_length: length of the generated default series.
    """

    link_fields = ("input_size", "num_targets", "lookback", "horizon")

    def __init__(self, data_dir: str | None = None, path: str | None = None, time_column: str | None = "auto",
                 target: str | list[str] | None = None, covariates: list[str] | None = None,
                 calendar_features: bool = True, lookback: int = 36, horizon: int = 12, stride: int = 1,
                 test_size: int = 12, val_size: int | None = None, baseline: Baseline = "holt_winters",
                 log: bool = False, difference: bool = True,
                 season_length: int = 12, scale: bool = True, center: bool = True, fill_missing: FillMissing = "error",
                 generated_length: int = 240, batch_size: int = 32, num_workers: int = 0, seed: int = 42) -> None:
        super().__init__(data_dir, batch_size, num_workers, seed)
        for name, value, low in (("lookback", lookback, 1), ("horizon", horizon, 1), ("stride", stride, 1),
                                 ("season_length", season_length, 1), ("test_size", test_size, 1)):
            if value < low:
                raise ZooUserError(f"{name} must be >= {low}, got {value}")
        if test_size < horizon:
            raise ZooUserError(f"test_size ({test_size}) must be >= horizon ({horizon}) so one test window fits")
        if baseline not in ("holt_winters", "none"):
            raise ZooUserError(f"baseline must be holt_winters or none, got '{baseline}'")
        if fill_missing not in ("error", "interpolate", "ffill"):
            raise ZooUserError(f"fill_missing must be error, interpolate or ffill, got '{fill_missing}'")
        self.path, self.time_column, self.covariates = path, time_column, list(covariates or [])
        self.target = [target] if isinstance(target, str) else (list(target) if target else None)
        self.calendar_features, self.lookback, self.horizon, self.stride = calendar_features, lookback, horizon, stride
        self.test_size, self.val_size = test_size, val_size if val_size is not None else test_size
        self.season_length, self.fill_missing, self.generated_length = season_length, fill_missing, generated_length
        self.log_values = log
        self.holt_winters = HoltWinters(season_length) if baseline == "holt_winters" else None
        hw = self.holt_winters is not None  # then the transform only scales the residuals
        self.transform = SeriesTransform(log=log and not hw, difference=difference and not hw,
                                         season_length=season_length, scale=scale, center=center and not hw)
        self.splits: dict[str, tuple[torch.Tensor, ...]] = {}
        self._table: np.ndarray | None = None  # Holt-Winters forecasts from every origin (set up with the data)
        self.target_names: list[str] = []
        self.times: pd.DatetimeIndex | None = None
        self.raw = np.zeros((0, 1))
        self._predict_meta: dict[str, Any] = {}

    # ---- shapes linked into the model -------------------------------------------------------------
    @property
    def num_targets(self) -> int:
        return len(self.target) if self.target else (len(self.target_names) or self._peek_targets())

    @property
    def input_size(self) -> int:
        return self.num_targets + len(self.covariates) + (2 if self.calendar_features else 0)

    @property
    def lag(self) -> int:
        """Leading rows without a transformed value (the first season has no Holt-Winters forecast)."""
        return self.season_length if self.holt_winters is not None else self.transform.lag

    @property
    def context(self) -> int:
        """Raw steps kept before each origin: the lookback, and a full season for baselines and inversion."""
        return max(self.lookback, self.season_length)

    def _peek_targets(self) -> int:
        return self._read()[1].shape[1]

    # ---- reading ----------------------------------------------------------------------------------
    def _source(self) -> Path | pd.DataFrame:
        if self.path is not None:
            p = Path(self.path).expanduser()
            if not p.is_absolute() and not p.is_file() and self.data_dir is not None:
                p = self.data_dir / p
            return p
        if self.data_dir is not None:
            return self.data_dir / DEFAULT_CSV
        return generate_series(self.generated_length, self.seed)

    def _read(self, source: Path | pd.DataFrame | None = None):
        return read_series_csv(self._source() if source is None else source, self.time_column, self.target,
                               self.covariates, self.fill_missing)

    def _features(self, z: np.ndarray, cov: np.ndarray, start: int) -> np.ndarray:
        """Model inputs per step: transformed targets, scaled covariates, season-position sin/cos."""
        parts = [z]
        if self.covariates:
            parts.append((cov - self._cov_mean) / self._cov_std)
        if self.calendar_features:
            phase = 2 * np.pi * ((np.arange(len(z)) + start) % self.season_length) / self.season_length
            parts += [np.sin(phase)[:, None], np.cos(phase)[:, None]]
        return np.concatenate(parts, axis=1)

    def _fit_covariates(self, cov_train: np.ndarray) -> None:
        self._cov_mean = cov_train.mean(axis=0) if cov_train.size else np.zeros(0)
        std = cov_train.std(axis=0) if cov_train.size else np.ones(0)
        self._cov_std = np.where(std > 0, std, 1.0)

    # ---- setup ------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.times, raw, cov, self.target_names = self._read()
        n, lag = len(raw), self.lag
        val_start = n - self.test_size - self.val_size
        first = max(self.lookback + lag, self.context)  # earliest origin with full inputs and history
        need = first + self.horizon + self.val_size + self.test_size
        if n < need:
            season = f" + season {lag}" if lag else ""
            raise ZooUserError(f"series has {n} rows but lookback {self.lookback} + horizon {self.horizon} + "
                               f"val_size {self.val_size} + test_size {self.test_size}{season} needs >= {need}; "
                               f"use a longer series or smaller values")
        if self.holt_winters is not None:
            self.holt_winters.fit(self._log(raw[:val_start]), self.target_names)
        series, self._table = self._series(raw)
        # the transform drops its own differencing lag; the residuals' NaN first season is dropped here
        self.transform.fit(series[lag - self.transform.lag:val_start], self.target_names)
        self._fit_covariates(cov[:val_start])
        self.raw, self._cov = raw, cov
        feats = self._features(self.transform.forward(series), cov, 0)
        blocks = {"train": (first, val_start - self.horizon, self.stride),
                  "val": (val_start, n - self.test_size - self.horizon, self.stride),
                  "test": (n - self.test_size, n - self.horizon, self.stride)}
        for split, (lo, hi, stride) in blocks.items():
            origins = window_origins(lo, hi, stride)
            if len(origins) == 0:
                raise ZooUserError(f"no {split} window fits; lower lookback/horizon or raise {split}_size")
            self.splits[split] = self._windows(feats, raw, origins)

    # ---- the transform: scaled series (baseline none) or scaled Holt-Winters residuals -------------
    def _log(self, raw: np.ndarray) -> np.ndarray:
        return log_positive(raw) if self.log_values else raw

    def _series(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """What the transform sees, and the Holt-Winters forecasts from every origin [N + 1, horizon, T]:
        ``(raw, None)`` with ``baseline none``, else the one-step Holt-Winters errors (first season NaN) and
        the table, both on the log scale with ``log``."""
        if self.holt_winters is None:
            return raw, None
        level = self._log(raw)
        one_step, table = self.holt_winters.forecast(level, self.horizon)
        return level - one_step, table

    def inverse(self, z: torch.Tensor, history: torch.Tensor, base: torch.Tensor | None = None,
                origin: torch.Tensor | None = None) -> torch.Tensor:
        """Original-scale forecasts [B, H, T] from model outputs ``z`` for windows at ``origin`` of the configured
        series (or with their Holt-Winters forecasts ``base``, as :meth:`forecast_batch` leaves them).
        Half-precision outputs (AMP) are inverted in float32: original-scale values may exceed float16's range."""
        z = z.to(torch.promote_types(z.dtype, torch.float32))
        if self.holt_winters is None:
            return self.transform.inverse(z, history)
        if base is None:
            base = torch.as_tensor(self._table[origin.cpu().numpy()])
        w = base.to(z) + self.transform.inverse(z, history)
        return torch.exp(w) if self.log_values else w

    def _windows(self, feats: np.ndarray, raw: np.ndarray, origins: np.ndarray, with_targets: bool = True):
        z = feats[:, : raw.shape[1]]
        x = np.stack([feats[o - self.lookback: o] for o in origins])
        hist = np.stack([raw[o - self.context: o] for o in origins])
        if with_targets:
            truth = np.stack([raw[o: o + self.horizon] for o in origins])
            if self.holt_winters is None:
                y = np.stack([z[o: o + self.horizon] for o in origins])
            else:
                y = self.transform.forward(self._log(truth) - self._table[origins])
        else:
            y = truth = np.zeros((len(origins), self.horizon, raw.shape[1]))
        tensors = (x, y, hist, truth)
        return (*(torch.as_tensor(t, dtype=torch.float32) for t in tensors), torch.as_tensor(origins))


    # ---- predict: forecast past the end of a series -----------------------------------------------
    def forecast_batch(self, source: Path | pd.DataFrame | None = None) -> tuple[torch.Tensor, ...]:
        """One batch forecasting ``horizon`` steps after the end of ``source`` (default: the configured series).

        A ``source`` is transformed with the restored checkpoint state (:meth:`load_state_dict`) when there
        is one, so the training CSV is not needed at predict time; otherwise the configured data is set up.
        """
        if source is None or not self.transform.fitted:
            self.setup()
        times, raw, cov, names = self.raw_series(source)
        if names != self.target_names:
            raise ZooUserError(f"prediction input has target column(s) {names}, the model was trained on "
                               f"{self.target_names}; pass a CSV with the same columns")
        first = max(self.lookback + self.lag, self.context)
        if len(raw) < first:
            raise ZooUserError(f"prediction input has {len(raw)} rows; it needs >= {first} (lookback + season)")
        series, table = self._series(raw)
        feats = self._features(self.transform.forward(series), cov, 0)
        self._predict_meta = {"times": future_times(times, len(raw), self.horizon), "names": names,
                              "time_name": times.name if times is not None and times.name else "step",
                              "base": None if table is None else torch.as_tensor(table[-1:])}
        return self._windows(feats, raw, np.array([len(raw)]), with_targets=False)

    def raw_series(self, source: Path | pd.DataFrame | None = None):
        if source is None:
            return self.times, self.raw, self._cov, self.target_names
        return self._read(source)

    def predict_input(self, path: str) -> Iterable[Any]:
        """A loader with the single window that forecasts past the end of the CSV at ``path``."""
        return self.make_loader(self.forecast_batch(Path(path).expanduser()), train=False)

    def predict_dataloader(self):
        return self.make_loader(self.forecast_batch(), train=False)

    def inverse_forecast(self, z: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Original-scale forecasts from model outputs for the window of the last :meth:`forecast_batch`."""
        if not self._predict_meta:
            raise RuntimeError("inverse_forecast before forecast_batch")
        return self.inverse(z, history, base=self._predict_meta["base"])

    def forecast_frame(self, forecast: np.ndarray) -> pd.DataFrame:
        """A table (timestamp + one column per target) for a forecast [horizon, T] from :meth:`forecast_batch`."""
        if not self._predict_meta:
            raise RuntimeError("forecast_frame before forecast_batch")
        frame = pd.DataFrame(forecast, columns=self._predict_meta["names"])
        frame.insert(0, self._predict_meta["time_name"], self._predict_meta["times"])
        return frame

    # ---- checkpointed state: the fitted scaler, so predict needs no training CSV ---------------------
    def state_dict(self) -> dict[str, Any]:
        if not self.transform.fitted:
            return {}
        state = {"transform": self.transform.state_dict(), "target_names": list(self.target_names),
                 "cov_mean": self._cov_mean.tolist(), "cov_std": self._cov_std.tolist()}
        if self.holt_winters is not None:
            state["holt_winters"] = self.holt_winters.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.transform.load_state_dict(state["transform"])
            self.target_names = list(state["target_names"])
            self._cov_mean, self._cov_std = np.asarray(state["cov_mean"]), np.asarray(state["cov_std"])
            if ("holt_winters" in state) != (self.holt_winters is not None):
                trained = "holt_winters" if "holt_winters" in state else "none"
                raise ZooUserError(f"this checkpoint was trained with --data.baseline {trained}; pass it to predict")
            if self.holt_winters is not None:
                self.holt_winters.load_state_dict(state["holt_winters"])

    def series_for_plot(self) -> tuple[Sequence, np.ndarray]:
        """(x axis, raw values [N, T]) of the configured series."""
        axis = self.times if self.times is not None else np.arange(len(self.raw))
        return axis, self.raw
