"""Time-series plumbing for the ``timeseries`` DataModule: CSV reading, the offline generator,
invertible transforms (log -> seasonal difference -> standard scaling) and leak-free windows.

Example:
    >>> frame = generate_series(n=48, seed=0)
    >>> tf = SeriesTransform(log=False, difference=True, season_length=12).fit(frame[["value"]].to_numpy()[:36])
    >>> z = tf.forward(frame[["value"]].to_numpy())
    >>> z.shape
    (48, 1)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import torch

from zoo.errors import ZooUserError

__all__ = ["generate_series", "read_series_csv", "SeriesTransform", "window_origins", "future_times"]

FillMissing = Literal["error", "interpolate", "ffill"]


def generate_series(n: int = 240, seed: int = 0, start: str = "2000-01") -> pd.DataFrame:
    """A seeded monthly series: ``value = 50 + 0.4 t + 10 sin(2 pi t / 12) + 4 cos(2 pi t / 6) + AR(1) noise``.

    The noise is ``e_t = 0.5 e_{t-1} + N(0, 2^2)``; the frame has columns ``month`` (timestamps) and ``value``.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    noise = np.zeros(n)
    shocks = rng.normal(0.0, 2.0, n)
    for i in range(n):
        noise[i] = (0.5 * noise[i - 1] if i else 0.0) + shocks[i]
    value = 50 + 0.4 * t + 10 * np.sin(2 * np.pi * t / 12) + 4 * np.cos(2 * np.pi * t / 6) + noise
    return pd.DataFrame({"month": pd.date_range(start, periods=n, freq="MS"), "value": value.round(3)})


def _numeric(frame: pd.DataFrame, columns: Sequence[str], fill_missing: FillMissing) -> np.ndarray:
    out = []
    for col in columns:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() & frame[col].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ZooUserError(f"column '{col}' has a non-numeric cell {frame[col].iloc[row]!r} at data row {row + 1}; "
                               f"fix it, or pick numeric columns with --data.target")
        infinite = ~np.isfinite(values.to_numpy(dtype=np.float64)) & values.notna().to_numpy()
        if infinite.any():
            rows = np.flatnonzero(infinite)
            raise ZooUserError(f"column '{col}' has {len(rows)} non-finite value(s) (inf), first at data row "
                               f"{rows[0] + 1}; the data must be finite: fix or drop those rows")
        if values.isna().any():
            if fill_missing == "error":
                row = int(np.flatnonzero(values.isna().to_numpy())[0])
                raise ZooUserError(f"column '{col}' has {int(values.isna().sum())} missing value(s), first at data row "
                                   f"{row + 1}; fill them or pass --data.fill_missing interpolate|ffill")
            if fill_missing == "interpolate":
                values = values.interpolate(limit_direction="both")
            else:
                values = values.ffill().bfill()
            if values.isna().any():
                raise ZooUserError(f"column '{col}' has no values at all; choose another --data.target")
        out.append(values.to_numpy(dtype=np.float64))
    return np.stack(out, axis=1) if out else np.zeros((len(frame), 0))


def read_series_csv(
    path: Path | pd.DataFrame, time_column: str | None, target: Sequence[str] | None, covariates: Sequence[str] = (),
    fill_missing: FillMissing = "error",
) -> tuple[pd.DatetimeIndex | None, np.ndarray, np.ndarray, list[str]]:
    """Read a CSV (or take a DataFrame) into (times or None, targets [N, T], covariates [N, C], target names).

    ``time_column``: ``"auto"`` uses the first column when it is not numeric, ``None``/``"none"`` uses the
    row number. ``target`` None takes every column that is neither time nor covariate.
    Missing cells raise unless ``fill_missing`` is ``interpolate`` (linear) or ``ffill`` (last value).
    """
    if isinstance(path, pd.DataFrame):
        frame = path
    else:
        if not Path(path).is_file():
            raise ZooUserError(f"time-series CSV '{path}' not found; pass an existing file with --data.path")
        try:
            frame = pd.read_csv(path)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
            raise ZooUserError(f"cannot read '{path}' as CSV ({str(err).splitlines()[0]}); pass a comma-separated file")
    cols = [str(c) for c in frame.columns]
    frame.columns = cols
    if time_column == "auto":
        first = frame[cols[0]]
        time_column = cols[0] if not pd.api.types.is_numeric_dtype(first) else None
    elif time_column in ("none", ""):
        time_column = None
    wanted = [*([time_column] if time_column else []), *(target or []), *covariates]
    missing = [c for c in wanted if c not in cols]
    if missing:
        raise ZooUserError(f"column(s) {', '.join(missing)} not in the CSV; columns found: {', '.join(cols)}")
    times = None
    if time_column:
        try:
            times = pd.DatetimeIndex(pd.to_datetime(frame[time_column], errors="raise"))
        except (ValueError, TypeError) as err:
            raise ZooUserError(f"time column '{time_column}' does not parse as dates ({str(err).splitlines()[0]}); "
                               f"fix it or pass --data.time_column none")
        if times.hasnans or not times.is_monotonic_increasing or times.has_duplicates:
            raise ZooUserError(f"time column '{time_column}' must be strictly increasing without gaps in the cells; "
                               f"sort the file and drop duplicate timestamps")
    if not target:
        target = [c for c in cols if c != time_column and c not in covariates]
        if not target:
            raise ZooUserError(f"no column to forecast besides the time column; columns found: {', '.join(cols)}")
    values = _numeric(frame, target, fill_missing)
    return times, values, _numeric(frame, covariates, fill_missing), list(target)


def log_positive(raw: np.ndarray) -> np.ndarray:
    """``np.log`` of a series that must be strictly positive (``--data.log true``)."""
    if (raw <= 0).any():
        raise ZooUserError("--data.log true needs strictly positive targets; drop it or shift the series")
    return np.log(raw)


@dataclass
class SeriesTransform:
    """Invertible per-column pipeline ``raw -> log -> seasonal difference -> (x - mean) / std``.

    :meth:`fit` sees only the training rows; :meth:`inverse` needs the raw values just before each
    forecast origin (at least ``season_length`` of them when differencing).
    """

    log: bool = False
    difference: bool = True
    season_length: int = 12
    scale: bool = True
    center: bool = True
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    std: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def lag(self) -> int:
        """Leading rows that have no transformed value (lost to differencing)."""
        return self.season_length if self.difference else 0

    @property
    def fitted(self) -> bool:
        return self.mean.size > 0

    def _pre(self, raw: np.ndarray) -> np.ndarray:
        if self.log:
            raw = log_positive(raw)
        if self.difference:
            out = np.full_like(raw, np.nan)
            out[self.lag:] = raw[self.lag:] - raw[: -self.lag]
            raw = out
        return raw

    def fit(self, raw_train: np.ndarray, names: Sequence[str] = ()) -> "SeriesTransform":
        pre = self._pre(np.asarray(raw_train, dtype=np.float64))[self.lag:]
        if len(pre) < 2:
            raise ZooUserError("too few training rows to fit the scaler; lower --data.test_size / val_size / lookback")
        self.mean = pre.mean(axis=0) if self.scale and self.center else np.zeros(pre.shape[1])
        self.std = pre.std(axis=0) if self.scale else np.ones(pre.shape[1])
        flat = np.flatnonzero(self.std < 1e-12 * np.maximum(1.0, np.abs(self.mean)))
        if flat.size:
            name = names[flat[0]] if len(names) > flat[0] else f"#{flat[0]}"
            what = "after seasonal differencing " if self.difference else ""
            raise ZooUserError(f"target '{name}' is constant {what}on the training part (scaling by zero); "
                               f"forecast a varying series" + (" or pass --data.difference false" if what else ""))
        return self

    def forward(self, raw: np.ndarray) -> np.ndarray:
        """Transformed values [N, T]; the first ``lag`` rows are NaN."""
        if not self.fitted:
            raise RuntimeError("SeriesTransform.forward before fit")
        return (self._pre(np.asarray(raw, dtype=np.float64)) - self.mean) / self.std

    def inverse(self, z: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Original-scale forecasts [B, H, T] from transformed ones and raw ``history`` [B, K, T] before them."""
        mean = torch.as_tensor(self.mean, dtype=z.dtype, device=z.device)
        std = torch.as_tensor(self.std, dtype=z.dtype, device=z.device)
        w = z * std + mean
        if self.difference:
            hist = history.to(z.dtype)
            hist = torch.log(hist) if self.log else hist
            buf = list(hist[:, -self.lag:].unbind(1))
            for h in range(w.shape[1]):
                buf.append(w[:, h] + buf[len(buf) - self.lag])
            w = torch.stack(buf[self.lag:], dim=1)
        return torch.exp(w) if self.log else w

    def state_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.std = np.asarray(state["mean"], dtype=np.float64), np.asarray(state["std"], dtype=np.float64)


def window_origins(first: int, last: int, stride: int) -> np.ndarray:
    """Forecast origins in ``[first, last]`` every ``stride`` steps, anchored at ``last`` (the newest window)."""
    if last < first:
        return np.zeros(0, dtype=np.int64)
    return np.arange(last, first - 1, -stride, dtype=np.int64)[::-1].copy()


def future_times(times: pd.DatetimeIndex | None, n_rows: int, horizon: int) -> list:
    """Timestamps of the ``horizon`` steps after the series: its inferred frequency (``pandas.infer_freq``),
    or the median spacing when the index is irregular; row numbers when there is no time column."""
    if times is None:
        return list(range(n_rows, n_rows + horizon))
    freq = pd.infer_freq(times) if len(times) >= 3 else None
    if freq is not None:
        return list(pd.date_range(times[-1], periods=horizon + 1, freq=freq)[1:])
    step = pd.Series(times).diff().median()
    return [times[-1] + step * (k + 1) for k in range(horizon)]
