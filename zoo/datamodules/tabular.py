"""Tables from CSV or Parquet (offline default: scikit-learn's bundled tables) for dense networks.

The task comes from the target(s): one numeric target is regression (an integer one with at most
20 values is a class label), one text/boolean/integer label is binary or multi-class, several
numeric targets are multi-target regression and several 0/1 targets multi-label. Rows are split
seeded (stratified for labels) into train / val / test; imputation (median plus an indicator
column, or a ``<missing>`` category), the standard or quantile scaling, the category vocabularies
and the target scaling are fitted on the training rows only (:class:`._tabular_prep.TablePrep`) and
saved in checkpoints, so ``train.py predict --input rows.csv`` transforms a new file the same way.
Each batch is ``(x, y)``: x [B, num_numeric + len(cardinalities)] floats (scaled numbers and
missing indicators, then category codes; code 0 = a category unseen in training).

Example:
    >>> dm = TabularDataModule(dataset="wine")
    >>> dm.task, dm.num_outputs, dm.num_numeric
    ('multiclass', 3, 13)

    python train.py --model mlp --data.path my.csv --data.target price    # any CSV, nothing else needed
    python train.py predict --ckpt-path runs/mlp/<run>/checkpoints/best.ckpt --input rows.csv
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np
import pandas as pd
import torch

from zoo.datamodules._tabular_prep import Scaling, TablePrep, infer_columns, infer_task
from zoo.datamodules.base import InMemoryDataModule
from zoo.errors import ZooUserError

__all__ = ["TabularDataModule", "load_bundled", "read_table"]

BUNDLED = ("diabetes", "breast_cancer", "wine", "linnerud")
TaskName = Literal["auto", "regression", "binary", "multiclass", "multilabel"]


def load_bundled(name: str) -> tuple[pd.DataFrame, list[str]]:
    """(table, target columns) of a scikit-learn bundled table; labels are class names, not codes."""
    from sklearn import datasets

    if name not in BUNDLED:
        raise ZooUserError(f"unknown dataset '{name}'; choose {', '.join(BUNDLED)} or pass --data.path FILE.csv")
    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    frame = bunch.frame.copy()
    if name in ("breast_cancer", "wine"):
        label = "diagnosis" if name == "breast_cancer" else "cultivar"
        frame[label] = np.asarray(bunch.target_names)[frame.pop("target").to_numpy()]
        return frame, [label]
    return frame, list(bunch.target_names) if name == "linnerud" else ["target"]


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame, or a one-line user error (missing, empty, unreadable)."""
    if not path.is_file():
        raise ZooUserError(f"table '{path}' does not exist; "
                           "pass --data.path FILE.csv (relative to --data-dir or absolute)")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep=None if path.suffix.lower() not in (".csv", ".gz") else ",", engine="python")
    except ImportError as exc:
        raise ZooUserError("reading Parquet needs pyarrow: pip install 'lightning-zoo[tabular]'") from exc
    except pd.errors.EmptyDataError as exc:
        raise ZooUserError(f"table '{path}' is empty; it needs a header row and data rows") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise ZooUserError(f"cannot read table '{path}': {str(exc).splitlines()[0][:160]}") from exc
    if frame.empty:
        raise ZooUserError(f"table '{path}' has a header but no data rows")
    return frame


class TabularDataModule(InMemoryDataModule):
    """A table (CSV / Parquet, or a scikit-learn bundled one) with preprocessing fitted on its training rows.

    Args:
        path: CSV or Parquet file (absolute, or relative to ``data_dir``); None: the bundled ``dataset``.
        dataset: bundled table used without ``path``: ``diabetes`` (regression), ``breast_cancer`` (binary),
            ``wine`` (multi-class) or ``linnerud`` (three regression targets).
        target: target column, or a list (multi-target regression / multi-label); needed with ``path``.
        categorical / numeric: feature columns of each kind; columns not listed are typed automatically
            (numbers numeric, text and booleans categorical).
        drop: columns to ignore (ids, leaky columns).
        task: ``auto`` (from the target, see the module docstring), ``regression``, ``binary``,
            ``multiclass`` or ``multilabel``.
        scaling: numeric features: ``quantile`` (to a normal distribution, as Gorishniy et al. 2021),
            ``standard`` (zero mean, unit variance) or ``none``; fitted on the training rows.
        missing_indicator: add a 0/1 column for each numeric column with empty training cells (they are
            filled with the training median either way; empty categorical cells are a ``<missing>`` category).
        on_unseen: a category never seen in training: ``unknown`` (code 0, a warning) or ``error``.
        target_divisor: regression targets are divided by this on reading (e.g. 100000: prices in $100k);
            metrics and predictions are in these units.
        scale_target: standardise regression targets for training (inverted before metrics and predictions).
        test_size / val_size: fractions of all rows for the test and validation splits (seeded, stratified
            for binary / multi-class labels).
        batch_size: rows per batch.
    """

    link_fields = ("task", "num_numeric", "cardinalities", "num_outputs", "target_mean", "target_std")

    def __init__(self, data_dir: str | None = None, path: str | None = None, dataset: str = "diabetes",
                 target: str | list[str] | None = None, categorical: list[str] | None = None,
                 numeric: list[str] | None = None, drop: list[str] | None = None, task: TaskName = "auto",
                 scaling: Scaling = "quantile", missing_indicator: bool = True,
                 on_unseen: Literal["unknown", "error"] = "unknown", target_divisor: float = 1.0,
                 scale_target: bool = True, test_size: float = 0.2, val_size: float = 0.16,
                 batch_size: int = 64, num_workers: int = 0, seed: int = 42) -> None:
        super().__init__(data_dir, batch_size, num_workers, seed)
        if not (0 < test_size < 1 and 0 < val_size < 1 and test_size + val_size < 1):
            raise ZooUserError(f"test_size ({test_size}) and val_size ({val_size}) "
                               "must be in (0, 1) with a sum below 1")
        if target_divisor <= 0:
            raise ZooUserError(f"target_divisor must be positive, got {target_divisor}")
        if task not in ("auto", "regression", "binary", "multiclass", "multilabel"):
            raise ZooUserError(f"task must be auto, regression, binary, multiclass or multilabel, got '{task}'")
        if on_unseen not in ("unknown", "error"):
            raise ZooUserError(f"on_unseen must be unknown or error, got '{on_unseen}'")
        self.path, self.dataset, self.task_arg = path, dataset, task
        self.target = [target] if isinstance(target, str) else (list(target) if target else None)
        self.categorical, self.numeric, self.drop = categorical, numeric, list(drop or [])
        self.test_size, self.val_size = test_size, val_size
        self.prep = TablePrep(scaling, missing_indicator, on_unseen, target_divisor, scale_target, seed)
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.split_rows: dict[str, np.ndarray] = {}  # row numbers of each split in the table (after empty targets)
        self.predict_frame: pd.DataFrame | None = None

    # ---- shapes and names linked into the model (fitting the preprocessing on first use) ------------
    def _fitted(self) -> TablePrep:
        if not self.prep.fitted:
            self.setup()
        return self.prep

    @property
    def task(self) -> str:
        return self._fitted().task

    @property
    def num_numeric(self) -> int:
        prep = self._fitted()
        return len(prep.numeric) + len(prep.indicators)

    @property
    def cardinalities(self) -> list[int]:
        return self._fitted().cardinalities

    @property
    def num_outputs(self) -> int:
        return self._fitted().num_outputs

    @property
    def target_mean(self) -> list[float]:
        return list(self._fitted().state.get("y_mean", []))

    @property
    def target_std(self) -> list[float]:
        return list(self._fitted().state.get("y_std", []))

    @property
    def class_names(self) -> list[str]:
        """Class names (binary: the second is the positive class), or the labels of a multi-label table."""
        prep = self._fitted()
        return list(prep.classes) if prep.task in ("binary", "multiclass") else list(prep.targets)

    @property
    def target_names(self) -> list[str]:
        return list(self._fitted().targets)

    @property
    def input_names(self) -> list[str]:
        """One name per model input column (numeric, ``<col>_missing`` indicators, categorical)."""
        return self._fitted().input_names

    # ---- reading and splitting ----------------------------------------------------------------------
    def load_frame(self) -> tuple[pd.DataFrame, list[str]]:
        """(table, target columns) of the configured file or bundled table."""
        if self.path is None:
            frame, targets = load_bundled(self.dataset)
            return frame, self.target or targets
        p = Path(self.path).expanduser()
        if not p.is_absolute() and not p.is_file() and self.data_dir is not None:
            p = self.data_dir / p
        frame = read_table(p)
        if not self.target:
            raise ZooUserError(f"pass --data.target COL (the column to predict); '{p.name}' has columns "
                               f"{', '.join(map(str, frame.columns))}")
        return frame, self.target

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        frame, targets = self.load_frame()
        missing = [t for t in targets if t not in frame.columns]
        if missing:
            raise ZooUserError(f"target column '{missing[0]}' is not in the table; its columns are "
                               f"{', '.join(map(str, frame.columns))}")
        frame = frame.dropna(subset=targets).reset_index(drop=True)  # rows without a target cannot be learned from
        numeric, categorical = infer_columns(frame, targets, self.numeric, self.categorical, self.drop)
        task = infer_task(frame, targets) if self.task_arg == "auto" else self.task_arg
        classes = self._classes(frame, targets, task)
        train, val, test = self._split(frame, classes and frame[targets[0]].astype(str))
        self.prep.fit(frame.iloc[train], numeric, categorical, targets, task, classes)
        self.split_rows = {"train": train, "val": val, "test": test}
        y_dtype = torch.long if task in ("binary", "multiclass") else torch.float32
        self.splits = {name: (torch.from_numpy(self.prep.features(frame.iloc[idx])),
                              torch.as_tensor(self.prep.target_values(frame.iloc[idx]), dtype=y_dtype))
                       for name, idx in self.split_rows.items()}

    @staticmethod
    def _classes(frame: pd.DataFrame, targets: list[str], task: str) -> list[str]:
        if task not in ("binary", "multiclass"):
            return []
        if len(targets) > 1:
            raise ZooUserError(f"task {task} takes one target column, got {len(targets)}; "
                               "use multilabel for 0/1 targets")
        y = frame[targets[0]]
        values = sorted(pd.unique(y), key=lambda v: (0, float(v), "") if isinstance(v, (int, float, np.number))
                        else (1, 0.0, str(v)))
        classes = [str(v) for v in values]
        if len(classes) < 2:
            raise ZooUserError(f"target '{targets[0]}' has a single class {classes[0]!r}; "
                               "a classifier needs at least two")
        if task == "binary" and len(classes) != 2:
            raise ZooUserError(f"task binary needs 2 classes, target '{targets[0]}' has {len(classes)}; "
                               "use --data.task multiclass")
        return classes

    def _split(self, frame: pd.DataFrame, labels: pd.Series | list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Seeded (train, val, test) row indices; stratified by ``labels`` for binary / multi-class tables."""
        from sklearn.model_selection import train_test_split

        idx = np.arange(len(frame))
        strat = np.asarray(labels) if len(labels) else None
        try:
            rest, test = train_test_split(idx, test_size=self.test_size, random_state=self.seed, stratify=strat)
            train, val = train_test_split(rest, test_size=self.val_size / (1 - self.test_size), random_state=self.seed,
                                          stratify=None if strat is None else strat[rest])
        except ValueError as exc:
            raise ZooUserError(f"cannot split {len(frame)} rows into train/val/test ({str(exc).splitlines()[0]}); "
                               "use more rows, fewer rare classes or other --data.test_size/val_size") from exc
        return np.sort(train), np.sort(val), np.sort(test)

    # ---- predict: a new file through the fitted preprocessing ---------------------------------------
    def predict_input(self, path: str) -> Iterable[Any]:
        """Batches of the rows of a CSV/Parquet file, transformed with the checkpoint's fitted preprocessing.

        Every training feature column must be present (extra columns, the target included, are ignored);
        the rows are kept in ``self.predict_frame`` for ``predictions.csv``.
        """
        frame = read_table(Path(path).expanduser())
        x = torch.from_numpy(self._fitted().features(frame, where=f"'{Path(path).name}'"))
        self.predict_frame = frame
        return self.make_loader((x,), train=False)

    def predict_dataloader(self) -> Any:
        return self._loader("test", False)

    # ---- checkpointed state: everything fitted, as plain lists and floats ---------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"prep": self.prep.state_dict()} if self.prep.fitted else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.prep.load_state_dict(state["prep"])
