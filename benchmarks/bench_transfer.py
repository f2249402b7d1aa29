"""Transfer-learner benchmark on real data (Fashion-MNIST, MNIST under ``--data-dir``).

Three parts (``--parts``):

* ``scratch``  — ResNet-18 from random init on Fashion-MNIST; test accuracy; saves the weights.
* ``transfer`` — fine-tune on a stratified ``--subset``-image MNIST training subset starting from those
  weights vs. from scratch with the same epochs, batch and LR; MNIST test accuracy. ``pretrained``
  uses the model's default recipe for loaded weights (backbone frozen for one epoch, then
  discriminative LRs); ``pretrained_full`` trains everything at the full LR from the start.
* ``timing``   — seconds per training epoch of the zoo (Lightning Trainer, metrics, logging) vs. a
  plain PyTorch loop (torchvision resnet18 with the same stem, loss, AdamW + OneCycleLR), same
  data loader and batch; after an untimed 2-step warm-up of each, alternated, median of
  ``--timing-reps`` and each repetition's own ratio.

``scratch`` reads ``recipes/resnet_fashion_mnist.yaml`` (``--recipe``) and ``transfer`` reads
``recipes/resnet_mnist_finetune.yaml`` (``--ft-recipe``), the README rows (``python train.py -c <recipe>`` trains
one of them): model, data and Trainer settings and the seed; ``timing`` uses the first recipe's model and
batch size on ``--timing-images`` images. ``--epochs``, ``--limit-train``, ``--augment``, ``--stem-stride``,
``--batch-size``, ``--lr``, ``--subset``, ``--ft-epochs`` and ``--seed`` override the recipes' values.

Example:
    python benchmarks/bench_transfer.py --data-dir ../shared/data --epochs 1 --limit-train 20000
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torchvision
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from zoo.datamodules.images import FashionMNISTDataModule, MNISTDataModule  # noqa: E402
from zoo.models.backbones import adapt_stem  # noqa: E402
from zoo.models.transfer import TransferClassifier  # noqa: E402

from _recipes import given, load_recipe, recipe_path, trainer_settings  # noqa: E402


def model_kw(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The recipe's model section with ``--stem-stride`` / ``--lr`` applied."""
    return {**cfg["model"], **given(stem_stride=args.stem_stride, lr=args.lr)}


def links(dm: L.LightningDataModule) -> dict[str, Any]:
    """The shapes the CLI links from the DataModule into the model."""
    return {f: getattr(dm, f) for f in dm.link_fields}


def trainer(out: Path, epochs: int, test_limit: int | None = None, callbacks: list | None = None,
            **recipe: Any) -> L.Trainer:
    """A quiet CPU Trainer without validation passes; ``recipe``: a recipe's other trainer settings
    (``_recipes.trainer_settings``)."""
    settings = {"limit_val_batches": 0, "num_sanity_val_steps": 0, **recipe, "max_epochs": epochs}
    return L.Trainer(**settings, accelerator="cpu", devices=1, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=out, limit_test_batches=test_limit, callbacks=callbacks or [])


def fit_and_test(model: TransferClassifier, dm: L.LightningDataModule, out: Path, epochs: int, test_batches: int | None,
                 cfg: dict[str, Any]) -> tuple[float, float]:
    """(test accuracy, fit seconds) with the recipe ``cfg``'s trainer settings and ``epochs``."""
    t0 = time.perf_counter()
    tr = trainer(out, epochs, test_batches, **trainer_settings(cfg, "limit_test_batches"))
    tr.fit(model, dm)
    fit_s = time.perf_counter() - t0
    return tr.test(model, dm, verbose=False)[0]["test/acc"], fit_s


def part_scratch(args: argparse.Namespace, out: Path) -> dict:
    cfg = args.cfgs["scratch"]
    L.seed_everything(cfg["seed_everything"] if args.seed is None else args.seed)
    dm = FashionMNISTDataModule(str(args.data_dir), **{**cfg["data"], **given(
        batch_size=args.batch_size, limit_train=args.limit_train, augment=args.augment)})
    model = TransferClassifier(**links(dm), **model_kw(cfg, args))
    epochs = args.epochs or cfg["trainer"]["max_epochs"]
    acc, fit_s = fit_and_test(model, dm, out / "scratch", epochs, args.test_batches, cfg)
    torch.save(model.state_dict(), out / "fmnist_resnet18.pt")
    n_train = len(dm.splits["train"][1])
    print(f"[scratch] ResNet-18 on Fashion-MNIST ({n_train} train images, {epochs} epoch(s), stem stride "
          f"{model.stem_stride}, augment {dm.augment}): test acc {acc:.4f}  fit {fit_s / 60:.1f} min", flush=True)
    return {"fmnist_test_acc": acc, "fmnist_train_images": n_train, "fmnist_fit_s": fit_s}


def part_transfer(args: argparse.Namespace, out: Path) -> dict:
    weights = out / "fmnist_resnet18.pt"
    if not weights.is_file():
        raise SystemExit(f"{weights} is missing: run the scratch part first (same --out)")
    cfg = args.cfgs["transfer"]
    default = dict(freeze_epochs=None, backbone_lr_ratio=None, layer_decay=None)  # the model's for loaded weights
    variants = {"pretrained": dict(weights=str(weights), **default), "pretrained_full": dict(weights=str(weights)),
                "scratch": dict(pretrained="false", weights=None)}  # the recipe's full-LR settings, random init
    subset = args.subset or cfg["data"].get("limit_train")
    epochs = args.ft_epochs or cfg["trainer"]["max_epochs"]
    result = {}
    for name in args.ft_variants.split(","):
        L.seed_everything(cfg["seed_everything"] if args.seed is None else args.seed)
        dm = MNISTDataModule(str(args.data_dir), **{**cfg["data"], "limit_train": subset})
        model = TransferClassifier(**links(dm), **{**model_kw(cfg, args), **variants[name]})
        acc, fit_s = fit_and_test(model, dm, out / f"mnist_{name}", epochs, args.test_batches, cfg)
        print(f"[transfer] MNIST {subset} images, {epochs} epochs, from {name}: test acc {acc:.4f}  "
              f"fit {fit_s:.0f} s  recipe {model.recipe}", flush=True)
        result[f"mnist{subset}_{name}_test_acc"] = acc
    return result


class EpochTimer(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds = time.perf_counter() - self.start


def plain_epoch(dm: FashionMNISTDataModule, hp: dict[str, Any], steps: int) -> float:
    """One epoch of torchvision's ResNet-18 with the zoo model's stem, AdamW and one-cycle settings ``hp``."""
    net = torchvision.models.resnet18(num_classes=10)
    adapt_stem(net, hp["stem_stride"])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    opt = torch.optim.AdamW(net.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp["lr"], total_steps=steps)
    net.train()
    start = time.perf_counter()
    for x, y in dm.train_dataloader():
        loss = nn.functional.cross_entropy(net((x.expand(-1, 3, -1, -1) - mean) / std), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return time.perf_counter() - start


def zoo_epoch(dm: FashionMNISTDataModule, hp: dict[str, Any], out: Path) -> float:
    model = TransferClassifier(**links(dm), **hp)
    timer = EpochTimer()
    trainer(out, 1, callbacks=[timer]).fit(model, dm)
    return timer.seconds


def part_timing(args: argparse.Namespace, out: Path) -> dict:
    cfg = args.cfgs["scratch"]
    hp = {**model_kw(cfg, args), "pretrained": "false", "weights": None}
    wrong = {k: hp.get(k) for k, ok in (("backbone", "resnet18"), ("optimizer", "adamw"), ("scheduler", "onecycle"))
             if hp.get(k, ok) != ok}
    if wrong:
        raise SystemExit(f"the plain loop implements ResNet-18 with AdamW + one-cycle only, not {wrong}")
    batch_size = args.batch_size or cfg["data"]["batch_size"]
    dm = FashionMNISTDataModule(str(args.data_dir), batch_size=batch_size, normalize=False,
                                limit_train=args.timing_images)
    dm.setup()
    steps = math.ceil(len(dm.splits["train"][1]) / batch_size)
    warm = FashionMNISTDataModule(str(args.data_dir), batch_size=batch_size, normalize=False,
                                  limit_train=2 * batch_size)
    warm.setup()  # untimed 2-step epochs: one-off costs (oneDNN kernel JIT, lazy imports) fall on neither timed run
    zoo_epoch(warm, hp, out / "timing")
    plain_epoch(warm, hp, 2)
    zoo_s, plain_s = [], []
    for rep in range(args.timing_reps):  # alternate the order so drifting machine load hits both alike
        runs = [("zoo", zoo_s), ("plain", plain_s)]
        for name, bucket in runs if rep % 2 == 0 else runs[::-1]:
            torch.manual_seed(rep)
            bucket.append(zoo_epoch(dm, hp, out / "timing") if name == "zoo" else plain_epoch(dm, hp, steps))
    z, p = statistics.median(zoo_s), statistics.median(plain_s)
    pairs = [a / b for a, b in zip(zoo_s, plain_s)]
    print(f"[timing] epoch of {len(dm.splits['train'][1])} images, batch {batch_size}: zoo {z:.1f} s, plain "
          f"{p:.1f} s (medians), ratio {z / p:.3f}; "
          f"ratio of means {statistics.mean(zoo_s) / statistics.mean(plain_s):.3f}"
          f"; per rep {', '.join(f'{r:.3f}' for r in pairs)} (median {statistics.median(pairs):.3f})\n"
          f"         zoo {[round(s, 1) for s in zoo_s]}, plain {[round(s, 1) for s in plain_s]}", flush=True)
    return {"timing_zoo_s": z, "timing_plain_s": p, "timing_ratio": z / p, "timing_zoo_all": zoo_s,
            "timing_plain_all": plain_s, "timing_pair_ratios": pairs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=None, help="work folder (weights, artifacts); default: a temp dir")
    p.add_argument("--parts", default="scratch,transfer,timing")
    p.add_argument("--recipe", type=Path, default=recipe_path("resnet_fashion_mnist"),
                   help="the scratch part's recipe (also the timing part's model and batch size)")
    p.add_argument("--ft-recipe", type=Path, default=recipe_path("resnet_mnist_finetune"),
                   help="the transfer part's recipe")
    p.add_argument("--epochs", type=int, default=None, help="Fashion-MNIST epochs (default: the recipe's, 20)")
    p.add_argument("--limit-train", type=int, default=None,
                   help="Fashion-MNIST training images (default: the recipe's; all 54k)")
    p.add_argument("--augment", default=None, choices=["none", "shift", "flip_shift"],
                   help="Fashion-MNIST augmentation (default: the recipe's, flip_shift)")
    p.add_argument("--stem-stride", type=int, default=None, choices=[1, 2, 4], help="default: the recipes', 2")
    p.add_argument("--batch-size", type=int, default=None,
                   help="Fashion-MNIST batch size, scratch and timing (default: the recipe's, 128)")
    p.add_argument("--lr", type=float, default=None, help="default: the recipes', 2e-3")
    p.add_argument("--subset", type=int, default=None,
                   help="MNIST training images for fine-tuning (default: the recipe's limit_train, 1000)")
    p.add_argument("--ft-epochs", type=int, default=None, help="fine-tuning epochs (default: the recipe's, 8)")
    p.add_argument("--ft-variants", default="pretrained,pretrained_full,scratch",
                   help="pretrained (default fine-tune recipe), pretrained_full (full LR, no freezing), scratch")
    p.add_argument("--test-batches", type=int, default=None, help="limit test batches (default: full test sets)")
    p.add_argument("--timing-images", type=int, default=2560)
    p.add_argument("--timing-reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=None, help="default: the recipes' seed_everything, 0")
    args = p.parse_args()
    args.cfgs = {part: load_recipe(path, model="resnet") for part, path in (("scratch", args.recipe),
                                                                            ("transfer", args.ft_recipe))}
    for part, data in (("scratch", "fashion_mnist"), ("transfer", "mnist")):
        if args.cfgs[part]["zoo"].get("data") != data:
            raise SystemExit(f"the {part} part needs a resnet on {data} recipe")
    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_transfer_"))
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"args": {k: str(v) for k, v in vars(args).items() if k != "cfgs"}}
    for part in args.parts.split(","):
        results.update({"scratch": part_scratch, "transfer": part_transfer, "timing": part_timing}[part](args, out))
    (out / "bench_transfer.json").write_text(json.dumps(results, indent=2))
    print(f"results: {out / 'bench_transfer.json'}")


if __name__ == "__main__":
    main()
