"""GPU readiness in one command (<= 8 minutes on one GPU): every registered model one short fit + test on its
offline default with ``--gpus 1`` at ``16-mixed`` and ``bf16-mixed``, ``--gpus 2`` (DDP) where two GPUs
exist, and ResNet-18's automatic-mixed-precision speed-up over float32. Prints a table (paste it into the
README) and writes it as JSON with ``--out``.

    python benchmarks/gpu_check.py                      # all models
    python benchmarks/gpu_check.py --models cnn,gan --out gpu_check.json
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import zoo
from zoo.cli import main as zoo_main

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from test_every_model import TINY  # noqa: E402  (the same tiny settings the CPU suite uses)

SHORT = ["--max-epochs", "1", "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2",
         "--trainer.limit_test_batches", "2"]


def one_run(model: str, gpus: int, precision: str, root: Path) -> tuple[str, float]:
    """(``ok`` / the error's last line, seconds) for a short fit + test."""
    args = ["--model", model, "--gpus", str(gpus), "--precision", precision, *SHORT, *TINY.get(model, []),
            "--runs-dir", str(root / f"{model}-{gpus}-{precision}")]
    err = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stderr(err):
            code = zoo_main(args)
    except Exception as exc:  # the table reports every failure instead of stopping at the first
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}", time.perf_counter() - start
    lines = err.getvalue().strip().splitlines()
    return ("ok" if code == 0 else f"exit {code}: {lines[-1][:80] if lines else ''}"), time.perf_counter() - start


def resnet_amp_speedup(steps: int = 30, batch: int = 64) -> dict[str, float]:
    """Images/s of a ResNet-18 training step at 224 px in float32 and with AMP (fp16, bf16)."""
    import torchvision

    net = torchvision.models.resnet18(num_classes=10).cuda()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(batch, 3, 224, 224, device="cuda"), torch.randint(0, 10, (batch,), device="cuda")
    out = {}
    for name, dtype in (("fp32", None), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
        scaler = torch.amp.GradScaler("cuda", enabled=dtype is torch.float16)
        for i in range(steps + 5):
            if i == 5:
                torch.cuda.synchronize()
                start = time.perf_counter()
            with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        torch.cuda.synchronize()
        out[f"{name}_images_per_s"] = steps * batch / (time.perf_counter() - start)
    out["fp16_speedup"] = out["fp16_images_per_s"] / out["fp32_images_per_s"]
    out["bf16_speedup"] = out["bf16_images_per_s"] / out["fp32_images_per_s"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="comma-separated model names (default: every registered model)")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: no CUDA GPU on this machine; run this on a GPU machine", file=sys.stderr)
        return 2
    gpus = torch.cuda.device_count()
    models = args.models.split(",") if args.models else zoo.list_models()
    configs = [(1, "16-mixed"), (1, "bf16-mixed")] + ([(2, "16-mixed")] if gpus >= 2 else [])
    rows, results = [], {"device": torch.cuda.get_device_name(0), "gpus": gpus, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            cells = []
            for n, precision in configs:
                if n > 1 and not zoo.get_model_entry(model).cls.supports_multi_device:
                    cells.append("single-device model")
                    continue
                status, seconds = one_run(model, n, precision, Path(tmp))
                results["runs"][f"{model}/{n}gpu/{precision}"] = {"status": status, "seconds": round(seconds, 1)}
                cells.append(f"{status} ({seconds:.0f} s)")
            rows.append(f"| {model} | " + " | ".join(cells) + " |")
    results["resnet18_amp"] = resnet_amp_speedup()
    header = "| model | " + " | ".join(f"--gpus {n} --precision {p}" for n, p in configs) + " |"
    print(f"device: {results['device']} x {gpus}\n\n{header}\n|" + "---|" * (len(configs) + 1))
    print("\n".join(rows))
    amp = results["resnet18_amp"]
    print(f"\nResNet-18 training, 224 px, batch 64: fp32 {amp['fp32_images_per_s']:.0f} img/s, fp16 AMP "
          f"{amp['fp16_images_per_s']:.0f} img/s ({amp['fp16_speedup']:.2f}x), bf16 AMP "
          f"{amp['bf16_images_per_s']:.0f} img/s ({amp['bf16_speedup']:.2f}x)")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    failed = [k for k, v in results["runs"].items() if v["status"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
