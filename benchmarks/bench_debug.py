"""The ``--debug-stats`` callbacks on real MNIST: their cost, and whether their warnings are right.

overhead: seconds per training step of the zoo CNN and ResNet-18 (stem stride 2) with the callbacks off (no
hooks at all) and on at the default interval (every 50 steps), alternating off/on/on/off after a warm-up.
demo: a 10-layer sigmoid MLP with a bad init (weights N(0, 0.05^2)) must raise the vanishing warning, the same
depth with ReLU + Kaiming init + batch norm must stay silent, and the ReLU + Kaiming net (without batch norm) at
learning rate 10 must raise the exploding warning. Each demo's gradient-norm heat map is copied to ``--out`` (the
README shows them).

    python benchmarks/bench_debug.py --data-dir ../shared/data --threads 2 --out benchmarks/results
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from torch import nn

from zoo.callbacks.health import ActivationStats, GradientHealth
from zoo.cli import main as zoo_main
from zoo.datamodules.images import MNISTDataModule
from zoo.models.base import ClassifierModule

from _recipes import recipe_path

REPO = Path(__file__).resolve().parents[1]


class DeepMLP(ClassifierModule):
    """A 10-layer MLP on 28x28 images: ``sigmoid`` + N(0, 0.05^2) init, ``relu_bn`` (ReLU + Kaiming + batch norm)
    or ``relu`` (ReLU + Kaiming)."""

    def __init__(self, kind: str = "sigmoid", lr: float = 0.1, depth: int = 10, width: int = 128) -> None:
        super().__init__()
        self.save_hyperparameters()
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(depth):
            linear = nn.Linear(784 if i == 0 else width, width)
            if kind == "sigmoid":
                nn.init.normal_(linear.weight, std=0.05)
                layers += [linear, nn.Sigmoid()]
            else:
                nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
                layers += [linear, *([nn.BatchNorm1d(width)] if kind == "relu_bn" else []), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(width, 10))
        self._init_metrics(10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def demo(data_dir: str, kind: str, lr: float, steps: int, out: Path | None) -> list[str]:
    """Train ``steps`` steps with the callbacks every 2 steps; the gradient warnings it raised."""
    L.seed_everything(0)
    dm = MNISTDataModule(data_dir=data_dir, batch_size=128, augment="none", limit_train=steps * 128)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp,
                            limit_val_batches=0, callbacks=[ActivationStats(2), GradientHealth(2)])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(DeepMLP(kind, lr), dm)
        (heat,) = Path(tmp).glob("artifacts/gradient_norms_*.png")
        if out is not None:
            shutil.copy(heat, out / f"gradient_norms_{kind}_lr{lr:g}.png")
    return [str(w.message).split(";")[0] for w in caught if "gradients" in str(w.message)]


def step_time(model: str, data_dir: str, debug: bool, batches: int, extra: list[str]) -> float:
    """Seconds per training step of ``model`` on MNIST, the ``--debug-stats`` callbacks on or off. The CNN trains
    ``recipes/cnn_mnist.yaml``; ResNet-18 has no MNIST recipe and trains its defaults with ``extra``."""
    config = ["-c", str(recipe_path("cnn_mnist"))] if model == "cnn" else ["--model", model, "--data", "mnist"]
    with tempfile.TemporaryDirectory() as tmp:
        args = [*config, "--data-dir", data_dir, "--max-epochs", "1", "--runs-dir", tmp,
                "--trainer.limit_train_batches", str(batches), "--trainer.limit_val_batches", "0",
                "--trainer.limit_test_batches", "1",
                "--no-early-stopping", *extra] + (["--debug-stats"] if debug else [])
        assert zoo_main(args) == 0
        (metrics,) = Path(tmp).glob(f"{model}/*/metrics.json")
        return json.loads(metrics.read_text())["train_time_s"] / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parts", default="demo,overhead")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--models", default="cnn,resnet", help="overhead part: which models (comma-separated)")
    parser.add_argument("--out", type=Path, help="copy the demo heat maps here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, load {open('/proc/loadavg').read().split()[:3]}")
    if "demo" in args.parts:
        for kind, lr in (("sigmoid", 0.1), ("relu_bn", 0.1), ("relu", 10.0)):
            start = time.perf_counter()
            found = demo(args.data_dir, kind, lr, 200, args.out)
            print(f"demo {kind:8s} lr {lr:<4g}: {len(found)} warning(s) in {time.perf_counter() - start:.0f} s"
                  + "".join(f"\n    {w}" for w in found))
    if "overhead" in args.parts:
        for model, batches, extra in (("cnn", 200, []), ("resnet", 60, ["--model.stem_stride", "2",
                                                                          "--model.pretrained", "false"])):
            if model not in args.models.split(","):
                continue
            step_time(model, args.data_dir, False, 5, extra)  # warm-up: imports, oneDNN kernels
            times: dict[bool, list[float]] = {False: [], True: []}
            for rep in range(args.reps):
                for debug in ((False, True) if rep % 2 == 0 else (True, False)):
                    times[debug].append(step_time(model, args.data_dir, debug, batches, extra))
            off, on = statistics.mean(times[False]), statistics.mean(times[True])
            pairs = " ".join(f"{b / a:.3f}" for a, b in zip(times[False], times[True]))
            print(f"overhead {model:6s}: off {1000 * off:.1f} ms/step, on (every 50 steps) {1000 * on:.1f} ms/step "
                  f"= {on / off:.3f}x ({args.reps} alternating pairs of {batches} steps; per pair {pairs}; "
                  f"load {open('/proc/loadavg').read().split()[0]})")


if __name__ == "__main__":
    main()
