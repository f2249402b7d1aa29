"""ViT from scratch on Fashion-MNIST and MNIST under a fixed CPU training budget, beside the zoo's CNN at the
same budget (both through ``train.py``, Lightning's ``max_time`` as the hard stop).

The ViT runs ``recipes/vit_fashion_mnist.yaml`` (its epoch count is sized to the budget on 2 cores; ``--data
mnist`` swaps the data set); the CNN runs its defaults with ``--cnn-epochs`` epochs. Prints test and
validation accuracy, epochs reached and training seconds of each, with ``/proc/loadavg``; the ViT's
attention-map artifact is copied to ``benchmarks/results/vit_<data>_attention.png``. Each (model, data) pair
is one run, so one command can do one pair (``--datasets fashion_mnist --models vit``) and stay short.

    python benchmarks/bench_vit.py --data-dir ../shared/data --threads 2 --budget-min 90 --datasets fashion_mnist
    python benchmarks/bench_vit.py --data-dir ../shared/data --threads 1 --budget-min 22 --epochs 10 --datasets mnist \
        --pooling cls
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch
import yaml

from zoo.cli import main as zoo_main

from _recipes import recipe_path
from _results import write_rows

REPO = Path(__file__).resolve().parents[1]
RECIPE = recipe_path("vit_fashion_mnist")
TARGETS = {"fashion_mnist": 92.0, "mnist": 99.0}


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" tid")[0].strip()


def run(model: str, data: str, args: argparse.Namespace) -> dict[str, float | str]:
    budget = f"00:{args.budget_min // 60:02d}:{args.budget_min % 60:02d}:00"  # DD:HH:MM:SS
    common = ["--data", data, "--data-dir", args.data_dir, "--threads", str(args.threads), "--seed", str(args.seed),
              "--trainer.max_time", budget, "--trainer.enable_progress_bar", "false",
              "--trainer.enable_model_summary", "false"]
    vit = ["-c", str(args.recipe), *(["--max-epochs", str(args.epochs)] if args.epochs else []),
           *(["--model.pooling", args.pooling] if args.pooling else [])]
    specific = vit if model == "vit" else ["--model", "cnn", "--max-epochs", str(args.cnn_epochs)]
    with tempfile.TemporaryDirectory() as runs:
        assert zoo_main([*specific, *common, "--runs-dir", runs]) == 0, f"train.py failed for {model} on {data}"
        folder = next(Path(runs).glob(f"{model}/*/metrics.json")).parent
        metrics = json.loads((folder / "metrics.json").read_text())
        maps = sorted((folder / "artifacts").glob("attention_maps_step*.png"))
        if maps:
            shutil.copy(maps[-1], REPO / "benchmarks" / "results" / f"vit_{data}_attention.png")
        ran = yaml.safe_load((folder / "config.yaml").read_text())["model"]  # what the run trained, overrides included
    return {"acc": 100 * metrics["test/acc"], "val_acc": 100 * metrics["val/acc"], "epochs": metrics["epochs"],
            "train_s": metrics["train_time_s"], "steps": metrics["global_step"],
            **({"pooling": ran["pooling"]} if model == "vit" else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--datasets", nargs="+", default=["fashion_mnist", "mnist"], choices=sorted(TARGETS))
    parser.add_argument("--models", nargs="+", default=["vit", "cnn"], choices=["vit", "cnn"])
    parser.add_argument("--budget-min", type=int, default=90, help="training minutes per (model, data) run")
    parser.add_argument("--epochs", type=int, default=None, help="ViT epochs instead of the recipe's (size the budget)")
    parser.add_argument("--pooling", choices=["cls", "mean"], default=None, help="ViT pooling instead of the recipe's")
    parser.add_argument("--cnn-epochs", type=int, default=8, help="CNN epochs (sized to the budget; max_time caps it)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, budget {args.budget_min} min of training per run, loadavg {loadavg()}")
    rows = []
    for data in args.datasets:
        for model in args.models:
            r = run(model, data, args)
            rows.append((data, model, r))
            print(f"{data:14} {model:4} test acc {r['acc']:6.2f} % (target {TARGETS[data]} %), val {r['val_acc']:.2f} "
                  f"%, {r['epochs']} epochs / {r['steps']} steps, {r['train_s']:.0f} s training (loadavg {loadavg()})",
                  flush=True)
    print("\ndata           model  test acc  epochs  train s")
    for data, model, r in rows:
        print(f"{data:14} {model:5} {r['acc']:8.2f}  {r['epochs']:6}  {r['train_s']:7.0f}")
    out = write_rows(REPO / "benchmarks" / "results" / "bench_vit.json",
                     [{"data": d, "model": m, "threads": args.threads, "budget_min": args.budget_min,
                       "recipe": args.recipe.name, **r} for d, m, r in rows], ("data", "model"))
    print(f"results: {out} (rows of other data/model pairs kept)")


if __name__ == "__main__":
    main()
