"""The CPU thread policy of ``train.py`` on a quiet and on a busy machine.

One fixed workload (the zoo CNN on real MNIST, ``recipes/cnn_mnist.yaml`` for one epoch of
``--trainer.limit_train_batches N``) runs as a fresh ``train.py`` process under each policy: OpenMP's default
(idle threads spin), ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep at once), a short spin
(``GOMP_SPINCOUNT=10000``: libgomp spins briefly, then sleeps) and one thread (``--threads 1``).
"busy" starts ``--load`` processes of pure-Python busy loops beside it (the other jobs of a shared machine).
Prints seconds per policy and the ratio to the spinning default.

    python benchmarks/bench_threads.py --data-dir ../shared/data --batches 150 --load 2
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _recipes import recipe_path

REPO = Path(__file__).resolve().parents[1]
POLICIES = {"active (OpenMP default)": ({"OMP_WAIT_POLICY": "ACTIVE"}, []),
            "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, []),
            "short spin (GOMP_SPINCOUNT=10000)": ({"GOMP_SPINCOUNT": "10000"}, []),
            "one thread": ({"OMP_WAIT_POLICY": "PASSIVE"}, ["--threads", "1"])}


def _spin(stop: float) -> None:
    while time.time() < stop:
        pass


def timed_run(data_dir: str, batches: int, env: dict[str, str], extra: list[str]) -> float:
    env = {**{k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}, **env}
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, "train.py", "-c", str(recipe_path("cnn_mnist")), "--data-dir", data_dir,
                "--max-epochs", "1", "--trainer.limit_train_batches", str(batches), "--trainer.limit_val_batches", "20",
                "--trainer.limit_test_batches", "1", "--no-early-stopping", "--runs-dir", tmp, *extra]
        subprocess.run(args, cwd=REPO, env=env, check=True, capture_output=True)
        (metrics,) = Path(tmp).glob("cnn/*/metrics.json")
        return json.loads(metrics.read_text())["fit_time_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--load", type=int, default=2, help="busy-loop processes beside the run when busy")
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load before: {open('/proc/loadavg').read().split()[:3]}")
    for condition in ("quiet", "busy"):
        results = {}
        for name, (env, extra) in POLICIES.items():
            times = []
            for _ in range(args.reps):
                hogs = [mp.Process(target=_spin, args=(time.time() + 3600,)) for _ in range(args.load)] \
                    if condition == "busy" else []
                for hog in hogs:
                    hog.start()
                try:
                    times.append(timed_run(args.data_dir, args.batches, env, extra))
                finally:
                    for hog in hogs:
                        hog.terminate()
            results[name] = min(times)
        base = results["active (OpenMP default)"]
        for name, seconds in results.items():
            print(f"{condition:5s}  {name:28s} {seconds:7.1f} s  ({seconds / base:.2f}x the default)")


if __name__ == "__main__":
    main()
