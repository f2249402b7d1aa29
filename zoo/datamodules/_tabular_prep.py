"""Column typing and the preprocessing of a table fitted on its training rows (private helper of
:mod:`zoo.datamodules.tabular`).

``TablePrep`` holds everything fitted (medians, scaler or quantile parameters, category
vocabularies, target classes or mean/std) as plain lists and floats, so a checkpoint stores it as
data (``state_dict``) and a new CSV is transformed exactly like the training rows.

Example:
    >>> frame = pd.DataFrame({"a": [1.0, None, 3.0, 4.0], "c": ["x", "y", "x", None], "t": [0.5, 1.0, 1.5, 2.0]})
    >>> prep = TablePrep(scaling="standard")
    >>> prep.fit(frame, ["a"], ["c"], ["t"], "regression")
    >>> prep.input_names, prep.cardinalities
    (['a', 'a_missing', 'c'], [4])
"""
from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
import pandas as pd

from zoo.errors import ZooUserError

Task = Literal["regression", "binary", "multiclass", "multilabel"]
Scaling = Literal["quantile", "standard", "none"]
MISSING = "<missing>"  # the category of an empty cell; index 0 of every vocabulary is "unknown"
MAX_CLASSES = 20  # an integer target with at most this many distinct values is a class label


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def numeric_values(series: pd.Series, where: str = "") -> np.ndarray:
    """A column as float64 (empty cells NaN), or a user error naming the first value that is not a number."""
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna() & series.notna()
    if bad.any():
        row = bad.to_numpy().nonzero()[0][0]
        raise ZooUserError(f"column '{series.name}'{where} is numeric but row {row} holds {series.iloc[row]!r}; "
                           f"fix the value, or pass --data.categorical {series.name}")
    return values.to_numpy(dtype=np.float64)


def infer_columns(frame: pd.DataFrame, targets: list[str], numeric: list[str] | None,
                  categorical: list[str] | None, drop: list[str]) -> tuple[list[str], list[str]]:
    """(numeric, categorical) feature columns: the given lists, the rest typed by dtype (numbers are numeric,
    text and booleans categorical; a text column of numbers with a stray string is an error)."""
    given = [*(numeric or []), *(categorical or []), *drop, *targets]
    unknown = [c for c in given if c not in frame.columns]
    if unknown:
        raise ZooUserError(f"column '{unknown[0]}' is not in the table; "
                           f"its columns are {', '.join(map(str, frame.columns))}")
    num, cat = list(numeric or []), list(categorical or [])
    for col in frame.columns:
        if col in given:
            continue
        series = frame[col]
        if series.isna().all():
            raise ZooUserError(f"column '{col}' is empty in every row; drop it with --data.drop {col}")
        if _is_numeric(series):
            num.append(col)
            continue
        parsed = pd.to_numeric(series, errors="coerce")
        if not pd.api.types.is_bool_dtype(series) and parsed.notna().sum() >= 0.9 * series.notna().sum():
            numeric_values(series)  # mostly numbers: name the stray value
        cat.append(col)
    for col in num:
        numeric_values(frame[col])
    if not num and not cat:
        raise ZooUserError("the table has no feature column besides the target; check --data.target / --data.drop")
    return num, cat


def infer_task(frame: pd.DataFrame, targets: list[str]) -> Task:
    """regression (one or several numeric targets), binary / multiclass (one label), multilabel (0/1 targets)."""
    if len(targets) > 1:
        binary = all(set(pd.unique(frame[t].dropna())) <= {0, 1, True, False} for t in targets)
        return "multilabel" if binary else "regression"
    y = frame[targets[0]].dropna()
    if _is_numeric(y) and (y.nunique() > MAX_CLASSES or not np.all(np.mod(y.to_numpy(dtype=float), 1) == 0)):
        return "regression"
    return "binary" if y.nunique() == 2 else "multiclass"


class TablePrep:
    """Imputation, scaling, category codes and target encoding, fitted on training rows only.

    Features become one float matrix: the scaled numeric columns, a 0/1 indicator for each numeric
    column with empty training cells (``missing_indicator``), then one integer code per categorical
    column (0 = unknown, i.e. a category never seen in training).
    """

    def __init__(self, scaling: Scaling = "quantile", missing_indicator: bool = True,
                 on_unseen: Literal["unknown", "error"] = "unknown", target_divisor: float = 1.0,
                 scale_target: bool = True, seed: int = 0) -> None:
        self.scaling, self.missing_indicator, self.on_unseen = scaling, missing_indicator, on_unseen
        self.target_divisor, self.scale_target, self.seed = target_divisor, scale_target, seed
        self.state: dict[str, Any] = {}

    @property
    def fitted(self) -> bool:
        return bool(self.state)

    def __getattr__(self, name: str) -> Any:  # numeric, categorical, targets, task, classes, ... from the state
        state = self.__dict__.get("state") or {}
        if name in state:
            return state[name]
        raise AttributeError(name)

    @property
    def input_names(self) -> list[str]:
        return [*self.numeric, *(f"{c}_missing" for c in self.indicators), *self.categorical]

    @property
    def cardinalities(self) -> list[int]:
        return [len(v) + 1 for v in self.vocab]

    @property
    def num_outputs(self) -> int:
        return 1 if self.task == "binary" else len(self.classes) if self.task == "multiclass" else len(self.targets)

    # ---- fit ----------------------------------------------------------------------------------------
    def fit(self, train: pd.DataFrame, numeric: list[str], categorical: list[str], targets: list[str],
            task: Task, classes: list[str] | None = None) -> None:
        """Fit on the training rows; ``classes`` (binary / multiclass) comes from the whole table's labels."""
        x = np.stack([numeric_values(train[c]) for c in numeric], axis=1) if numeric else np.zeros((len(train), 0))
        empty = [c for c, col in zip(numeric, x.T) if np.isnan(col).all()]
        if empty:
            raise ZooUserError(f"column '{empty[0]}' has no value in the training rows; "
                               f"drop it with --data.drop {empty[0]}")
        medians = np.nanmedian(x, axis=0) if numeric else np.zeros(0)
        indicators = [c for c, col in zip(numeric, x.T) if self.missing_indicator and np.isnan(col).any()]
        x = np.where(np.isnan(x), medians, x)
        state: dict[str, Any] = {"numeric": list(numeric), "categorical": list(categorical), "targets": list(targets),
                                 "task": task, "medians": medians.tolist(), "indicators": indicators,
                                 "classes": list(classes or []), "mean": [], "std": [], "scaling": self.scaling,
                                 "target_divisor": float(self.target_divisor)}
        if self.scaling not in ("quantile", "standard", "none"):
            raise ZooUserError(f"scaling must be quantile, standard or none, got '{self.scaling}'")
        if self.scaling == "standard":
            std = x.std(axis=0)
            state.update(mean=x.mean(axis=0).tolist(), std=np.where(std > 0, std, 1.0).tolist())
        elif self.scaling == "quantile":  # Gorishniy et al.: normal-output quantiles, n = rows / 30 in [10, 1000]
            from sklearn.preprocessing import QuantileTransformer

            n = min(max(min(len(x) // 30, 1000), 10), len(x))
            qt = QuantileTransformer(n_quantiles=n, output_distribution="normal", subsample=10**9,
                                     random_state=self.seed).fit(x)
            state.update(quantiles=qt.quantiles_.tolist(), references=qt.references_.tolist())
        state["vocab"] = [sorted(set(self._categories(train[c]))) for c in categorical]
        if task == "regression":
            y = self._regression_targets(train, targets)
            std = y.std(axis=0)
            state["y_mean"] = y.mean(axis=0).tolist() if self.scale_target else [0.0] * len(targets)
            state["y_std"] = np.where(std > 0, std, 1.0).tolist() if self.scale_target else [1.0] * len(targets)
        self.state = state

    # ---- transform ----------------------------------------------------------------------------------
    @staticmethod
    def _categories(series: pd.Series) -> list[str]:
        return [MISSING if pd.isna(v) else str(v) for v in series]

    def _scale(self, x: np.ndarray) -> np.ndarray:
        if self.state["scaling"] == "standard":
            return (x - np.asarray(self.mean)) / np.asarray(self.std)
        if self.state["scaling"] == "quantile" and x.shape[1]:
            from sklearn.preprocessing import QuantileTransformer

            # rebuilt from the stored quantiles: the checkpoint keeps lists, not a pickled estimator
            qt = QuantileTransformer(n_quantiles=len(self.references), output_distribution="normal")
            qt.quantiles_, qt.references_ = np.asarray(self.quantiles), np.asarray(self.references)
            qt.n_features_in_ = x.shape[1]
            return qt.transform(x)
        return x

    def features(self, frame: pd.DataFrame, where: str = "") -> np.ndarray:
        """The float32 feature matrix of ``frame`` (training, evaluation or a prediction file)."""
        missing = [c for c in [*self.numeric, *self.categorical] if c not in frame.columns]
        if missing:
            raise ZooUserError(f"{where or 'the table'} lacks the training column(s) {', '.join(map(str, missing))}; "
                               "pass a file with every feature column the model was trained on")
        x = (np.stack([numeric_values(frame[c], f" of {where}" if where else "") for c in self.numeric], axis=1)
             if self.numeric else np.zeros((len(frame), 0)))
        nan = np.isnan(x)
        scaled = self._scale(np.where(nan, np.asarray(self.medians), x))
        flags = nan[:, [self.numeric.index(c) for c in self.indicators]].astype(np.float64)
        codes = [self._codes(frame[c], vocab, where) for c, vocab in zip(self.categorical, self.vocab)]
        return np.concatenate([scaled, flags, *[c[:, None] for c in codes]], axis=1).astype(np.float32)

    def _codes(self, series: pd.Series, vocab: list[str], where: str) -> np.ndarray:
        index = {v: i + 1 for i, v in enumerate(vocab)}
        values = self._categories(series)
        codes = np.array([index.get(v, 0) for v in values], dtype=np.float64)
        unseen = sorted({v for v, c in zip(values, codes) if c == 0})
        if unseen and self.on_unseen == "error":
            raise ZooUserError(f"column '{series.name}' of {where or 'the table'} holds {unseen[0]!r}, a category not "
                               f"seen in training ({', '.join(vocab[:8])}...); fix it or pass --data.on_unseen unknown")
        if unseen:
            warnings.warn(f"column '{series.name}': {int((codes == 0).sum())} row(s) with categories unseen in "
                          f"training ({', '.join(unseen[:5])}) use the 'unknown' embedding", stacklevel=2)
        return codes

    def _regression_targets(self, frame: pd.DataFrame, targets: list[str]) -> np.ndarray:
        divisor = self.state.get("target_divisor", self.target_divisor)
        return np.stack([numeric_values(frame[t]) for t in targets], axis=1) / divisor

    def target_values(self, frame: pd.DataFrame) -> np.ndarray:
        """Encoded targets: standardised floats [N, T] (regression), class indices [N] or 0/1 floats [N, L]."""
        if self.task == "regression":
            return (self._regression_targets(frame, self.targets) - np.asarray(self.y_mean)) / np.asarray(self.y_std)
        if self.task == "multilabel":
            return np.stack([numeric_values(frame[t]) for t in self.targets], axis=1)
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[str(v)] for v in frame[self.targets[0]]], dtype=np.int64)

    def state_dict(self) -> dict[str, Any]:
        return dict(self.state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = dict(state)
