"""``train.py tune`` on real data: does a 20-trial study beat the default configuration, what does median pruning
save, and what do two workers on one SQLite study give on this machine's 2 cores.

Task: the zoo CNN on a Fashion-MNIST subset (``--limit-train`` images, ``--epochs`` epochs per trial). Every
configuration runs through train.py, so the default and the best trial are scored on the same test split.

    python benchmarks/bench_tune.py --data-dir ../shared/data --trials 20 --parts default,median,none,jobs2
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

REPO = Path(__file__).resolve().parents[1]
SPACE = """model.lr: {type: float, low: 3.0e-4, high: 3.0e-2, log: true}
model.dropout: {type: float, low: 0.0, high: 0.4}
model.channels: {type: categorical, choices: [[16, 32], [32, 64], [32, 64, 128]]}
model.weight_decay: {type: float, low: 1.0e-6, high: 1.0e-2, log: true}
"""


def run(args: list[str], threads: int) -> float:
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit-train", type=int, default=6000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parts", default="default,median,none,jobs2")
    args = parser.parse_args()
    task = ["--model", "cnn", "--data", "fashion_mnist", "--data-dir", args.data_dir, "--max-epochs", str(args.epochs),
            "--data.limit_train", str(args.limit_train), "--no-early-stopping", "--seed", "0"]
    print(f"load {open('/proc/loadavg').read().split()[:3]}, threads {args.threads}, {args.trials} trials of "
          f"{args.epochs} epochs on {args.limit_train} Fashion-MNIST images")
    with tempfile.TemporaryDirectory() as tmp:
        space = Path(tmp) / "space.yaml"
        space.write_text(SPACE)
        results = {}
        if "default" in args.parts:
            seconds = run([*task, "--threads", str(args.threads), "--output-dir", f"{tmp}/default"], args.threads)
            m = json.loads(Path(f"{tmp}/default/metrics.json").read_text())
            results["default"] = (m.get("val/acc"), m.get("test/acc"), seconds)
        for part, extra, threads in (("median", ["--pruner", "median"], args.threads),
                                     ("none", ["--pruner", "none"], args.threads),
                                     ("jobs2", ["--pruner", "median", "--jobs", "2"], 1)):
            if part not in args.parts:
                continue
            folder = Path(tmp) / part
            seconds = run(["tune", *task, "--threads", str(threads), "--space", str(space), "--trials",
                           str(args.trials), "--output-dir", str(folder), *extra], threads)
            best = Path(folder / "best.yaml")
            rerun = json.loads(next(p for p in folder.glob("trial-*/metrics.json")
                                    if (p.parent / "config.yaml").read_text() == best.read_text()).read_text())
            with sqlite3.connect(folder / "study.db") as con:
                states = con.execute("select state, count(*) from trials group by state").fetchall()
            results[part] = (rerun.get("val/acc"), rerun.get("test/acc"), seconds,
                             ", ".join(f"{n} {s.lower()}" for s, n in states))
        for name, row in results.items():
            print(f"{name:8s} best val/acc {row[0]:.4f}  its test/acc {row[1]:.4f}  wall {row[2]:.0f} s"
                  + (f"  trials {row[3]}" if len(row) > 3 else ""))
        if "median" in results and "none" in results:
            print(f"median pruning / no pruning wall time: {results['median'][2] / results['none'][2]:.2f}")
        if "median" in results and "jobs2" in results:
            print(f"2 workers x 1 thread / 1 worker x {args.threads} threads wall time: "
                  f"{results['jobs2'][2] / results['median'][2]:.2f}")


if __name__ == "__main__":
    main()
