"""One smoke test per registered model, parametrised over ``list_models()`` so every model added later
is covered: fit on its offline default through train.py, reload the checkpoint, predict, export; and a
one-batch run with W&B offline and bf16 mixed precision on CPU."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

import zoo
from zoo.catalog import entry_params
from zoo.cli import main
from zoo.inference import load_zoo_checkpoint
from zoo.registry import get_model_entry

# Tiny settings per model (everything else is the model's and its DataModule's default).
TINY: dict[str, list[str]] = {
    "bert": ["--model.backbone", "scratch", "--data.size", "200"],
    "gan": ["--model.classifier_epochs", "1"],
    "style_transfer": ["--data.size", "32", "--data.steps_per_epoch", "2", "--model.lbfgs_iters", "2"],
    "fast_style": ["--data.size", "32", "--data.samples_per_epoch", "4", "--data.val_samples", "1"],
    "densenet": ["--model.backbone", "densenet121", "--data.batch_size", "16"],
    "audio_cnn": ["--data.samples_per_class", "20", "--data.batch_size", "16"],
    "mlp": ["--model.hidden", "[16]"],
    "semi_supervised": ["--data.labelled_per_class", "10", "--model.mu", "2"],
    "detector": ["--data.num_images", "14", "--data.batch_size", "4", "--model.fpn_channels", "32",
                 "--model.proposals", "32"],
    "gpt": ["--model.n_layer", "1", "--model.n_embd", "32", "--model.n_head", "2", "--model.sample_tokens", "20",
            "--model.predict_tokens", "20", "--data.block_size", "16"],
}

# The bf16 batch at batch size 2 wherever the DataModule takes a batch size: where the CPU has no native bf16
# (AVX2-only) bf16 kernels are emulated, convolutions ~40x slower than float32 (resnet18, batch 64 of 16 px: 31 s).
BF16_SMALL = {name: ["--data.batch_size", "2"] for name in zoo.list_models()
              if "batch_size" in {p.name for p in entry_params(get_model_entry(name).datamodule, "data")}}
LIMITS = ["--max-epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
          "--trainer.limit_test_batches", "1", "--threads", "1"]


def _digits(path: Path) -> Path:
    from sklearn.datasets import load_digits

    np.save(path / "digits.npy", (load_digits().images[:6] * 255 / 16).astype(np.uint8))
    return path / "digits.npy"


def _texts(path: Path) -> Path:
    (path / "texts.txt").write_text("a truly wonderful film .\nthe plot is dull and the acting is worse .\n")
    return path / "texts.txt"


def _series(path: Path) -> Path:
    from zoo.datamodules._ts_transforms import generate_series

    generate_series().to_csv(path / "series.csv", index=False)
    return path / "series.csv"


def _photo(path: Path) -> Path:
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)).save(path / "p.png")
    return path / "p.png"


# What `train.py predict --input` takes for each default DataModule.
SAMPLE_INPUT: dict[str, Callable[[Path], Path]] = {
    "sounds": lambda path: (__import__("soundfile").write(path / "tone.wav", np.sin(np.arange(6000) / 4), 8000),
                            path / "tone.wav")[1],
    "digits": _digits, "digits_rgb": _digits, "sentiment": _texts, "timeseries": _series, "style_content": _photo,
    "karate": lambda path: path, "detection_scenes": _photo, "style_pair": _photo, "ring2d": lambda path: path,
    "tabular": lambda path: __import__("tests.test_tabular", fromlist=["sample_rows"]).sample_rows(path),
    "lm": lambda path: (path / "prompt.txt").write_text("The ") and path / "prompt.txt",
    "ratings": lambda path: (path / "users.txt").write_text("1\n2\nunknown-user\n") and path / "users.txt",
}


def _runs(tmp_path: Path) -> list[str]:
    return ["--runs-dir", str(tmp_path / "runs")]


@pytest.mark.parametrize("name", zoo.list_models())
def test_fit_reload_predict_export(name: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    entry = get_model_entry(name)
    assert main(["--model", name, *LIMITS, *TINY.get(name, []), *_runs(tmp_path)]) == 0
    (metrics_file,) = (tmp_path / "runs" / name).glob("*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert any(k.startswith("test/") for k in metrics) or entry.cls.monitor is None
    ckpt = metrics["best_checkpoint"] or str(metrics_file.parent / "checkpoints" / "last.ckpt")
    _, model, _, _ = load_zoo_checkpoint(ckpt)
    example = model.example_input_array
    if isinstance(example, torch.Tensor):  # the reloaded weights give the trained model's outputs
        again = load_zoo_checkpoint(ckpt)[1]
        with torch.no_grad():
            torch.manual_seed(0)
            first = model(example)
            torch.manual_seed(0)
            assert torch.equal(first, again(example))
    sample = SAMPLE_INPUT[entry.datamodule](tmp_path)
    capsys.readouterr()
    code = main(["predict", "--ckpt-path", ckpt, "--input", str(sample), *_runs(tmp_path)])
    out, err = capsys.readouterr()
    if code == 2:  # a model without a sensible prediction says so in one line
        assert name in err or entry.cls.__name__ in err, err
    else:
        assert code == 0 and (out_file := Path(re.search(r"predictions: (\S+)", out).group(1))).exists()
        assert out_file.stat().st_size > 0
    for fmt in entry.cls.export_formats:
        assert main(["export", "--ckpt-path", ckpt, "--format", fmt, *_runs(tmp_path)]) == 0
        out = capsys.readouterr().out  # the example input, and one grown along every dynamic axis
        diffs = [float(x) for x in re.search(r"example input: ([0-9.e+-]+);.*\]: ([0-9.e+-]+)\)", out).groups()]
        assert max(diffs) < 1e-3, (fmt, diffs)
    if not entry.cls.export_formats:
        assert main(["export", "--ckpt-path", ckpt, "--format", "onnx", *_runs(tmp_path)]) == 2
        assert "no sensible onnx export" in capsys.readouterr().err


@pytest.mark.parametrize("name", zoo.list_models())
def test_one_batch_with_wandb_offline_bf16_and_debug_stats(name: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 autocast, W&B offline, and the --debug-stats hooks (which skip what does not apply) on every model."""
    monkeypatch.setenv("WANDB_MODE", "offline")  # (--fast-dev-run would swap W&B for a dummy logger)
    args = ["--model", name, "--max-epochs", "1", "--precision", "bf16-mixed", "--logger", "wandb", "--threads", "1",
            "--debug-stats", "--debug-every", "1",
            *[f"--trainer.limit_{stage}_batches=1" for stage in ("train", "val", "test")]]
    assert main([*args, *TINY.get(name, []), *BF16_SMALL.get(name, []), *_runs(tmp_path)]) == 0
    deadline = time.monotonic() + 30  # the W&B service may still be writing its file when the run returns
    while not list((tmp_path / "runs" / name).glob("*/wandb/offline-run-*/run-*.wandb")):
        assert time.monotonic() < deadline, "no offline W&B run file after 30 s"
        time.sleep(0.2)
