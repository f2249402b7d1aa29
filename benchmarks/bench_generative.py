"""Generative benchmarks: ring2d mode coverage over seeds, DCGAN on MNIST in a CPU time budget, and a
convolutional autoencoder on MNIST (test MSE, anomaly AUROC for a held-out digit).

Usage:
    nice python benchmarks/bench_generative.py --parts ring,gan,ae --data-dir ../shared/data

Prints one line per run and a summary; copies a few sample PNGs to ``benchmarks/results/``.

Part ``ring`` reads ``recipes/gan2d_ring2d.yaml`` (``--ring-recipe``; the README row, one seed of which is
``python train.py -c recipes/gan2d_ring2d.yaml``): model, data and trainer options, and the first seed; every
seed also seeds the data. ``--ring-epochs`` overrides the recipe's ``trainer.max_epochs`` (and the plot interval).
Part ``ae`` reads ``recipes/autoencoder_mnist.yaml`` (``--ae-recipe``) the same way; ``--ae-epochs`` and
``--anomaly-digit`` override it. Part ``gan`` reads ``recipes/gan_mnist.yaml`` (``--gan-recipe``): model, data,
trainer options and seed; ``--gan-minutes`` overrides its ``trainer.max_time`` (10 minutes).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import lightning as L  # noqa: E402
import torch  # noqa: E402

from zoo.datamodules.images import MNISTDataModule  # noqa: E402
from zoo.datamodules.points import Ring2DDataModule  # noqa: E402
from zoo.models.autoencoder import Autoencoder  # noqa: E402
from zoo.models.gan import GAN, PointGAN  # noqa: E402

from _recipes import load_recipe, max_time_seconds, recipe_path, trainer_settings  # noqa: E402

def fit_test(model: L.LightningModule, dm: L.LightningDataModule, root: Path, **trainer_kw) -> tuple[dict, float]:
    """Fit then test on CPU in ``root``; returns (test metrics, fit seconds)."""
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
                        num_sanity_val_steps=0, **trainer_kw)
    start = time.perf_counter()
    trainer.fit(model, dm)
    fit_s = time.perf_counter() - start
    return {k: float(v) for k, v in trainer.test(model, dm, verbose=False)[0].items()}, fit_s


def keep(root: Path, prefix: str, dest: Path) -> None:
    """Copy the last ``prefix`` PNG of a run into the results folder."""
    pngs = sorted((root / "artifacts").glob(f"{prefix}_step*.png"))
    if pngs:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(pngs[-1], dest)


def bench_ring(args: argparse.Namespace, tmp: Path) -> dict:
    cfg = load_recipe(args.ring_recipe, model="gan2d")
    model_kw = dict(cfg["model"])
    trainer_kw = trainer_settings(cfg, "num_sanity_val_steps")
    if args.ring_epochs is not None:
        trainer_kw["max_epochs"] = model_kw["sample_every"] = args.ring_epochs
    rows, first = [], cfg["seed_everything"]
    for seed in range(first, first + args.seeds):
        L.seed_everything(seed, verbose=False)
        dm = Ring2DDataModule(**{**cfg["data"], "seed": seed})
        model = PointGAN(**model_kw)
        out, fit_s = fit_test(model, dm, tmp / f"ring{seed}", **trainer_kw)
        rows.append(out)
        print(f"ring2d seed {seed}: modes {out['test/modes']:.0f}/8  hq_frac {out['test/hq_frac']:.3f}  "
              f"(real data {out['test/hq_frac_real']:.3f})  fit {fit_s:.0f}s", flush=True)
        if seed == first:
            keep(tmp / f"ring{seed}", "samples", args.results / "ring2d_samples.png")
    return {"ring_modes_mean": statistics.mean(r["test/modes"] for r in rows),
            "ring_hq_frac_mean": statistics.mean(r["test/hq_frac"] for r in rows),
            "ring_modes_min": min(r["test/modes"] for r in rows)}


def bench_gan(args: argparse.Namespace, tmp: Path) -> dict:
    cfg = load_recipe(args.gan_recipe, model="gan")
    trainer_kw = trainer_settings(cfg, "num_sanity_val_steps")
    if args.gan_minutes is not None:
        trainer_kw["max_time"] = {"minutes": args.gan_minutes}
    L.seed_everything(cfg["seed_everything"], verbose=False)
    dm = MNISTDataModule(data_dir=args.data_dir, **cfg["data"])
    model = GAN(num_classes=dm.num_classes, in_channels=dm.in_channels, image_size=dm.image_size, **cfg["model"])
    budget = max_time_seconds(trainer_kw.get("max_time"))
    print(f"dcgan mnist: training budget {'none' if budget is None else f'{budget / 60:.1f} min'}", flush=True)
    out, fit_s = fit_test(model, dm, tmp / "gan", **trainer_kw)
    keep(tmp / "gan", "samples", args.results / "dcgan_mnist_samples.png")
    keep(tmp / "gan", "interpolation", args.results / "dcgan_mnist_interpolation.png")
    print(f"dcgan mnist: fit {fit_s:.0f}s; FID(classifier) real-vs-gen {out['test/fid_classifier']:.3f}, "
          f"real-vs-real {out['test/fid_classifier_real']:.3f}; classes present {out['test/classes_present']:.0f}/10 "
          f"(min share {out['test/class_min_frac']:.3f}); classifier acc {out['test/classifier_acc']:.4f}, "
          f"trained in {out['test/classifier_seconds']:.0f}s", flush=True)
    return {"gan_fit_s": fit_s, **{k: out[k] for k in ("test/fid_classifier", "test/fid_classifier_real",
                                                       "test/classes_present", "test/classifier_seconds")}}


def bench_ae(args: argparse.Namespace, tmp: Path) -> dict:
    cfg = load_recipe(args.ae_recipe, model="autoencoder")
    model_kw = dict(cfg["model"])
    trainer_kw = trainer_settings(cfg, "num_sanity_val_steps")
    if args.ae_epochs is not None:
        trainer_kw["max_epochs"] = model_kw["sample_every"] = args.ae_epochs
    if args.anomaly_digit is not None:
        model_kw["anomaly_classes"] = [args.anomaly_digit]
    held_out = ", ".join(str(c) for c in model_kw.get("anomaly_classes", ()))
    L.seed_everything(cfg["seed_everything"], verbose=False)
    dm = MNISTDataModule(data_dir=args.data_dir, **cfg["data"])
    model = Autoencoder(num_classes=dm.num_classes, in_channels=dm.in_channels, image_size=dm.image_size, **model_kw)
    out, fit_s = fit_test(model, dm, tmp / "ae", **trainer_kw)
    keep(tmp / "ae", "reconstructions", args.results / "conv_ae_mnist_reconstructions.png")
    print(f"conv autoencoder mnist (digit {held_out} held out): test MSE normal {out['test/mse']:.4f}, "
          f"held-out {out['test/mse_anomalous']:.4f}; anomaly AUROC {out['test/auroc']:.3f}; fit {fit_s:.0f}s",
          flush=True)
    return {"ae_fit_s": fit_s, **{k: out[k] for k in ("test/mse", "test/mse_anomalous", "test/auroc")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--parts", default="ring,gan,ae", help="comma-separated: ring, gan, ae")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--ring-recipe", type=Path, default=recipe_path("gan2d_ring2d"), help="the ring part's recipe")
    p.add_argument("--ring-epochs", type=int, default=None,
                   help="epochs of 128 batches (65,536 points / 512); default: the recipe's, 100")
    p.add_argument("--gan-recipe", type=Path, default=recipe_path("gan_mnist"), help="the gan part's recipe")
    p.add_argument("--gan-minutes", type=float, default=None,
                   help="DCGAN training budget in wall-clock minutes (default: the recipe's max_time, 10)")
    p.add_argument("--ae-recipe", type=Path, default=recipe_path("autoencoder_mnist"), help="the ae part's recipe")
    p.add_argument("--ae-epochs", type=int, default=None, help="default: the recipe's, 3")
    p.add_argument("--anomaly-digit", type=int, default=None, help="default: the recipe's anomaly_classes, 9")
    p.add_argument("--threads", type=int, default=2, help="torch threads (1 is faster on an oversubscribed CPU)")
    p.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    benches = {"ring": bench_ring, "gan": bench_gan, "ae": bench_ae}
    summary = {}
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.parts.split(","):
            summary.update(benches[part.strip()](args, Path(tmp)))
    print(json.dumps({k: round(v, 4) for k, v in summary.items()}, indent=1))


if __name__ == "__main__":
    main()
