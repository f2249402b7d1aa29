"""Audio classification on the Free Spoken Digit Dataset (FSDD, 3,000 recordings, 6 speakers).

Parts (``--parts``, comma-separated):

- ``official``: the recipe ``recipes/audio_cnn_fsdd.yaml`` through ``train.py`` (log-mel CNN), and the
  same recipe with ``--model.frontend waveform`` (M5 on the raw waveform) beside it: test accuracy,
  macro-F1 and training time.
- ``loso``: leave one speaker out, all six rotations (``--data.test_speakers [S]``), with
  ``--loso-epochs`` epochs each (fewer than the recipe's, to keep the whole benchmark near 15 minutes
  of CPU): mean and worst test accuracy.
- ``throughput``: training and inference samples/s of the log-mel front end computed on the fly vs
  spectrograms precomputed once (waveform augmentation off in both, SpecAugment on in both), plain loop.

    python benchmarks/bench_audio.py --data-dir ../shared/data --threads 2 --parts official
    python benchmarks/bench_audio.py --data-dir ../shared/data --threads 2 --parts loso,throughput --loso-epochs 4
    python benchmarks/bench_audio.py --parts loso --speakers nicolas,theo,yweweler   # a subset of the rotations
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from zoo.cli import main as zoo_main
from zoo.datamodules.audio import FSDDDataModule
from zoo.models.audio_cnn import AudioCNN

from _recipes import load_recipe, recipe_path

RECIPE = recipe_path("audio_cnn_fsdd")
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")


def load() -> str:
    return open("/proc/loadavg").read().split()[0]


def run_recipe(data_dir: str, threads: int, out: Path, *extra: str) -> dict:
    """One ``train.py -c recipe`` run; its metrics.json plus the wall time."""
    start = time.perf_counter()
    code = zoo_main(["-c", str(RECIPE), "--data-dir", data_dir, "--threads", str(threads), "--output-dir", str(out),
                     "--trainer.enable_progress_bar", "false", *extra])
    if code != 0:
        raise SystemExit(f"train.py exited with {code} for {extra}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {**metrics, "wall_s": time.perf_counter() - start}


def official(args: argparse.Namespace, tmp: Path) -> None:
    rows = {}
    for frontend in ("melspec", "waveform"):
        print(f"[official] {frontend}: load {load()}", flush=True)
        rows[frontend] = run_recipe(args.data_dir, args.threads, tmp / f"official-{frontend}",
                                    "--model.frontend", frontend, "--seed", str(args.seed))
    print("\nFSDD official split (test: takes 0-4, 300 clips), seed", args.seed)
    for name, m in rows.items():
        print(f"  {name:9s} test acc {100 * m['test/acc']:.2f} %  macro-F1 {m['test/f1']:.4f}  epochs {m['epochs']}  "
              f"train {m['train_time_s']:.1f} s  end to end {m['wall_s']:.1f} s")
    mel, wave = rows["melspec"], rows["waveform"]
    print(f"  waveform / melspec: accuracy {wave['test/acc'] / mel['test/acc']:.3f}x, "
          f"train time {wave['train_time_s'] / mel['train_time_s']:.2f}x;  load after: {load()}")


def loso(args: argparse.Namespace, tmp: Path) -> None:
    accs = {}
    for speaker in args.speakers.split(","):
        m = run_recipe(args.data_dir, args.threads, tmp / f"loso-{speaker}", "--data.test_speakers", f"[{speaker}]",
                       "--max-epochs", str(args.loso_epochs), "--seed", str(args.seed))
        accs[speaker] = m["test/acc"]
        print(f"[loso] test speaker {speaker:9s} acc {100 * m['test/acc']:.2f} %  F1 {m['test/f1']:.4f}  "
              f"train {m['train_time_s']:.1f} s  load {load()}", flush=True)
    worst = min(accs, key=accs.get)
    print(f"\nFSDD leave-one-speaker-out ({len(accs)} rotations), {args.loso_epochs} epochs each: "
          f"mean {100 * statistics.mean(accs.values()):.2f} %"
          f", worst {100 * accs[worst]:.2f} % ({worst}), best {100 * max(accs.values()):.2f} %")


def throughput(args: argparse.Namespace) -> None:
    cfg = load_recipe(RECIPE, model="audio_cnn")
    dm = FSDDDataModule(data_dir=args.data_dir, **{**cfg["data"], "augment": False})
    dm.setup()
    x, y = dm.splits["train"]
    x, y = x[: args.tp_clips], y[: args.tp_clips]
    torch.manual_seed(args.seed)
    model = AudioCNN(num_classes=dm.num_classes, sample_rate=dm.sample_rate, num_samples=dm.num_samples, **cfg["model"])
    body = lambda spec: model.head(model.features(model.spec_augment(model.norm(spec.unsqueeze(1)))))  # noqa: E731
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    bs = cfg["data"]["batch_size"]

    def train_epoch(inputs: torch.Tensor, forward) -> float:
        model.train()
        start = time.perf_counter()
        for i in range(0, len(inputs), bs):
            loss = torch.nn.functional.cross_entropy(forward(inputs[i : i + bs]), y[i : i + bs])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return len(inputs) / (time.perf_counter() - start)

    def infer(inputs: torch.Tensor, forward) -> float:
        model.eval()
        start = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(inputs), 256):
                forward(inputs[i : i + 256])
        return len(inputs) / (time.perf_counter() - start)

    start = time.perf_counter()
    with torch.no_grad():
        specs = torch.cat([model.frontend(x[i : i + 256]) for i in range(0, len(x), 256)])
    pre_s = time.perf_counter() - start
    train_epoch(x[:256], model)  # warm-up, untimed
    fly, pre, fly_inf, pre_inf = [], [], [], []
    for _ in range(args.tp_reps):  # alternate, so drift in the machine's speed hits both
        fly.append(train_epoch(x, model))
        pre.append(train_epoch(specs, body))
        fly_inf.append(infer(x, model))
        pre_inf.append(infer(specs, lambda s: model.head(model.features(model.norm(s.unsqueeze(1))))))
    med = statistics.median
    print(f"\nThroughput, {len(x)} training clips, batch {bs}, {args.threads} threads, median of {args.tp_reps} "
          f"alternating reps (load {load()}):")
    print(f"  training:  on the fly {med(fly):.0f} clips/s, precomputed {med(pre):.0f} clips/s -> precomputed is "
          f"{med(pre) / med(fly):.3f}x")
    print(f"  inference: on the fly {med(fly_inf):.0f} clips/s, precomputed {med(pre_inf):.0f} clips/s -> "
          f"{med(pre_inf) / med(fly_inf):.3f}x")
    print(f"  precomputing {len(x)} spectrograms once: {pre_s:.2f} s ({len(x) / pre_s:.0f} clips/s); "
          f"float32 storage: waveforms {x.numel() * 4 / 1e6:.1f} MB, spectrograms {specs.numel() * 4 / 1e6:.1f} MB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--parts", default="official,loso,throughput")
    p.add_argument("--loso-epochs", type=int, default=4)
    p.add_argument("--speakers", default=",".join(SPEAKERS), help="test speakers of the loso part (comma-separated)")
    p.add_argument("--tp-clips", type=int, default=1024)
    p.add_argument("--tp-reps", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}), "
          f"load {open('/proc/loadavg').read().strip()}")
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.parts.split(","):
            {"official": lambda: official(args, Path(tmp)), "loso": lambda: loso(args, Path(tmp)),
             "throughput": lambda: throughput(args)}[part]()


if __name__ == "__main__":
    main()
