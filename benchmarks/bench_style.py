"""Style transfer on the real pair tubingen.jpg + starry_night.jpg (``<data-dir>/style/``).

    OMP_WAIT_POLICY=PASSIVE nice python benchmarks/bench_style.py --data-dir ../shared/data

Gatys (``style_transfer``, VGG19, LBFGS with strong-Wolfe line search): seconds per training step
(``--lbfgs-iters`` LBFGS iterations each) and per loss evaluation at every ``--sizes`` entry, the
style-loss reduction from the content image, and the result panel saved as a small JPEG under
``--out``. Fast stylizer (``fast_style``'s TransformerNet, 32 channels, 5 residual blocks): inference
images/s at 256x256 (untrained weights: the speed does not depend on them). Without cached ImageNet
VGG weights the VGG features are random (seeded): the script prints so, and the images are not the
paper's look.

Gatys runs read ``recipes/style_transfer_starry_night.yaml`` (``--recipe``; the README row, which
``python train.py -c recipes/style_transfer_starry_night.yaml --data-dir ../shared/data`` trains): content and
style images, model and seed; ``--sizes`` / ``--steps`` default to the recipe's size and steps, then 512 px x 2
steps, and ``--style``, ``--lbfgs-iters``, ``--arch`` and ``--pretrained`` override the recipe's values.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from zoo.datamodules.style import StylePairDataModule  # noqa: E402
from zoo.models.fast_style import TransformerNet  # noqa: E402
from zoo.models.style_transfer import StyleTransfer  # noqa: E402

from _recipes import given, load_recipe, recipe_path  # noqa: E402

LARGE = (512, 2)  # the README's second Gatys size and its steps, after the recipe's own


class StepLog(L.Callback):
    """Per-step wall time, loss-evaluation count and losses at each step's starting point."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self._t = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        m = trainer.callback_metrics
        self.rows.append({"seconds": time.perf_counter() - self._t, "evals": float(m["train/closure_evals"]),
                          "loss": float(m["train/loss"]), "style_loss": float(m["train/style_loss"])})
        print(f"  step {len(self.rows)}: {self.rows[-1]}", flush=True)


def gatys(args: argparse.Namespace, cfg: dict[str, Any], size: int, steps: int) -> dict[str, float]:
    """The recipe ``cfg`` at ``size`` px for ``steps`` steps: step times, style-loss reduction, the result panel."""
    dm = StylePairDataModule(str(args.data_dir), **{**cfg["data"], "size": size, "steps_per_epoch": steps})
    L.seed_everything(cfg["seed_everything"], verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if args.quiet_weights else "default")
        model = StyleTransfer(image_shape=dm.image_shape, **cfg["model"])
    log = StepLog()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp,
                            callbacks=[log])
        trainer.fit(model, dm)
        final = trainer.test(model, dm, verbose=False)[0]
        panel = sorted(Path(tmp, "artifacts").glob("test_result_panel_*.png"))[-1]
        out = args.out / f"gatys_{Path(dm.style_spec).stem}_{size}px.jpg"
        from PIL import Image

        img = Image.open(panel).convert("RGB")
        img.thumbnail((1100, 1100))
        img.save(out, quality=85)
    rows = log.rows
    evals = sum(r["evals"] for r in rows)
    return {"size": size, "image_shape": "x".join(map(str, dm.image_shape)), "steps": steps,
            "lbfgs_iters_per_step": model.hparams.lbfgs_iters,
            "s_per_step": sum(r["seconds"] for r in rows) / len(rows),
            "s_per_loss_eval": sum(r["seconds"] for r in rows) / evals, "evals_per_step": evals / len(rows),
            "style_loss_start": rows[0]["style_loss"], "style_loss_end": final["test/style_loss"],
            "style_loss_reduction_pct": 100 * (1 - final["test/style_loss"] / rows[0]["style_loss"]),
            "total_loss_start": rows[0]["loss"], "total_loss_end": final["test/loss"],
            "vgg_pretrained": bool(model.vgg_pretrained),
            "image": str(out.relative_to(REPO) if out.is_relative_to(REPO) else out)}


@torch.no_grad()
def fast_inference(size: int, batch: int, n_batches: int) -> dict[str, float]:
    net = TransformerNet().eval()
    x = torch.rand(batch, 3, size, size)
    net(x)  # warm-up
    t = time.perf_counter()
    for _ in range(n_batches):
        net(x)
    seconds = time.perf_counter() - t
    return {"size": size, "batch": batch, "images": batch * n_batches, "images_per_s": batch * n_batches / seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--recipe", type=Path, default=recipe_path("style_transfer_starry_night"),
                   help="the Gatys runs' configuration")
    p.add_argument("--style", default=None, help="a style image in <data-dir>/style/ (default: the recipe's)")
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help=f"longer sides in px (default: the recipe's data.size, then {LARGE[0]})")
    p.add_argument("--steps", type=int, nargs="+", default=None,
                   help=f"training steps per size (default: the recipe's steps_per_epoch, then {LARGE[1]})")
    p.add_argument("--lbfgs-iters", type=int, default=None, help="default: the recipe's, 5")
    p.add_argument("--arch", default=None, help="default: the recipe's, vgg19")
    p.add_argument("--pretrained", default=None, help="default: the recipe's, auto")
    p.add_argument("--fast-batches", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quiet-weights", action="store_true", help="hide the no-pretrained-weights warning")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args()
    cfg = load_recipe(args.recipe, model="style_transfer")
    cfg["model"].update(given(arch=args.arch, lbfgs_iters=args.lbfgs_iters, pretrained=args.pretrained))
    if args.style is not None:
        cfg["data"]["style"] = str(Path("style") / args.style)
    args.sizes = args.sizes or [cfg["data"].get("size", 256), LARGE[0]]
    args.steps = args.steps or [cfg["data"].get("steps_per_epoch", 10), LARGE[1]]
    content = cfg["data"].get("content", "style/tubingen.jpg")
    if not (args.data_dir / content).is_file():
        sys.exit(f"no {content} under {args.data_dir}; pass --data-dir ../shared/data")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"threads": args.threads, "gatys": [], "fast_inference": []}
    for size, steps in zip(args.sizes, args.steps):
        print(f"gatys {cfg['model'].get('arch', 'vgg19')} {size}px, {steps} steps x "
              f"{cfg['model'].get('lbfgs_iters', 10)} LBFGS iterations", flush=True)
        results["gatys"].append(gatys(args, cfg, size, steps))
        print(json.dumps(results["gatys"][-1]), flush=True)
    for batch in (1, 4):
        results["fast_inference"].append(fast_inference(256, batch, args.fast_batches))
        print(json.dumps(results["fast_inference"][-1]), flush=True)
    if not all(r["vgg_pretrained"] for r in results["gatys"]):
        print("NOTE: RANDOM (seeded) VGG features - no ImageNet weights here; images are not the paper's look")
    (args.out / "bench_style.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
