"""Recommenders on MovieLens ml-100k, side by side with the libraries a learner would otherwise use.

Parts (``--parts``, comma-separated):
  explicit  the zoo's ``mf`` and ``autorec`` (``--models``) through ``train.py -c recipes/<model>_ml100k.yaml`` on
            each official fold ``u1..u5`` beside scikit-surprise's SVD and BaselineOnly on the same files (RMSE,
            MAE, seconds); the per-fold rows go to ``benchmarks/results/bench_recsys.json``.
  implicit  ``neumf`` through ``recipes/neumf_ml100k.yaml`` (leave-last-out per user, every rating a positive)
            beside a popularity ranking and ``implicit``'s ALS on the same split and the same sampled negatives.
  timing    seconds per training epoch of the same MF model and data: Lightning Trainer vs a plain PyTorch loop,
            alternating repetitions after an untimed warm-up.

Example:
    python benchmarks/bench_recsys.py --data-dir ../shared/data --threads 2 --parts explicit --folds 1,2
    python benchmarks/bench_recsys.py --data-dir ../shared/data --threads 2 --parts explicit --models autorec
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

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from _recipes import load_recipe, recipe_path  # noqa: E402
from _results import write_rows  # noqa: E402

from zoo.cli import main as zoo_main  # noqa: E402
from zoo.datamodules.interactions import MovieLensDataModule  # noqa: E402
from zoo.models.mf import MatrixFactorization  # noqa: E402
from zoo.models.neumf import ranking_metrics, update_ranking  # noqa: E402

ML = ("movielens", "ml-100k")


def run_zoo(recipe: str, data_dir: str, runs: Path, *extra: str) -> dict:
    """One ``train.py -c recipe`` run in this process; its metrics.json."""
    before = set(runs.rglob("metrics.json"))
    args = ["-c", str(recipe_path(recipe)), "--data-dir", data_dir, "--runs-dir", str(runs),
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", *extra]
    if zoo_main(args) != 0:
        raise SystemExit(f"train.py {' '.join(args)} failed")
    (path,) = set(runs.rglob("metrics.json")) - before
    return json.loads(path.read_text())


def explicit(data_dir: str, folds: list[int], models: list[str], runs: Path) -> None:
    """Each zoo model's recipe and Surprise's SVD and BaselineOnly on every fold: one row per fold and model in
    bench_recsys.json (a run of some models or folds keeps the others' rows)."""
    from surprise import SVD, BaselineOnly, Dataset, Reader, accuracy
    from surprise.model_selection import PredefinedKFold

    root = Path(data_dir).joinpath(*ML)
    reader = Reader(line_format="user item rating timestamp", sep="\t")
    rows = []
    for k in folds:
        fold = []
        for name in models:
            start = time.perf_counter()
            m = run_zoo(f"{name}_ml100k", data_dir, runs, f"--data.fold={k}")
            fold.append({"model": name, "rmse": m["test/rmse"], "mae": m["test/mae"],
                         "s": round(time.perf_counter() - start, 1), "epochs": m["epochs"],
                         "bias_rmse": m["test/bias_rmse"], "mean_rmse": m["test/global_mean_rmse"],
                         "unseen_items": m["test/unseen_items"]})
        data = Dataset.load_from_folds([(str(root / f"u{k}.base"), str(root / f"u{k}.test"))], reader)
        train, test = next(PredefinedKFold().split(data))
        for name, algo in (("svd", SVD(random_state=0)), ("baseline", BaselineOnly(verbose=False))):
            start = time.perf_counter()
            algo.fit(train)
            pred = algo.test(test)
            fold.append({"model": name, "rmse": accuracy.rmse(pred, verbose=False),
                         "mae": accuracy.mae(pred, verbose=False), "s": round(time.perf_counter() - start, 1)})
        rows += [{"part": "explicit", "fold": k, **r, "threads": torch.get_num_threads()} for r in fold]
        print(f"fold {k}: " + " | ".join(f"{r['model']} RMSE {r['rmse']:.4f} MAE {r['mae']:.4f} ({r['s']:.1f} s)"
                                         for r in fold)
              + f" | zoo bias baseline {fold[0]['bias_rmse']:.4f}, global mean {fold[0]['mean_rmse']:.4f} | "
              f"load {load()}", flush=True)
    names = [*models, "svd", "baseline"]
    mean = {name: {key: statistics.mean(r[key] for r in rows if r["model"] == name) for key in ("rmse", "mae")}
            for name in names}
    print(f"mean over folds {folds}: " + " | ".join(
        f"{name} RMSE {mean[name]['rmse']:.4f} MAE {mean[name]['mae']:.4f}, "
        f"{sum(r['s'] for r in rows if r['model'] == name):.0f} s" for name in names)
        + " | RMSE ratio to SVD: " + ", ".join(f"{name} {mean[name]['rmse'] / mean['svd']['rmse']:.3f}"
                                               for name in models)
        + " (published Surprise 5-fold: SVD 0.934, BaselineOnly 0.944)")
    out = write_rows(REPO / "benchmarks" / "results" / "bench_recsys.json", rows, ("part", "fold", "model"))
    print(f"rows: {out}")


def implicit_part(data_dir: str, runs: Path) -> None:
    cfg = load_recipe(recipe_path("neumf_ml100k"), "neumf")
    start = time.perf_counter()
    m = run_zoo("neumf_ml100k", data_dir, runs)
    k = cfg["model"].get("k", 10)
    names = [f"hit_rate@{k}", f"ndcg@{k}", f"precision@{k}", f"recall@{k}", f"full_ndcg@{k}"]
    table = {"neumf": [m[f"test/{n}"] for n in names], "popularity": [m[f"test/pop_{n}"] for n in names]}
    print(f"neumf: {time.perf_counter() - start:.1f} s, {m['epochs']} epochs; test users whose held-out item is unseen "
          f"in training (dropped): {m['test/unseen_items']:.0f}")
    dm = MovieLensDataModule(data_dir, **{k_: v for k_, v in cfg["data"].items() if k_ != "data_dir"},
                             seed=cfg.get("seed_everything", 42))
    dm.setup()
    try:
        table["implicit ALS"] = als(dm, k, names)
    except ImportError as exc:
        print(f"implicit's ALS not run: {exc}")
    print(f"{'':14s}" + "".join(f"{n:>16s}" for n in names) + "   (hit_rate / ndcg: held-out item among "
          f"{dm.eval_negatives} sampled negatives; the others: full ranking, training items excluded)")
    for who, values in table.items():
        print(f"{who:14s}" + "".join(f"{v:16.4f}" for v in values))


def als(dm: MovieLensDataModule, k: int, names: list[str]) -> list[float]:
    import numpy as np
    import scipy.sparse as sp
    from implicit.als import AlternatingLeastSquares

    users, items, _ = dm.train_interactions()
    matrix = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users.numpy(), items.numpy())),
                           shape=(dm.num_users, dm.num_items))
    start = time.perf_counter()
    model = AlternatingLeastSquares(factors=64, regularization=0.05, alpha=2.0, iterations=15, random_state=0)
    model.fit(matrix, show_progress=False)
    print(f"implicit ALS (64 factors, 15 iterations): {time.perf_counter() - start:.1f} s")
    user_f, item_f = (torch.as_tensor(np.asarray(f)) for f in (model.user_factors, model.item_factors))
    metrics = ranking_metrics(k)
    for u, cand, rel, seen in dm.test_dataloader():
        update_ranking(metrics, user_f[u] @ item_f.T, u, cand, rel, seen, k)
    values = metrics["sampled"].compute() | metrics["full"].compute()
    return [values[n].item() for n in names]


def timing(data_dir: str, reps: int, epochs: int) -> None:
    import lightning as L

    from zoo.models.base import build_optimizer

    cfg = load_recipe(recipe_path("mf_ml100k"), "mf")
    dm = MovieLensDataModule(data_dir, **{k: v for k, v in cfg["data"].items() if k != "data_dir"})
    dm.setup()

    def model() -> MatrixFactorization:
        torch.manual_seed(0)
        m = MatrixFactorization(num_users=dm.num_users, num_items=dm.num_items, **cfg["model"])
        m.fit_from(*dm.train_interactions())
        return m

    def zoo() -> float:
        trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                            num_sanity_val_steps=0)
        m = model()
        start = time.perf_counter()
        trainer.fit(m, train_dataloaders=dm.train_dataloader())
        return (time.perf_counter() - start) / epochs

    def plain() -> float:
        m = model()
        hp = m.hparams
        opt = build_optimizer(m.parameters(), hp.optimizer, hp.lr, hp.weight_decay)
        start = time.perf_counter()
        for _ in range(epochs):
            for users, items, ratings in dm.train_dataloader():
                loss = m.loss(users, items, ratings)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return (time.perf_counter() - start) / epochs

    zoo(), plain()  # warm-up
    pairs = [(zoo(), plain()) for _ in range(reps)]
    z, p = statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs)
    steps = len(dm.train_dataloader())
    print(f"timing ({steps} steps of batch {dm.batch_size} per epoch, {epochs} epochs x {reps} alternating reps): "
          f"zoo {z * 1000:.1f} ms/epoch vs plain loop {p * 1000:.1f} ms/epoch = {z / p:.3f}x (median pair "
          f"{statistics.median(a / b for a, b in pairs):.3f}x, pairs {min(a / b for a, b in pairs):.3f}-"
          f"{max(a / b for a, b in pairs):.3f}x) | load {load()}")


def load() -> str:
    """The 1 / 5 / 15-minute load averages (timings on this shared machine depend on them)."""
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "?"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--parts", default="explicit,implicit,timing")
    p.add_argument("--folds", default="1,2,3,4,5")
    p.add_argument("--models", default="mf,autorec", help="zoo models of the explicit part (comma-separated)")
    p.add_argument("--timing-reps", type=int, default=5)
    p.add_argument("--timing-epochs", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}), load {load()}")
    parts = args.parts.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        if "explicit" in parts:
            explicit(args.data_dir, [int(f) for f in args.folds.split(",")], args.models.split(","), runs)
        if "implicit" in parts:
            implicit_part(args.data_dir, runs)
        if "timing" in parts:
            timing(args.data_dir, args.timing_reps, args.timing_epochs)


if __name__ == "__main__":
    main()
