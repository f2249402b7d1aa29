"""Semi-supervised learning on real data through ``train.py``: MNIST with 10 labels per class (100 labels) by the
best method (``recipes/ssl_mnist_100_labels.yaml``, FixMatch) beside the same backbone trained on the same 100
labels alone, over several seeds; Fashion-MNIST with 100 labels per class by all three methods and supervised-only.

Each seed picks both the labelled subset (``--data.seed``) and the initialisation (``--seed``). An SSL run trains
the recipe's epochs (14 on MNIST: ~3,400 steps, sized to ~35 minutes on one core so the cosine schedule completes;
``--epochs`` overrides) with Lightning's ``max_time`` at ``--budget-min`` minutes as the hard stop; each run's
training seconds are printed. The supervised-only reference (``--model.method supervised``:
same CNN, weak augmentation, EMA evaluation) trains ``--sup-steps`` steps on the labels. Its test accuracy is
written into the SSL run's ``metrics.json`` as ``reference/supervised_test_acc``. Anchors at 100 MNIST labels:
VAT 98.64 %, Ladder networks 98.94 %. Parts (run separately to keep each command short):

- ``mnist``: FixMatch and supervised-only on MNIST, one pair per seed (``--budget-min`` + ~2 min each);
- ``fashion``: fixmatch, pseudo_label, mean_teacher and supervised on Fashion-MNIST, first seed only.

    python benchmarks/bench_ssl.py --data-dir ../shared/data --threads 1 --parts mnist --seeds 42 1 2
    python benchmarks/bench_ssl.py --data-dir ../shared/data --threads 1 --parts fashion --epochs 6 --budget-min 20
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from zoo.cli import main as zoo_main

from _recipes import recipe_path
from _results import write_rows

REPO = Path(__file__).resolve().parents[1]
RECIPE = recipe_path("ssl_mnist_100_labels")
METHODS = ("fixmatch", "pseudo_label", "mean_teacher")


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" tid")[0].strip()


def run(data: str, method: str, seed: int, per_class: int, args: argparse.Namespace) -> dict:
    """One ``train.py`` run of the recipe with ``method``; its metrics.json (path under ``_path``)."""
    budget = f"00:{args.budget_min // 60:02d}:{args.budget_min % 60:02d}:00"  # DD:HH:MM:SS
    cli = ["-c", str(args.recipe), "--data", data, "--data-dir", args.data_dir, "--threads", str(args.threads),
           "--seed", str(seed), "--data.seed", str(seed), "--data.labelled_per_class", str(per_class),
           "--model.method", method, "--trainer.enable_progress_bar", "false",
           "--trainer.enable_model_summary", "false", "--runs-dir", str(args.runs_dir)]
    if method == "supervised":  # an epoch is one pass over the labels: steps, not the unlabelled pass, count
        epochs = max(1, args.sup_steps * args.batch_size // (per_class * 10))
        cli += ["--trainer.max_epochs", str(epochs), "--trainer.check_val_every_n_epoch", str(epochs)]
    else:
        cli += ["--trainer.max_time", budget]
    if args.epochs is not None and method != "supervised":
        cli += ["--trainer.max_epochs", str(args.epochs)]
    if args.smoke:  # the plumbing only: a few batches per stage
        cli += [f"--trainer.limit_{stage}_batches=3" for stage in ("train", "val", "test")]
    start = time.time()
    assert zoo_main(cli) == 0, f"train.py failed: {' '.join(cli)}"
    folder = max((p.parent for p in args.runs_dir.glob("semi_supervised/*/metrics.json")
                  if p.stat().st_mtime >= start - 1), key=lambda p: p.stat().st_mtime)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["_path"] = str(folder / "metrics.json")
    mask, pseudo = (metrics.get(f"train/{k}", float("nan")) for k in ("mask_rate", "pseudo_acc"))
    print(f"{data:13} {method:12} seed {seed:3}  test acc {100 * metrics['test/acc']:6.2f} %  mask rate "
          f"{mask:.3f}  pseudo acc {pseudo:.3f}"
          f"  {metrics['epochs']} epochs / {metrics['global_step']} steps  {metrics['train_time_s']:.0f} s training"
          f"  (loadavg {loadavg()})", flush=True)
    return metrics


def annotate(ssl: dict, reference: dict) -> None:
    """Write the supervised-only reference into the SSL run's metrics.json."""
    path = Path(ssl["_path"])
    stored = json.loads(path.read_text())
    stored["reference/supervised_test_acc"] = reference["test/acc"]
    stored["reference/supervised_run"] = str(Path(reference["_path"]).parent)
    path.write_text(json.dumps(stored, indent=2) + "\n")


def summary(rows: list[tuple[str, str, int, dict]]) -> None:
    print("\ndata          method        seeds  test acc % (mean +- std)  per seed")
    groups: dict[tuple[str, str], list[float]] = {}
    for data, method, _, m in rows:
        groups.setdefault((data, method), []).append(100 * m["test/acc"])
    for (data, method), accs in groups.items():
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"{data:13} {method:13} {len(accs):5}  {statistics.mean(accs):6.2f} +- {std:4.2f}"
              f"              {' '.join(f'{a:.2f}' for a in accs)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--parts", nargs="+", default=["mnist", "fashion"], choices=["mnist", "fashion"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 1, 2])
    parser.add_argument("--budget-min", type=int, default=38, help="training minutes per SSL run (max_time)")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's max_epochs for SSL runs")
    parser.add_argument("--sup-steps", type=int, default=3000, help="steps of the supervised-only reference")
    parser.add_argument("--batch-size", type=int, default=32, help="the recipe's labelled batch size")
    parser.add_argument("--fashion-per-class", type=int, default=100)
    parser.add_argument("--runs-dir", type=Path, default=REPO / "runs" / "bench_ssl")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="3 batches per stage: checks the plumbing, no figures")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, SSL budget {args.budget_min} min per run, seeds {args.seeds}, loadavg {loadavg()}")
    rows: list[tuple[str, str, int, dict]] = []
    if "mnist" in args.parts:
        for seed in args.seeds:
            ref = run("mnist", "supervised", seed, 10, args)
            ssl = run("mnist", "fixmatch", seed, 10, args)
            annotate(ssl, ref)
            rows += [("mnist", "supervised", seed, ref), ("mnist", "fixmatch", seed, ssl)]
    if "fashion" in args.parts:
        seed, per_class = args.seeds[0], args.fashion_per_class
        ref = run("fashion_mnist", "supervised", seed, per_class, args)
        rows.append(("fashion_mnist", "supervised", seed, ref))
        for method in METHODS:
            ssl = run("fashion_mnist", method, seed, per_class, args)
            annotate(ssl, ref)
            rows.append(("fashion_mnist", method, seed, ssl))
    summary(rows)
    # a smoke run's figures mean nothing: they stay beside its runs, out of benchmarks/results
    out = args.runs_dir / "bench_ssl_smoke.json" if args.smoke else REPO / "benchmarks" / "results" / "bench_ssl.json"
    new = [{"data": d, "method": m, "seed": s, "test_acc": r["test/acc"], "epochs": r["epochs"],
            "steps": r["global_step"], "train_time_s": r["train_time_s"], "run": r["_path"]} for d, m, s, r in rows]
    write_rows(out, new, ("data", "method", "seed"))
    print(f"results: {out} (rows of other data/method/seed kept)")


if __name__ == "__main__":
    main()
