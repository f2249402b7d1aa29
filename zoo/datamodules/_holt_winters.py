"""Damped Holt-Winters exponential smoothing, the baseline the LSTM forecaster corrects (``--data.baseline``).

Additive damped trend; multiplicative season for a strictly positive training series, additive otherwise
(the ETS(A,Ad,M) / ETS(A,Ad,A) models of R's ``forecast::ets``; the same rule as the statsmodels reference
in ``benchmarks/bench_lstm.py``). The four smoothing weights of each column are fitted by least squares on
one-step-ahead errors over the training rows only. The filter then runs through the whole series, so the
forecast from origin ``o`` uses only the values before ``o`` once ``o`` is past the first two seasons (the
initial level and trend come from those, always training rows). (Choosing the season by the smaller training
error instead, as an AIC choice would, scored worse on the benchmark's dev year: see issue 4.)

Example:
    >>> t = np.arange(120.0)
    >>> y = (100 + t + 10 * np.sin(2 * np.pi * t / 12))[:, None]
    >>> hw = HoltWinters(season_length=12).fit(y[:96])
    >>> one_step, table = hw.forecast(y, horizon=12)  # table[o] forecasts y[o:o + 12] from y[:o]
    >>> bool(np.abs(table[108] - y[108:]).max() < 5)  # seasonal naive is 12 off: a year of trend
    True
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.optimize import minimize

from zoo.errors import ZooUserError

__all__ = ["HoltWinters"]

# (alpha, beta / alpha, gamma / (1 - alpha), phi): box bounds that keep beta <= alpha and gamma <= 1 - alpha
# as R's ets does; phi in [0.8, 0.98] like R's and statsmodels' damped-trend defaults.
_BOUNDS = [(1e-4, 0.9999), (1e-4, 1.0), (1e-4, 1.0), (0.8, 0.98)]
_STARTS = ([0.3, 0.1, 0.1, 0.95], [0.1, 0.1, 0.3, 0.9], [0.7, 0.3, 0.05, 0.95])


def _weights(p: Sequence[float]) -> tuple[float, float, float, float]:
    return p[0], p[1] * p[0], p[2] * (1 - p[0]), p[3]


def _filter(y: np.ndarray, m: int, weights: Sequence[float], multiplicative: bool):
    """Level, trend, season and one-step-ahead prediction per step (prediction NaN for the first season)."""
    alpha, beta, gamma, phi = weights
    n = len(y)
    level, trend, season, pred = np.empty(n), np.empty(n), np.empty(n), np.full(n, np.nan)
    level[m - 1] = y[:m].mean()
    trend[m - 1] = (y[m:2 * m].mean() - level[m - 1]) / m
    season[:m] = y[:m] / level[m - 1] if multiplicative else y[:m] - level[m - 1]
    for t in range(m, n):
        s, damped = season[t - m], level[t - 1] + phi * trend[t - 1]
        if multiplicative:
            pred[t] = damped * s
            level[t] = alpha * y[t] / s + (1 - alpha) * damped
            season[t] = gamma * y[t] / level[t] + (1 - gamma) * s
        else:
            pred[t] = damped + s
            level[t] = alpha * (y[t] - s) + (1 - alpha) * damped
            season[t] = gamma * (y[t] - level[t]) + (1 - gamma) * s
        trend[t] = beta * (level[t] - level[t - 1]) + (1 - beta) * phi * trend[t - 1]
    return level, trend, season, pred


@dataclass
class HoltWinters:
    """Per-column damped Holt-Winters: :meth:`fit` on training rows, then forecasts from every origin."""

    season_length: int = 12
    weights: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # alpha, beta, gamma, phi per column
    multiplicative: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def fitted(self) -> bool:
        return len(self.weights) > 0

    def fit(self, train: np.ndarray, names: Sequence[str] = ()) -> "HoltWinters":
        m = self.season_length
        if m < 2:
            raise ZooUserError("--data.baseline holt_winters needs --data.season_length >= 2; "
                               "pass --data.baseline none for a series without a season")
        if len(train) < 3 * m:
            raise ZooUserError(f"Holt-Winters needs >= {3 * m} training rows (three seasons), got {len(train)}; "
                               f"lower --data.test_size / val_size or pass --data.baseline none")
        train = np.asarray(train, dtype=np.float64)
        self.multiplicative = (train > 0).all(axis=0)
        weights = []
        for j, mult in enumerate(self.multiplicative):
            if train[:, j].std() == 0:
                name = names[j] if len(names) > j else f"#{j}"
                raise ZooUserError(f"target '{name}' is constant on the training part; forecast a varying series")
            weights.append(self._fit_weights(train[:, j], bool(mult)))
        self.weights = np.array(weights)
        return self

    def _fit_weights(self, y: np.ndarray, multiplicative: bool) -> tuple[float, float, float, float]:
        """Least-squares one-step-ahead fit from three starting points; the best of the three."""
        m = self.season_length

        def loss(p: np.ndarray) -> float:
            return float(np.mean((y[m:] - _filter(y, m, _weights(p), multiplicative)[3][m:]) ** 2) / y.var())

        best = min((minimize(loss, start, method="L-BFGS-B", bounds=_BOUNDS) for start in _STARTS),
                   key=lambda r: r.fun)
        return _weights(best.x)

    def forecast(self, y: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """One filter pass over ``y`` [N, T]: the one-step-ahead forecasts [N, T] and the table [N + 1, horizon, T]
        whose ``table[o]`` forecasts ``y[o:o + horizon]`` from ``y[:o]``; NaN in both for the first season."""
        if not self.fitted:
            raise RuntimeError("HoltWinters used before fit")
        y = np.asarray(y, dtype=np.float64)
        m, n = self.season_length, len(y)
        one_step, table = np.empty(y.shape), np.full((n + 1, horizon, y.shape[1]), np.nan)
        origins, steps = np.arange(m, n + 1)[:, None], np.arange(horizon)
        for j, (weights, mult) in enumerate(zip(self.weights, self.multiplicative)):
            level, trend, season, one_step[:, j] = _filter(y[:, j], m, weights, bool(mult))
            ahead = level[origins - 1] + np.cumsum(weights[3] ** (steps + 1)) * trend[origins - 1]
            s = season[origins - m + steps % m]
            table[m:, :, j] = ahead * s if mult else ahead + s
        return one_step, table

    def state_dict(self) -> dict:
        return {"weights": self.weights.tolist(), "multiplicative": self.multiplicative.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.weights = np.asarray(state["weights"], dtype=np.float64).reshape(-1, 4)
        self.multiplicative = np.asarray(state["multiplicative"], dtype=bool)
