"""The train.py contract: run folders, metrics.json, errors with exit code 2, resume, predict, export."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO
from zoo.cli import main

TINY = ["--model", "cnn", "--max-epochs", "2", "--model.channels", "[16, 32]", "--model.hidden", "32",
        "--model.scheduler", "none", "--model.lr", "0.01"]


def run_cli(tmp_path: Path, *args: str) -> int:
    return main([*args, "--runs-dir", str(tmp_path / "runs")])


def only_run(runs_dir: Path, model: str = "cnn") -> Path:
    runs = sorted((runs_dir / model).iterdir())
    assert len(runs) == 1
    return runs[0]


def error_line(capsys: pytest.CaptureFixture, code: int) -> str:
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ")
    return err[-1]


def test_list_and_help_without_torch_import() -> None:
    out = subprocess.run([sys.executable, "train.py", "--list"], cwd=REPO, capture_output=True, text=True, check=True)
    assert "cnn" in out.stdout and "digits" in out.stdout and "lstm.py + timeseries.py" in out.stdout
    code = "import sys, zoo.cli; zoo.cli.main(['--list']); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True)
    out = subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO, capture_output=True, text=True, check=True)
    assert "--gpus" in out.stdout and "--ckpt-path" in out.stdout


def test_model_help_lists_hyperparameters() -> None:
    out = subprocess.run([sys.executable, "train.py", "--model", "cnn", "--help"], cwd=REPO, capture_output=True,
                         text=True)
    assert out.returncode == 0 and "--model.lr (float, default 0.003)" in out.stdout
    assert "--data.batch_size (int, default 64)" in out.stdout
    assert "--model.num_classes (int, default 10, from the data)" in out.stdout
    code = ("import sys, zoo.cli; zoo.cli.main(['--model', 'gnn', '--data', 'cora', '--help']); "
            "assert 'torch' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert "--model.heads" in out.stdout and "--data.split" in out.stdout


def test_bad_input_is_one_line_exit_2_without_traceback(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "train.py", "--model", "cnnn", "--runs-dir", str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: unknown model 'cnnn'; did you mean cnn")


@pytest.mark.parametrize("args,message", [
    (["--model", "cnn", "--data", "mnistt"], "unknown datamodule 'mnistt'; did you mean mnist"),
    (["--model", "cnn", "--model.lr", "fast"], "model.lr"),
    (["--model", "cnn", "--gpus", "1"], "asked for 1 GPU(s)"),
    (["--model", "cnn", "--precision", "8-mixed"], "unknown precision '8-mixed'"),
    (["--model", "cnn", "--data", "mnist", "--data-dir", "/nonexistent"], "does not exist"),
    (["--model", "cnn", "--ckpt-path", "/nonexistent.ckpt"], "checkpoint '/nonexistent.ckpt' does not exist"),
    (["--model", "cnn", "--bogus"], "unknown option --bogus"),
])
def test_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str) -> None:
    if "--gpus" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert message in error_line(capsys, run_cli(tmp_path, *args))
    assert not list((tmp_path / "runs").rglob("*.ckpt"))  # nothing half-written is left behind
    assert not any(p.is_dir() and not any(p.iterdir()) for p in (tmp_path / "runs").rglob("*"))


def test_existing_output_dir_is_never_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert "already exists" in error_line(capsys, run_cli(tmp_path, *TINY, "--output-dir", str(out)))
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_fit_writes_run_folder_and_metrics(tmp_path: Path) -> None:
    assert run_cli(tmp_path, *TINY) == 0
    run = only_run(tmp_path / "runs")
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"test/acc", "test/f1", "val/loss", "epochs", "wall_time_s", "best_checkpoint"} <= set(metrics)
    assert metrics["epochs"] == 2 and metrics["test/acc"] > 0.5  # 10 classes: chance is 0.1
    assert Path(metrics["best_checkpoint"]).is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "config.yaml").is_file() and list((run / "artifacts").glob("confusion_matrix*.png"))
    assert run_cli(tmp_path, *TINY) == 0  # a second run gets a new folder
    assert len(list((tmp_path / "runs" / "cnn").iterdir())) == 2


def test_training_without_validation_runs_and_tests_the_last_weights(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="validation is off"):
        assert run_cli(tmp_path, *TINY, "--trainer.limit_val_batches", "0") == 0
    run = only_run(tmp_path / "runs")
    metrics = json.loads((run / "metrics.json").read_text())
    assert "val/acc" not in metrics and metrics["epochs"] == 2 and metrics["test/acc"] > 0.5
    assert metrics["train/loss_step"] > 0 and metrics["train/loss"] > 0
    with (run / "logs" / "metrics.csv").open() as fh:  # the step loss is logged on exactly the steps the logger writes
        steps = [int(row["step"]) for row in csv.DictReader(fh) if row["train/loss_step"]]
    assert steps and all((step + 1) % 10 == 0 for step in steps) and len(steps) == metrics["global_step"] // 10


def test_same_seed_same_metrics_and_config_reproduces(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([*TINY, "--seed", "7", "--runs-dir", str(a)]) == 0
    config = only_run(a) / "config.yaml"
    assert main(["-c", str(config), "--runs-dir", str(b)]) == 0  # the saved config names model and data
    ma, mb = (json.loads((only_run(p) / "metrics.json").read_text()) for p in (a, b))
    for key in ("test/acc", "test/loss", "val/loss", "train/loss"):
        assert ma[key] == mb[key], key


def test_resume_continues_and_refuses_a_mismatched_checkpoint(tmp_path: Path, capsys) -> None:
    assert run_cli(tmp_path, *TINY) == 0
    first = json.loads((only_run(tmp_path / "runs") / "metrics.json").read_text())
    assert run_cli(tmp_path, *TINY, "--max-epochs", "3", "--ckpt-path", "last") == 0
    metrics = json.loads((only_run(tmp_path / "runs") / "metrics-resume-1.json").read_text())
    assert metrics["epochs"] == 3  # continued in the same run folder from epoch 2
    assert json.loads((only_run(tmp_path / "runs") / "metrics.json").read_text()) == first  # kept, not overwritten
    ckpt = only_run(tmp_path / "runs") / "checkpoints" / "last.ckpt"
    line = error_line(capsys, run_cli(tmp_path, "--model", "cnn", "--model.channels", "[4]", "--ckpt-path", str(ckpt)))
    assert "does not fit" in line and "shape mismatch" in line


def test_predict_and_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_cli(tmp_path, *TINY) == 0
    best = json.loads((only_run(tmp_path / "runs") / "metrics.json").read_text())["best_checkpoint"]
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.save(tmp_path / "x.npy", (digits.images[:20] * 255 / 16).astype(np.uint8))
    capsys.readouterr()
    assert run_cli(tmp_path, "predict", "--ckpt-path", best, "--input", str(tmp_path / "x.npy")) == 0
    csv = (next((tmp_path / "runs").glob("cnn-predict/*")) / "predictions.csv").read_text().splitlines()
    labels = [int(line.split(",")[1]) for line in csv[1:]]
    assert len(labels) == 20 and np.mean(np.array(labels) == digits.target[:20]) >= 0.5
    for fmt in ("onnx", "torchscript"):
        assert run_cli(tmp_path, "export", "--ckpt-path", best, "--format", fmt) == 0
        out = capsys.readouterr().out
        diff, grown = (float(x) for x in re.search(r"example input: ([0-9.e+-]+);.*\]: ([0-9.e+-]+)\)", out).groups())
        assert diff < 1e-4 and grown < 1e-4  # the example and a batch twice as large
        card = json.loads((next((tmp_path / "runs").glob("cnn-export/*/export.json"))).read_text())
        assert card["inputs"][0]["shape"][0] == "batch" and card["preprocessing"]["mean"] == [0.3048]
