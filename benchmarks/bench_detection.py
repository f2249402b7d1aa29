"""Object detection from random weights on CPU: multi-digit MNIST, the raccoon photos, and the zoo's overhead.

Parts (``--parts``, default all three):

- ``mnist``: ``recipes/detector_mnist_detection.yaml`` (FCOS) and the same data with each arch of ``--mnist-archs``
  through ``train.py`` with as many epochs as ``--budget-min`` minutes allow at the training speed measured just
  before each run (``--epochs`` fixes them): test mAP@[.5:.95], mAP@0.5, mAR@100, epochs, training seconds and
  inference images/s (best checkpoint, batch 8, no gradients).
- ``raccoon``: ``recipes/detector_raccoon.yaml`` with each arch of ``--raccoon-archs`` on the author's 40 test
  photos, beside ``test/baseline_map_50`` (one central box per photo, confidence 1, scored by the same metric).
- ``speed``: training images/s of the zoo module (Lightning ``Trainer.fit``) against a plain PyTorch loop over
  the same torchvision network, data loader, optimiser and gradient clipping, ``--reps`` alternating repetitions
  of ``--steps`` steps each (the first ``--warmup`` steps of each are not timed); the ratio plain / zoo is printed.

Figures go to stdout and ``benchmarks/results/bench_detection_<part>.json``; the test grids of the last run of
each part are copied to ``benchmarks/results/detector_<data>_<arch>_test.png``. Nothing is written into
``--data-dir``.

    python benchmarks/bench_detection.py --data-dir ../shared/data --threads 1 --budget-min 30
    python benchmarks/bench_detection.py --parts speed --threads 1
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _recipes import load_recipe, recipe_path

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"mnist": recipe_path("detector_mnist_detection"),
           "raccoon": recipe_path("detector_raccoon")}
RESULTS = REPO / "benchmarks" / "results"
#: Per (part, arch) model settings added to the recipe when another arch runs on the same data: the digits are
#: 21-42 px, so the anchor-based archs get anchors from 16 px (torchvision's start at 32, for COCO at 800 px).
SMALL_ANCHORS = {"anchor_sizes": [16, 32, 64, 128, 256]}
ARCH_OVERRIDES: dict[tuple[str, str], dict[str, Any]] = {
    ("mnist", "fasterrcnn"): SMALL_ANCHORS, ("mnist", "retinanet"): SMALL_ANCHORS,
    ("mnist", "ssdlite"): {"backbone": "mobilenet_v3_large"},
    ("raccoon", "ssdlite"): {"backbone": "mobilenet_v3_large"}}


def overrides(part: str, arch: str) -> dict[str, Any]:
    """Model arguments that differ from the part's recipe for ``arch``."""
    return {} if arch == recipe(part)["model"]["arch"] else {"arch": arch, **ARCH_OVERRIDES.get((part, arch), {})}


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" tid")[0].strip()


def recipe(part: str) -> dict[str, Any]:
    return load_recipe(RECIPES[part])


def build(part: str, arch: str, args: argparse.Namespace, **data_over: Any) -> tuple[Any, Any, dict[str, Any]]:
    """(set-up DataModule, model factory, model arguments) of a part's recipe with ``arch``'s overrides."""
    from zoo.datamodules.detection import MNISTDetectionDataModule, RaccoonDataModule
    from zoo.models.detector import Detector

    cfg = recipe(part)
    dm_cls = MNISTDetectionDataModule if part == "mnist" else RaccoonDataModule
    dm = dm_cls(data_dir=args.data_dir, **{**cfg["data"], **data_over})
    dm.setup()
    hp = {**cfg["model"], **overrides(part, arch)}

    def model(**over: Any) -> Detector:
        torch.manual_seed(args.seed)
        return Detector(num_classes=dm.num_classes, class_names=dm.class_names, image_size=dm.image_size,
                        **{**hp, **over})

    return dm, model, hp


def plain_steps(net: Any, loader: Any, hp: dict[str, Any], clip: float, steps: int, warmup: int) -> float:
    """Seconds for training steps ``warmup + 1 .. steps`` of a plain PyTorch loop (AdamW, clipping)."""
    from zoo.models.base import build_optimizer

    net.train()
    opt = build_optimizer([p for p in net.parameters() if p.requires_grad], hp["optimizer"], hp["lr"],
                          hp["weight_decay"])
    start, step = time.perf_counter(), 0
    while step < steps:
        for images, targets in loader:
            loss = sum(net(images, targets).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            opt.step()
            step += 1
            if step == warmup:
                start = time.perf_counter()
            if step == steps:
                break
    return time.perf_counter() - start


def calibrate_epochs(part: str, arch: str, args: argparse.Namespace) -> int:
    """Epochs that fit ``--budget-min`` at the training speed measured now (5 timed steps), with 15 % spare for
    validation and the Lightning loop, so the one-cycle schedule ends inside the budget."""
    dm, model, hp = build(part, arch, args)
    seconds = plain_steps(model().net, dm.train_dataloader(), hp, 10.0, 7, 2)
    rate = 5 * dm.batch_size / seconds
    epochs = max(1, int(0.85 * args.budget_min * 60 * rate / len(dm.splits["train"][0])))
    print(f"calibration: {arch} on {part} trains at {rate:.2f} img/s now -> {epochs} epochs for "
          f"{args.budget_min} min", flush=True)
    return epochs


def inference_rate(ckpt: str, datamodule: Any, n_images: int = 64, batch: int = 8) -> float:
    """Images/s of the trained network in eval mode on test images (pre-loaded, batch ``batch``)."""
    from zoo.inference import load_zoo_checkpoint

    model = load_zoo_checkpoint(ckpt)[1].eval()
    datamodule.setup()
    loader = datamodule.test_dataloader()
    images = [img for imgs, _ in loader for img in imgs][:n_images]
    with torch.no_grad():
        model.net(images[:batch])  # warm-up
        start = time.perf_counter()
        for i in range(0, len(images), batch):
            model.net(images[i:i + batch])
    return len(images) / (time.perf_counter() - start)


def train_run(part: str, arch: str, args: argparse.Namespace) -> dict[str, Any]:
    from zoo.cli import main as zoo_main

    flags = [x for k, v in overrides(part, arch).items() for x in (f"--model.{k}", json.dumps(v) if isinstance(v, list)
                                                                   else str(v))]
    extra = ["--max-epochs", str(args.epochs or calibrate_epochs(part, arch, args))]
    with tempfile.TemporaryDirectory() as runs:
        cmd = ["-c", str(RECIPES[part]), "--data-dir", args.data_dir, "--threads", str(args.threads), "--seed",
               str(args.seed), "--trainer.enable_progress_bar", "false", *flags, *extra,
               *args.extra, "--runs-dir", runs]
        print("train.py " + " ".join(cmd[:-2]), flush=True)
        assert zoo_main(cmd) == 0, f"train.py failed for {arch} on {part}"
        folder = next(Path(runs).glob("detector/*/metrics.json")).parent
        metrics = json.loads((folder / "metrics.json").read_text())
        grids = sorted((folder / "artifacts").glob("test_predictions_step*.png"))
        if grids:
            RESULTS.mkdir(exist_ok=True)
            shutil.copy(grids[-1], RESULTS / f"detector_{part}_{arch}_test.png")
        dm = build(part, arch, args)[0]
        rate = inference_rate(metrics["best_checkpoint"] or str(folder / "checkpoints" / "last.ckpt"), dm)
    keys = ("test/map", "test/map_50", "test/map_75", "test/mar_100", "test/baseline_map_50")
    return {"arch": arch, **{k: metrics[k] for k in keys if k in metrics}, "epochs": metrics["epochs"],
            "train_s": metrics["train_time_s"], "infer_img_s": round(rate, 2), "loadavg": loadavg()}


def part_train(part: str, archs: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for arch in archs:
        row = train_run(part, arch, args)
        rows.append(row)
        base = f", baseline mAP@0.5 {row['test/baseline_map_50']:.3f}" if "test/baseline_map_50" in row else ""
        print(f"{part} {arch:10} mAP {row['test/map']:.3f}  mAP@0.5 {row['test/map_50']:.3f}  mAR@100 "
              f"{row['test/mar_100']:.3f}{base}  {row['epochs']} epochs, {row['train_s']:.0f} s training, "
              f"{row['infer_img_s']:.1f} img/s inference  (loadavg {row['loadavg']})", flush=True)
    return rows


class _StepTimer:
    """Lightning callback: wall time from the end of step ``warmup`` to the end of the last step."""

    def __init__(self, warmup: int) -> None:
        from lightning.pytorch import Callback

        class Timer(Callback):
            def on_train_batch_end(cb, trainer: Any, *a: Any) -> None:  # noqa: N805
                if trainer.global_step == warmup:
                    self.start = time.perf_counter()
                self.end = time.perf_counter()

        self.callback, self.start, self.end = Timer(), 0.0, 0.0


def part_speed(args: argparse.Namespace) -> dict[str, Any]:
    """Zoo module under Lightning vs a plain loop: same network (same seed), loader, AdamW and clipping."""
    import lightning as L

    cfg = recipe("mnist")
    batch = cfg["data"]["batch_size"]
    dm, model, hp = build("mnist", cfg["model"]["arch"], args, num_train=args.steps * batch)
    clip = cfg["trainer"].get("gradient_clip_val", 10.0)
    n_img = (args.steps - args.warmup) * batch

    def zoo_rate() -> float:
        timer = _StepTimer(args.warmup)
        with tempfile.TemporaryDirectory() as root:
            trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_val_batches=0, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                gradient_clip_val=clip, callbacks=[timer.callback], default_root_dir=root,
                                num_sanity_val_steps=0)
            trainer.fit(model(scheduler="none"), train_dataloaders=dm.train_dataloader())
        return n_img / (timer.end - timer.start)

    def plain_rate() -> float:
        return n_img / plain_steps(model(scheduler="none").net, dm.train_dataloader(), hp, clip, args.steps,
                                   args.warmup)

    zoo, plain = [], []
    for rep in range(args.reps):
        for name, fn, out in (("zoo", zoo_rate, zoo), ("plain", plain_rate, plain))[:: 1 if rep % 2 == 0 else -1]:
            out.append(fn())
            print(f"speed rep {rep} {name:5} {out[-1]:.2f} img/s  (loadavg {loadavg()})", flush=True)
    ratio = statistics.median(p / z for p, z in zip(plain, zoo))
    result = {"arch": hp["arch"], "zoo_img_s": round(statistics.median(zoo), 2),
              "plain_img_s": round(statistics.median(plain), 2), "ratio_plain_over_zoo": round(ratio, 3),
              "steps": args.steps, "warmup": args.warmup, "reps": args.reps, "batch_size": batch}
    print(f"speed: zoo {result['zoo_img_s']} img/s, plain loop {result['plain_img_s']} img/s, plain/zoo "
          f"{ratio:.3f} (median of {args.reps} alternating reps)", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parts = ["mnist", "raccoon", "speed"]
    parser.add_argument("--parts", nargs="+", default=parts, choices=parts)
    parser.add_argument("--mnist-archs", nargs="+", default=["fcos", "fasterrcnn"])
    parser.add_argument("--raccoon-archs", nargs="+", default=["fcos", "retinanet"])
    parser.add_argument("--budget-min", type=float, default=30, help="training minutes per run (sets the epochs)")
    parser.add_argument("--epochs", type=int, default=0, help="epochs per run (0: as many as the budget allows at the "
                        "speed measured just before each run)")
    parser.add_argument("--steps", type=int, default=30, help="speed: steps per repetition")
    parser.add_argument("--warmup", type=int, default=5, help="speed: untimed steps per repetition")
    parser.add_argument("--reps", type=int, default=4, help="speed: alternating repetitions")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train.py flags (last)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, budget {args.budget_min} min per training run, loadavg {loadavg()}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    for part in args.parts:
        result: Any = part_speed(args) if part == "speed" else part_train(
            part, args.mnist_archs if part == "mnist" else args.raccoon_archs, args)
        (RESULTS / f"bench_detection_{part}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
