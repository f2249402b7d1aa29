"""Dense networks for tables: California housing (MLP and ResNet recipes, 5 seeds) beside scikit-learn's
HistGradientBoostingRegressor, and the offline defaults against trivial baselines.

California housing: ``<data-dir>/tabular/california_housing.csv`` (the raw file: 9 features with the
categorical ``ocean_proximity`` and 207 empty ``total_bedrooms``), target ``median_house_value`` in units
of $100,000, one seeded random 64/16/20 split (``data.seed`` of the recipe) as in Gorishniy et al. 2021
(test RMSE on scikit-learn's cleaned 8-feature variant: MLP 0.499, ResNet 0.486, FT-Transformer 0.459,
tuned XGBoost 0.431). Each network run is exactly ``python train.py -c recipes/<recipe>.yaml --data-dir
DIR --seed S`` (fit with early stopping on val/rmse, test the best checkpoint), in this process; the seed
changes the initialisation and batch order, never the split. HistGradientBoostingRegressor sees the same
rows: default settings, and 2,000 iterations early-stopped on the same validation rows.

Offline defaults: ``python train.py --model mlp --data.dataset NAME`` for the four bundled tables against
the training mean (regression RMSE) or the training majority class (accuracy) on the same test rows, with
scikit-learn's RidgeCV / LogisticRegression on the same transformed features for reference.

Example:
    python benchmarks/bench_tabular.py --threads 2                  # everything (about 10 minutes on 2 cores)
    python benchmarks/bench_tabular.py --parts mlp --seeds 5        # one part; results merge into --out
    python benchmarks/bench_tabular.py --parts resnet --seed-from 3 # seeds 3 and 4 only, merged with 0-2
    python benchmarks/bench_tabular.py --parts report               # print the table from --out
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _recipes import load_recipe, recipe_path  # noqa: E402

RECIPES = {"mlp": recipe_path("mlp_california_housing"),
           "resnet": recipe_path("mlp_resnet_california_housing")}
REFERENCE = {"mlp": 0.499, "resnet": 0.486}
GOAL = 0.480
BUNDLED = ("diabetes", "breast_cancer", "wine", "linnerud")


def load_avg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def train(cli_args: list[str], root: Path) -> dict:
    """One ``train.py`` run; its metrics.json."""
    from zoo.cli import main

    runs = Path(tempfile.mkdtemp(dir=root))
    code = main([*cli_args, "--runs-dir", str(runs), "--logger", "csv"])
    if code != 0:
        raise SystemExit(f"train.py {' '.join(cli_args)} exited with {code}")
    (path,) = runs.glob("*/*/metrics.json")
    return json.loads(path.read_text())


def recipe_datamodule(recipe: Path, data_dir: str):
    from zoo.datamodules.tabular import TabularDataModule

    dm = TabularDataModule(data_dir=data_dir, **load_recipe(recipe, model="mlp")["data"])
    dm.setup()
    return dm


def bench_net(name: str, args: argparse.Namespace, root: Path, results: dict, save) -> dict:
    """Seeds ``--seed-from`` .. ``--seeds - 1`` of a recipe; runs of other seeds already in ``results`` are kept."""
    runs = [r for r in results.get(name, {}).get("runs", []) if not args.seed_from <= r["seed"] < args.seeds]
    for seed in range(args.seed_from, args.seeds):
        m = train(["-c", str(RECIPES[name]), "--data-dir", args.data_dir, "--seed", str(seed),
                   "--threads", str(args.threads)], root)
        runs.append({"seed": seed, "rmse": m["test/rmse"], "mae": m["test/mae"], "r2": m["test/r2"],
                     "epochs": m["epochs"], "fit_s": m["fit_time_s"], "load": load_avg()})
        print(f"  {name} seed {seed}: test RMSE {m['test/rmse']:.4f}  epochs {m['epochs']}  fit {m['fit_time_s']:.1f}s"
              f"  load {runs[-1]['load']}", flush=True)
        results[name] = {"runs": sorted(runs, key=lambda r: r["seed"])}
        save()  # after every seed: a part cut short keeps what it measured
    return results[name]


def bench_hgb(args: argparse.Namespace) -> dict:
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingRegressor

    dm = recipe_datamodule(RECIPES["mlp"], args.data_dir)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = ((x.numpy(), y.numpy()) for x, y in
                                                 (dm.splits[s] for s in ("train", "val", "test")))
    mean, std = np.asarray(dm.target_mean), np.asarray(dm.target_std)
    y_tr, y_va, y_te = ((y * std + mean).ravel() for y in (y_tr, y_va, y_te))  # the original units
    cats = list(range(dm.num_numeric, x_tr.shape[1]))  # trees ignore the monotone quantile transform
    out = {}
    for label, kw, val in (("default", {}, False),
                           ("2000 iter, early stop on val",
                            {"max_iter": 2000, "early_stopping": True, "n_iter_no_change": 50}, True)):
        runs = []
        for seed in range(1 if val else args.seeds):  # with our validation rows the seed changes nothing
            start = time.perf_counter()
            model = HistGradientBoostingRegressor(categorical_features=cats, random_state=seed, **kw)
            model.fit(x_tr, y_tr, **({"X_val": x_va, "y_val": y_va} if val else {}))
            rmse = float(np.sqrt(np.mean((model.predict(x_te) - y_te) ** 2)))
            runs.append({"seed": seed, "rmse": rmse, "fit_s": time.perf_counter() - start, "iters": int(model.n_iter_)})
        out[label] = {"runs": runs}
        print(f"  HGB {label}: test RMSE {statistics.mean(r['rmse'] for r in runs):.4f}", flush=True)
    return out


def bench_defaults(args: argparse.Namespace, root: Path) -> dict:
    import torch
    from sklearn.linear_model import LogisticRegression, RidgeCV

    from zoo.datamodules.tabular import TabularDataModule

    out = {}
    for name in BUNDLED:
        m = train(["--model", "mlp", "--data.dataset", name, "--seed", "0", "--threads", str(args.threads)], root)
        dm = TabularDataModule(dataset=name)
        dm.setup()
        y_tr, y_te = dm.splits["train"][1], dm.splits["test"][1]
        x_tr, x_te = dm.splits["train"][0].numpy(), dm.splits["test"][0].numpy()
        if dm.task == "regression":  # the training mean, in original units; and a linear model for reference
            std, mean = torch.tensor(dm.target_std), torch.tensor(dm.target_mean)
            truth, guess = y_te * std + mean, (y_tr * std + mean).mean(0)
            linear = torch.from_numpy(RidgeCV().fit(x_tr, y_tr.numpy()).predict(x_te)).float() * std + mean
            row = {"metric": "rmse", "model": m["test/rmse"], "baseline": float((truth - guess).pow(2).mean().sqrt()),
                   "linear": float((truth - linear).pow(2).mean().sqrt()), "r2": m["test/r2"]}
        else:
            linear = LogisticRegression(max_iter=5000).fit(x_tr, y_tr.numpy()).score(x_te, y_te.numpy())
            row = {"metric": "acc", "model": m["test/acc"], "auroc": m["test/auroc"], "linear": float(linear),
                   "baseline": float((y_te == y_tr.mode().values).float().mean())}
        out[name] = {**row, "task": dm.task, "fit_s": m["fit_time_s"], "epochs": m["epochs"]}
        print(f"  {name} ({dm.task}): {row['metric']} {row['model']:.4f} vs trivial {row['baseline']:.4f}, "
              f"linear {row['linear']:.4f}", flush=True)
    return out


def _ms(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} +- {statistics.stdev(values) if len(values) > 1 else 0.0:.4f}"


def report(results: dict) -> None:
    print(f"\nCalifornia housing, test RMSE ($100k), seeded 64/16/20 split; threads {results.get('threads')}")
    print(f"{'model':48s} {'test RMSE':>18s} {'fit s':>7s} {'epochs':>7s} {'ratio to HGB':>13s} {'paper':>6s}")
    hgb = results.get("hgb", {}).get("default")
    hgb_rmse = statistics.mean(r["rmse"] for r in hgb["runs"]) if hgb else None
    for name in ("mlp", "resnet"):
        if name in results:
            runs = results[name]["runs"]
            rmse = [r["rmse"] for r in runs]
            ratio = f"{statistics.mean(rmse) / hgb_rmse:.3f}" if hgb_rmse else "-"
            print(f"{'zoo ' + name + ' (' + RECIPES[name].name + ')':48s} {_ms(rmse):>18s} "
                  f"{statistics.mean(r['fit_s'] for r in runs):7.1f} {statistics.mean(r['epochs'] for r in runs):7.1f} "
                  f"{ratio:>13s} {REFERENCE[name]:6.3f}")
    for label, res in results.get("hgb", {}).items():
        rmse = [r["rmse"] for r in res["runs"]]
        print(f"{'HGB ' + label:48s} {_ms(rmse):>18s} {statistics.mean(r['fit_s'] for r in res['runs']):7.1f} "
              f"{statistics.mean(r['iters'] for r in res['runs']):7.0f} "
              f"{statistics.mean(rmse) / hgb_rmse:13.3f} {'-':>6s}")
    nets = {n: statistics.mean(r["rmse"] for r in results[n]["runs"]) for n in ("mlp", "resnet") if n in results}
    if nets:
        best = min(nets, key=nets.get)
        print(f"better net: {best} {nets[best]:.4f} vs goal <= {GOAL}: {'met' if nets[best] <= GOAL else 'NOT met'}")
    if "defaults" in results:
        print("\nOffline defaults (python train.py --model mlp --data.dataset NAME, seed 0) vs trivial baselines")
        for name, row in results["defaults"].items():
            better = row["model"] < row["baseline"] if row["metric"] == "rmse" else row["model"] > row["baseline"]
            print(f"  {name:14s} {row['task']:11s} test {row['metric']} {row['model']:.4f}  "
                  f"trivial {row['baseline']:.4f}"
                  f"  (linear {row.get('linear', float('nan')):.4f})"
                  f"  ratio {row['model'] / row['baseline']:.3f}  {'beats it' if better else 'DOES NOT beat it'}"
                  f"  ({row['fit_s']:.1f}s, {row['epochs']} epochs)")
    print(f"load average at the end: {load_avg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed-from", type=int, default=0, help="first seed of the network parts (to split them)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parts", nargs="+", default=["hgb", "mlp", "resnet", "defaults"],
                        choices=["hgb", "mlp", "resnet", "defaults", "report"])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_tabular.json"))
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    results["threads"] = args.threads
    print(f"threads {args.threads}, seeds {args.seeds}, load average {load_avg()}", flush=True)
    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))

    with tempfile.TemporaryDirectory() as tmp:
        for part in args.parts:
            start = time.perf_counter()
            if part == "hgb":
                results["hgb"] = bench_hgb(args)
            elif part in RECIPES:
                results[part] = bench_net(part, args, Path(tmp), results, save)
            elif part == "defaults":
                results["defaults"] = bench_defaults(args, Path(tmp))
            else:
                continue
            results.setdefault("wall_s", {})[part] = round(time.perf_counter() - start, 1)
            print(f"[{part}: {results['wall_s'][part]:.0f}s, load {load_avg()}]", flush=True)
            save()
    report(results)


if __name__ == "__main__":
    main()
