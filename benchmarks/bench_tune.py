"""``train.py tune`` on real data: does a 20-trial study beat the default configuration, what does median pruning
save, and what do two workers on one SQLite study give on this machine's 2 cores.

Tasks (``--tasks``), each a recipe and a search space in ``recipes/spaces/`` of the same name: ``cnn``,
``recipes/cnn_fashion_mnist_4k.yaml`` (4,000 images, 8 epochs per trial; ``--limit-train``, ``--cnn-epochs``),
and ``mlp``, ``recipes/mlp_california_housing.yaml`` (``--mlp-epochs`` per trial). Every configuration runs
through train.py, so the default and the best trial are scored on the same test split (a study tests its best
trial only, once it ends; the row reads that test from the best trial's own metrics.json).
Results are merged into ``benchmarks/results/bench_tune.json`` (one row per task and part).

    python benchmarks/bench_tune.py --data-dir ../shared/data --trials 20 --tasks mlp --threads 1 \
        --parts default median hyperband none jobs2
    python benchmarks/bench_tune.py --data-dir ../shared/data --trials 20 --tasks cnn --parts median none
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _recipes import recipe_path
from _results import write_rows

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"cnn": recipe_path("cnn_fashion_mnist_4k"), "mlp": recipe_path("mlp_california_housing")}
SPACES = {task: recipe.parent / "spaces" / recipe.name for task, recipe in RECIPES.items()}
METRICS = {"cnn": ("val/acc", "max", "test/acc"), "mlp": ("val/rmse", "min", "test/rmse")}


def task_args(task: str, args: argparse.Namespace) -> list[str]:
    """The task's recipe, with the epochs (and, for the CNN, training images) of the flags that are given."""
    overrides = {"cnn": (("--max-epochs", args.cnn_epochs), ("--data.limit_train", args.limit_train)),
                 "mlp": (("--max-epochs", args.mlp_epochs),)}[task]
    return ["-c", str(RECIPES[task]), "--data-dir", args.data_dir, "--no-early-stopping",
            *[arg for flag, value in overrides if value is not None for arg in (flag, str(value))]]


def run(args: list[str], threads: int) -> float:
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def study_row(task: str, part: str, folder: Path, seconds: float) -> dict:
    """The best trial's validation and test metric (its own run's metrics.json), wall time and trial states."""
    val, _, test = METRICS[task]
    best = (folder / "best.yaml").read_text()
    metrics = json.loads(next(p for p in folder.glob("trial-*/metrics.json")
                              if (p.parent / "config.yaml").read_text() == best).read_text())
    with sqlite3.connect(folder / "study.db") as con:
        states = dict(con.execute("select lower(state), count(*) from trials group by state").fetchall())
    epochs = sum(json.loads(p.read_text())["epochs"] for p in folder.glob("trial-*/metrics.json"))
    return {"task": task, "part": part, "val": metrics[val], "test": metrics.get(test), "wall_s": round(seconds, 1),
            "trials": states, "epochs_trained": epochs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--tasks", nargs="+", default=["cnn", "mlp"], choices=sorted(RECIPES))
    parser.add_argument("--cnn-epochs", type=int, help="epochs per CNN trial (default: the recipe's 8)")
    parser.add_argument("--mlp-epochs", type=int, default=20, help="epochs per MLP trial (the recipe early-stops)")
    parser.add_argument("--limit-train", type=int, help="CNN training images (default: the recipe's 4,000)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parts", nargs="+", default=["default", "median", "none"],
                        choices=["default", "median", "hyperband", "none", "jobs2"])
    args = parser.parse_args()
    print(f"load {open('/proc/loadavg').read().split()[:3]}, threads {args.threads}, {args.trials} trials; "
          f"cnn: {args.cnn_epochs or 'the recipe'} epochs on {args.limit_train or 'the recipe'} images; "
          f"mlp: {args.mlp_epochs} epochs")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            base, (metric, direction, test) = task_args(task, args), METRICS[task]
            space = SPACES[task]
            if "default" in args.parts:
                out = Path(tmp) / f"{task}_default"
                seconds = run([*base, "--threads", str(args.threads), "--output-dir", str(out)], args.threads)
                m = json.loads((out / "metrics.json").read_text())
                rows.append({"task": task, "part": "default", "val": m[metric], "test": m.get(test),
                             "wall_s": round(seconds, 1)})
            for part, extra, threads in (("median", ["--pruner", "median"], args.threads),
                                         ("hyperband", ["--pruner", "hyperband"], args.threads),
                                         ("none", ["--pruner", "none"], args.threads),
                                         ("jobs2", ["--pruner", "median", "--jobs", "2"], 1)):
                if part in args.parts:
                    folder = Path(tmp) / f"{task}_{part}"
                    seconds = run(["tune", *base, "--threads", str(threads), "--space", str(space), "--trials",
                                   str(args.trials), "--metric", metric, "--direction", direction, "--output-dir",
                                   str(folder), *extra], threads)
                    rows.append(study_row(task, part, folder, seconds))
            for row in (r for r in rows if r["task"] == task):
                print(f"{task} {row['part']:8s} best {metric} {row['val']:.4f}  its {test} {row['test']:.4f}  "
                      f"wall {row['wall_s']:.0f} s" + (f"  trials {row['trials']}, {row['epochs_trained']} epochs"
                                                       if "trials" in row else ""), flush=True)
            walls = {r["part"]: r["wall_s"] for r in rows if r["task"] == task}
            for pruner in ("median", "hyperband"):
                if pruner in walls and "none" in walls:
                    print(f"{task}: {pruner} pruning / no pruning wall time {walls[pruner] / walls['none']:.2f}")
            if "median" in walls and "jobs2" in walls:
                print(f"{task}: 2 workers x 1 thread / 1 worker x {args.threads} threads wall time "
                      f"{walls['jobs2'] / walls['median']:.2f}")
    out = write_rows(REPO / "benchmarks" / "results" / "bench_tune.json",
                     [{**r, "threads": args.threads, "trials_asked": args.trials} for r in rows], ("task", "part"))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
