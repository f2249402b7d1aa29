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

import lightning as L
import torch
import torchvision
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from zoo.datamodules.images import FashionMNISTDataModule, MNISTDataModule  # noqa: E402
from zoo.models.backbones import adapt_stem  # noqa: E402
from zoo.models.transfer import TransferClassifier  # noqa: E402


def trainer(out: Path, epochs: int, test_limit: int | None = None, callbacks: list | None = None) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=out,
                     limit_val_batches=0, num_sanity_val_steps=0, limit_test_batches=test_limit,
                     callbacks=callbacks or [])


def fit_and_test(model: TransferClassifier, dm: L.LightningDataModule, out: Path, epochs: int, test_batches: int | None
                 ) -> tuple[float, float]:
    """(test accuracy, fit seconds)."""
    t0 = time.perf_counter()
    tr = trainer(out, epochs, test_batches)
    tr.fit(model, dm)
    fit_s = time.perf_counter() - t0
    return tr.test(model, dm, verbose=False)[0]["test/acc"], fit_s


def part_scratch(args: argparse.Namespace, out: Path) -> dict:
    L.seed_everything(args.seed)
    dm = FashionMNISTDataModule(str(args.data_dir), batch_size=args.batch_size, normalize=False,
                                limit_train=args.limit_train, augment=args.augment)
    model = TransferClassifier(num_classes=10, in_channels=1, image_size=28, pretrained="false",
                               stem_stride=args.stem_stride, lr=args.lr)
    acc, fit_s = fit_and_test(model, dm, out / "scratch", args.epochs, args.test_batches)
    torch.save(model.state_dict(), out / "fmnist_resnet18.pt")
    n_train = len(dm.splits["train"][1])
    print(f"[scratch] ResNet-18 on Fashion-MNIST ({n_train} train images, {args.epochs} epoch(s), stem stride "
          f"{args.stem_stride}): test acc {acc:.4f}  fit {fit_s / 60:.1f} min", flush=True)
    return {"fmnist_test_acc": acc, "fmnist_train_images": n_train, "fmnist_fit_s": fit_s}


def part_transfer(args: argparse.Namespace, out: Path) -> dict:
    weights = out / "fmnist_resnet18.pt"
    if not weights.is_file():
        raise SystemExit(f"{weights} is missing: run the scratch part first (same --out)")
    full = dict(freeze_epochs=0, backbone_lr_ratio=1.0, layer_decay=1.0)  # same recipe as from scratch
    variants = {"pretrained": dict(weights=str(weights)), "pretrained_full": dict(weights=str(weights), **full),
                "scratch": dict(pretrained="false")}
    result = {}
    for name in args.ft_variants.split(","):
        kwargs = variants[name]
        L.seed_everything(args.seed)
        dm = MNISTDataModule(str(args.data_dir), batch_size=64, normalize=False, limit_train=args.subset)
        model = TransferClassifier(num_classes=10, in_channels=1, image_size=28, stem_stride=args.stem_stride,
                                   lr=args.lr, **kwargs)
        acc, fit_s = fit_and_test(model, dm, out / f"mnist_{name}", args.ft_epochs, args.test_batches)
        print(f"[transfer] MNIST {args.subset} images, {args.ft_epochs} epochs, from {name}: test acc {acc:.4f}  "
              f"fit {fit_s:.0f} s  recipe {model.recipe}", flush=True)
        result[f"mnist{args.subset}_{name}_test_acc"] = acc
    return result


class EpochTimer(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.seconds = time.perf_counter() - self.start


def plain_epoch(dm: FashionMNISTDataModule, stem: int, lr: float, steps: int) -> float:
    net = torchvision.models.resnet18(num_classes=10)
    adapt_stem(net, stem)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    net.train()
    start = time.perf_counter()
    for x, y in dm.train_dataloader():
        loss = nn.functional.cross_entropy(net((x.expand(-1, 3, -1, -1) - mean) / std), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return time.perf_counter() - start


def zoo_epoch(dm: FashionMNISTDataModule, stem: int, lr: float, out: Path) -> float:
    model = TransferClassifier(num_classes=10, in_channels=1, image_size=28, pretrained="false",
                               stem_stride=stem, lr=lr)
    timer = EpochTimer()
    trainer(out, 1, callbacks=[timer]).fit(model, dm)
    return timer.seconds


def part_timing(args: argparse.Namespace, out: Path) -> dict:
    dm = FashionMNISTDataModule(str(args.data_dir), batch_size=args.batch_size, normalize=False,
                                limit_train=args.timing_images)
    dm.setup()
    steps = math.ceil(len(dm.splits["train"][1]) / args.batch_size)
    warm = FashionMNISTDataModule(str(args.data_dir), batch_size=args.batch_size, normalize=False,
                                  limit_train=2 * args.batch_size)
    warm.setup()  # untimed 2-step epochs: one-off costs (oneDNN kernel JIT, lazy imports) fall on neither timed run
    zoo_epoch(warm, args.stem_stride, args.lr, out / "timing")
    plain_epoch(warm, args.stem_stride, args.lr, 2)
    zoo_s, plain_s = [], []
    for rep in range(args.timing_reps):  # alternate the order so drifting machine load hits both alike
        runs = [("zoo", zoo_s), ("plain", plain_s)]
        for name, bucket in runs if rep % 2 == 0 else runs[::-1]:
            torch.manual_seed(rep)
            bucket.append(zoo_epoch(dm, args.stem_stride, args.lr, out / "timing") if name == "zoo"
                          else plain_epoch(dm, args.stem_stride, args.lr, steps))
    z, p = statistics.median(zoo_s), statistics.median(plain_s)
    pairs = [a / b for a, b in zip(zoo_s, plain_s)]
    print(f"[timing] epoch of {len(dm.splits['train'][1])} images, batch {args.batch_size}: zoo {z:.1f} s, plain "
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
    p.add_argument("--epochs", type=int, default=1, help="Fashion-MNIST epochs (scratch part)")
    p.add_argument("--limit-train", type=int, default=None, help="Fashion-MNIST training images (default: all 54k)")
    p.add_argument("--augment", default="none", choices=["none", "shift", "flip_shift"])
    p.add_argument("--stem-stride", type=int, default=4, choices=[1, 2, 4])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--subset", type=int, default=1000, help="MNIST training images for fine-tuning")
    p.add_argument("--ft-epochs", type=int, default=8)
    p.add_argument("--ft-variants", default="pretrained,pretrained_full,scratch",
                   help="pretrained (default fine-tune recipe), pretrained_full (full LR, no freezing), scratch")
    p.add_argument("--test-batches", type=int, default=None, help="limit test batches (default: full test sets)")
    p.add_argument("--timing-images", type=int, default=2560)
    p.add_argument("--timing-reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_transfer_"))
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    for part in args.parts.split(","):
        results.update({"scratch": part_scratch, "transfer": part_transfer, "timing": part_timing}[part](args, out))
    (out / "bench_transfer.json").write_text(json.dumps(results, indent=2))
    print(f"results: {out / 'bench_transfer.json'}")


if __name__ == "__main__":
    main()
