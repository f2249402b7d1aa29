"""CNN on real MNIST: the zoo (train.py, with checkpoints, early stopping and logging) vs the same
model, optimiser, schedule, batch size and data pipeline in a plain PyTorch loop.

Both read ``recipes/cnn_mnist.yaml`` (the README row: 3 epochs, ``shift`` preset, batch 128, seed 42): the zoo
run is ``train.py -c recipe``, the plain loop builds its CNNClassifier, MNISTDataModule, AdamW + one-cycle
schedule and epochs from the same values. ``--epochs``, ``--seed`` and ``--batch-size`` override the recipe's
for both runs.

Prints test accuracy and seconds per epoch (training + validation passes, after data loading) for
both and their ratio. Both first run once, untimed, on 256 images. This machine's speed drifts by
several per cent over minutes, so with ``--reps N`` the runs alternate (plain, zoo, zoo, plain, ...);
the ratio of the means is printed with each repetition's own ratio and their median.

With ``--tiny`` both train a CNN of negligible compute instead, so the difference per step is what
the zoo (Lightning's loop, metrics, logging, callbacks) adds to every step.

    python benchmarks/bench_cnn.py --data-dir ../shared/data --epochs 3 --reps 1
    python benchmarks/bench_cnn.py --data-dir ../shared/data --epochs 1 --threads 2 --seed 42 --reps 10
    python benchmarks/bench_cnn.py --data-dir ../shared/data --epochs 1 --reps 4 --tiny
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from zoo.cli import main as zoo_main
from zoo.datamodules.images import MNISTDataModule
from zoo.datamodules.base import TensorBatchLoader
from zoo.models.cnn import CNNClassifier

from _recipes import load_recipe, recipe_path

REPO = Path(__file__).resolve().parents[1]
RECIPE = recipe_path("cnn_mnist")
TINY_CNN = {"channels": (2,), "hidden": 8}


def plain_loop(cfg: dict[str, Any], data_dir: str, epochs: int, batch_size: int, seed: int,
               limit_train: int | None = None, tiny: bool = False) -> dict[str, float]:
    """Train/validate/test the recipe's CNN (or the ``--tiny`` one) without Lightning."""
    torch.manual_seed(seed)
    dm = MNISTDataModule(data_dir=data_dir, **{**cfg["data"], "batch_size": batch_size, "seed": seed,
                                               "limit_train": limit_train})
    dm.setup()
    model = CNNClassifier(num_classes=dm.num_classes, in_channels=dm.in_channels, image_size=dm.image_size,
                          **{**cfg["model"], **(TINY_CNN if tiny else {})})  # the hyper-parameters the zoo run uses
    hp = model.hparams
    if (hp.optimizer, hp.scheduler) != ("adamw", "onecycle"):
        raise SystemExit(f"the plain loop implements AdamW + one-cycle only, the recipe asks for "
                         f"{hp.optimizer} + {hp.scheduler}")
    opt = torch.optim.AdamW(model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    steps = epochs * len(dm.train_dataloader())
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp.lr, total_steps=steps)

    def evaluate(loader: TensorBatchLoader) -> float:
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in loader:
                correct += (model(x).argmax(1) == y).sum().item()
                total += len(y)
        return correct / total

    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        loader = TensorBatchLoader(dm.splits["train"], batch_size, shuffle=True, seed=seed, epoch_fn=lambda: epoch,
                                   transform=dm.batch_transform(True))
        for x, y in loader:
            loss = F.cross_entropy(model(x), y, label_smoothing=hp.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        evaluate(dm.val_dataloader())
    fit_time = time.perf_counter() - start
    return {"test_acc": evaluate(dm.test_dataloader()), "s_per_epoch": fit_time / epochs,
            "steps_per_epoch": len(dm.train_dataloader())}


def zoo_run(recipe: Path, data_dir: str, epochs: int, batch_size: int, seed: int,
            extra: list[str]) -> dict[str, float]:
    """``train.py -c recipe`` with the epochs, seed and batch size given (the recipe's unless overridden)."""
    with tempfile.TemporaryDirectory() as runs:
        code = zoo_main(["-c", str(recipe), "--data-dir", data_dir, "--max-epochs", str(epochs),
                         "--seed", str(seed), "--data.batch_size", str(batch_size), "--runs-dir", runs,
                         "--trainer.enable_progress_bar", "false", *extra])
        assert code == 0, f"train.py exited with {code}"
        metrics = json.loads(next(Path(runs).glob("cnn/*/metrics.json")).read_text())
    return {"test_acc": metrics["test/acc"], "s_per_epoch": metrics["train_time_s"] / metrics["epochs"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--recipe", type=Path, default=RECIPE, help="the configuration both runs train")
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's trainer.max_epochs")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's data.batch_size")
    parser.add_argument("--seed", type=int, default=None, help="default: the recipe's seed_everything")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--logger", default="csv", help="logger for the zoo run (csv, wandb, tensorboard)")
    parser.add_argument("--reps", type=int, default=1, help="repetitions, alternating which of the two runs first")
    parser.add_argument("--tiny", action="store_true", help="a CNN of negligible compute (one 2-channel conv): the "
                        "time difference is what the zoo adds per step")
    args = parser.parse_args()
    cfg = load_recipe(args.recipe)
    if cfg["zoo"]["model"] != "cnn" or cfg["zoo"].get("data") != "mnist":
        raise SystemExit(f"{args.recipe}: bench_cnn.py needs a cnn on mnist recipe")
    args.epochs = args.epochs if args.epochs is not None else cfg["trainer"].get("max_epochs", 3)
    args.batch_size = args.batch_size if args.batch_size is not None else cfg["data"].get("batch_size", 128)
    args.seed = args.seed if args.seed is not None else cfg["seed_everything"]
    torch.set_num_threads(args.threads)
    extra = ["--logger", args.logger]
    if args.tiny:
        extra += ["--model.channels", str(list(TINY_CNN["channels"])), "--model.hidden", str(TINY_CNN["hidden"])]
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "zoo": []}
    # untimed runs on 256 images first: one-off costs (oneDNN kernel JIT, lazy imports) fall on neither timed run
    plain_loop(cfg, args.data_dir, 1, args.batch_size, args.seed, limit_train=256, tiny=args.tiny)
    zoo_run(args.recipe, args.data_dir, 1, args.batch_size, args.seed, [*extra, "--data.limit_train", "256"])
    for rep in range(args.reps):
        for name in ("plain", "zoo") if rep % 2 == 0 else ("zoo", "plain"):
            common = (args.data_dir, args.epochs, args.batch_size, args.seed)
            runs[name].append(plain_loop(cfg, *common, tiny=args.tiny) if name == "plain"
                              else zoo_run(args.recipe, *common, extra))
    print(f"\n{args.recipe.name}: MNIST, {args.epochs} epochs, batch {args.batch_size}, {args.threads} threads, "
          f"seed {args.seed}")
    print(f"{'':8} {'test acc':>9} {'s/epoch':>8}")
    mean = {name: statistics.mean(r["s_per_epoch"] for r in rs) for name, rs in runs.items()}
    for name, rs in runs.items():
        for r in rs:
            print(f"{name:8} {100 * r['test_acc']:8.2f}% {r['s_per_epoch']:8.1f}")
    ratios = [z["s_per_epoch"] / q["s_per_epoch"] for z, q in zip(runs["zoo"], runs["plain"])]
    print(f"zoo / plain time per epoch (means over {args.reps} rep(s)): {mean['zoo'] / mean['plain']:.3f}x; "
          f"per rep: {', '.join(f'{r:.3f}' for r in ratios)} (median {statistics.median(ratios):.3f}x)")
    steps = runs["plain"][0]["steps_per_epoch"]
    print(f"zoo - plain per training step ({steps} steps per epoch, validation included): "
          f"{1e3 * (mean['zoo'] - mean['plain']) / steps:.2f} ms")


if __name__ == "__main__":
    main()
