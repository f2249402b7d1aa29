"""What a user must be able to trust: checkpoints are data, resumes keep history and pick the right run,
interrupted and failed writes lose nothing, and every bad input is one line with exit code 2."""
from __future__ import annotations

import csv
import errno
import json
import os
from pathlib import Path

import pytest
import torch

from zoo.cli import main

SMALL = {"--model": "cnn", "--max-epochs": "1", "--model.channels": "[8]", "--model.hidden": "16",
         "--model.scheduler": "none", "--trainer.limit_train_batches": "3", "--trainer.limit_val_batches": "2",
         "--trainer.limit_test_batches": "2"}


def tiny(**changes: str) -> list[str]:
    """The small CNN run's arguments; ``max_epochs="2"`` changes ``--max-epochs``, ``model__x`` ``--model.x``."""
    flag = {k: "--" + (k.replace("__", ".") if "__" in k else k.replace("_", "-")) for k in changes}
    flags = {**SMALL, **{flag[k]: v for k, v in changes.items()}}
    return [x for pair in flags.items() for x in pair]


TINY = tiny()


def run(tmp_path: Path, *args: str) -> int:
    return main([*args, "--runs-dir", str(tmp_path / "runs")])


def runs_of(tmp_path: Path, model: str = "cnn") -> list[Path]:
    return sorted((tmp_path / "runs" / model).iterdir())


def last_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err), err
    return err[-1]


class _Payload:
    """Unpickling this runs a shell command: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def trained(tmp_path: Path) -> Path:
    assert run(tmp_path, *TINY) == 0
    return runs_of(tmp_path)[0]


def _poison(ckpt: Path, marker: Path) -> Path:
    bad = torch.load(ckpt, weights_only=True)
    bad["hyper_parameters"]["payload"] = _Payload(marker)
    out = ckpt.with_name("evil.ckpt")
    torch.save(bad, out)
    return out


def test_a_malicious_checkpoint_runs_no_code_anywhere(trained: Path, tmp_path: Path, capsys) -> None:
    from zoo.models import CNNClassifier
    from zoo.errors import ZooUserError

    marker = tmp_path / "pwned"
    evil = str(_poison(trained / "checkpoints" / "last.ckpt", marker))
    calls = [["predict", "--ckpt-path", evil, "--input", str(tmp_path)],
             ["export", "--ckpt-path", evil, "--format", "onnx"], [*TINY, "--ckpt-path", evil],
             ["--model", "resnet", "--model.weights", evil, "--max-epochs", "1"],
             ["--model", "gan", "--model.classifier_ckpt", evil, "--max-epochs", "1", "--trainer.limit_train_batches",
              "1", "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1"]]
    for args in calls:
        assert run(tmp_path, *args) == 2, args
        line = last_error(capsys)
        assert "evil.ckpt" in line and ("weights_only" in line or "not a zoo cnn checkpoint" in line), line
    with pytest.raises(ZooUserError, match="weights_only"):
        CNNClassifier.load_from_checkpoint(evil)
    assert not marker.exists()


def test_resume_appends_history_and_keeps_the_first_metrics(trained: Path, tmp_path: Path) -> None:
    first_csv = (trained / "logs" / "metrics.csv").read_text()
    first = json.loads((trained / "metrics.json").read_text())
    assert run(tmp_path, *tiny(max_epochs="2"), "--ckpt-path", str(trained)) == 0
    assert (trained / "logs" / "metrics.csv").read_text() == first_csv  # the first process's log is untouched
    rows = list(csv.DictReader((trained / "logs-resume-1" / "metrics.csv").open()))
    epochs = {r["epoch"] for r in rows}
    assert "1" in epochs and "0" not in epochs  # the resumed process logged only its new epoch, beside it
    assert json.loads((trained / "metrics.json").read_text()) == first
    assert json.loads((trained / "metrics-resume-1.json").read_text())["epochs"] == 2
    assert (trained / "config-resume-1.yaml").is_file()


def test_resume_past_a_onecycle_schedule_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert run(tmp_path, *tiny(model__scheduler="onecycle")) == 0
    (folder,) = runs_of(tmp_path)
    assert run(tmp_path, *tiny(model__scheduler="onecycle", max_epochs="2"), "--ckpt-path", str(folder)) == 2
    assert "schedule was built for 3 steps but this run needs 6" in last_error(capsys)


def test_last_picks_the_same_data_and_refuses_a_run_without_checkpoint(trained: Path, tmp_path: Path, capsys) -> None:
    from zoo.runs import resolve_resume

    first = json.loads((trained / "metrics.json").read_text())
    assert resolve_resume("last", tmp_path / "runs", "cnn", "digits")[1] == trained
    # no digits_rgb run: not the digits one
    assert run(tmp_path, *TINY, "--data", "digits_rgb", "--ckpt-path", "last") == 2
    assert "no run of model 'cnn' on data 'digits_rgb'" in last_error(capsys)
    empty = tmp_path / "runs" / "cnn" / "29990101-000000"  # a newer run killed before its first checkpoint
    empty.mkdir()
    (empty / "config.yaml").write_text((trained / "config.yaml").read_text())
    assert run(tmp_path, *TINY, "--ckpt-path", "last") == 2
    assert "has no checkpoint" in last_error(capsys)
    assert run(tmp_path, *TINY, "--ckpt-path", str(trained), "--output-dir", str(tmp_path / "o")) == 2
    assert "--output-dir cannot be combined with --ckpt-path" in last_error(capsys)
    assert json.loads((trained / "metrics.json").read_text()) == first


def test_a_full_disk_is_one_line_and_leaves_no_truncated_checkpoint(tmp_path: Path, capsys, monkeypatch) -> None:
    import lightning.fabric.plugins.io.torch_io as torch_io

    real = torch_io._atomic_save
    calls = {"n": 0}

    def fill_disk(checkpoint: dict, path: str) -> None:
        calls["n"] += 1
        if calls["n"] > 1:  # the first checkpoint is written, then the disk is full
            Path(path).write_bytes(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(checkpoint, path)

    monkeypatch.setattr(torch_io, "_atomic_save", fill_disk)
    assert run(tmp_path, *tiny(max_epochs="3")) == 2
    line = last_error(capsys)
    assert "No space left on device" in line and "intact checkpoints" in line
    ckpts = list((runs_of(tmp_path)[0] / "checkpoints").glob("*.ckpt"))
    assert ckpts and all(torch.load(p, weights_only=True)["epoch"] == 0 for p in ckpts)  # the good ones, whole
    assert not list((runs_of(tmp_path)[0] / "checkpoints").glob(".*tmp"))


def _interrupt(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt


def test_interrupt_before_the_first_step_says_nothing_was_saved(tmp_path: Path, capsys, monkeypatch) -> None:
    from zoo.models import CNNClassifier

    monkeypatch.setattr(CNNClassifier, "on_train_start", _interrupt, raising=False)
    assert run(tmp_path, *TINY) == 130
    assert "nothing was saved" in capsys.readouterr().out
    assert not (tmp_path / "runs" / "cnn").exists() or not runs_of(tmp_path)  # no folder holding only config.yaml


def test_interrupt_during_test_writes_the_fit_metrics(tmp_path: Path, capsys, monkeypatch) -> None:
    from zoo.models import CNNClassifier

    monkeypatch.setattr(CNNClassifier, "on_test_start", _interrupt, raising=False)
    assert run(tmp_path, *TINY) == 130
    assert "the test was interrupted" in capsys.readouterr().out
    metrics = json.loads((runs_of(tmp_path)[0] / "metrics.json").read_text())
    assert metrics["test_interrupted"] is True and "val/acc" in metrics and "test/acc" not in metrics


def _idx(path: Path, magic: int, dims: list[int], truncate: bool = False, gz: bool = True) -> None:
    import gzip

    import numpy as np

    data = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    data += np.zeros(int(np.prod(dims)), np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    packed = gzip.compress(data) if gz else b"not gzip at all"
    path.write_bytes(packed[: len(packed) // 2] if truncate else packed)


def _mnist(tmp_path: Path, kind: str) -> Path:
    raw = tmp_path / kind / "MNIST" / "raw"
    for split, n in (("train", 20), ("t10k", 10)):
        images, labels = (2049, [n]) if kind == "swapped" else (2051, [n, 28, 28]), (2051, [n, 28, 28]) \
            if kind == "swapped" else (2049, [n])
        _idx(raw / f"{split}-images-idx3-ubyte.gz", *images, truncate=kind == "truncated", gz=kind != "notgzip")
        _idx(raw / f"{split}-labels-idx1-ubyte.gz", *labels, truncate=kind == "truncated", gz=kind != "notgzip")
    return tmp_path / kind


def _write(tmp_path: Path, name: str, text: str) -> str:
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


# (id, arguments built from tmp_path, text the one-line error must contain). Add a row for each new bad input.
BAD_INPUTS = [
    ("negative epochs", lambda t: ["--model", "cnn", "--max-epochs", "-3"], "max_epochs"),
    ("negative width", lambda t: ["--model", "cnn", "--model.channels", "[-1,8]"], "channels must be positive"),
    ("dropout above 1", lambda t: ["--model", "cnn", "--model.dropout", "2"], "dropout in [0, 1)"),
    ("zero nodes", lambda t: ["--model", "cnn", "--num-nodes", "0"], "num_nodes"),
    ("gpus and accelerator", lambda t: ["--model", "cnn", "--gpus", "0", "--trainer.accelerator", "gpu"], "not both"),
    ("data that does not fit", lambda t: ["--model", "cnn", "--data", "timeseries"], "does not fit model 'cnn'"),
    ("truncated IDX", lambda t: ["--model", "cnn", "--data", "mnist", "--data-dir", str(_mnist(t, "truncated"))],
     "truncated or not gzip"),
    ("IDX not gzip", lambda t: ["--model", "cnn", "--data", "mnist", "--data-dir", str(_mnist(t, "notgzip"))],
     "truncated or not gzip"),
    ("IDX images and labels swapped", lambda t: ["--model", "cnn", "--data", "mnist", "--data-dir",
                                                 str(_mnist(t, "swapped"))], "swapped"),
    ("malformed YAML", lambda t: ["--model", "cnn", "-c", _write(t, "a.yaml", "model: [oops\n")], "not valid YAML"),
    ("tab-indented YAML", lambda t: ["--model", "cnn", "-c", _write(t, "b.yaml", "model:\n\tlr: 1\n")],
     "spaces, not tabs"),
    ("YAML list", lambda t: ["--model", "cnn", "-c", _write(t, "c.yaml", "- 1\n- 2\n")], "holds a list"),
    ("unwritable runs dir", lambda t: ["--model", "cnn", "--runs-dir", "/proc/zoo"], "pass a writable --runs-dir"),
    ("unwritable output dir", lambda t: ["--model", "cnn", "--output-dir", "/proc/zoo/x"], "writable --output-dir"),
    ("CSV with inf", lambda t: ["--model", "lstm", "--data.path", _write(t, "s.csv", "v\n" + "1\n" * 30 + "inf\n"),
                                "--data.target", "v"], "non-finite value(s) (inf), first at data row 31"),
    ("data dir is a file", lambda t: ["--model", "cnn", "--data", "mnist", "--data-dir", _write(t, "f", "x")],
     "is a file, not a folder"),
    ("negative batch size", lambda t: ["--model", "cnn", "--data.batch_size", "-4"], "batch_size must be positive"),
    ("optimizer block", lambda t: ["--model", "cnn", "-c", _write(t, "o.yaml", "optimizer:\n  class_path: SGD\n")],
     "the optimiser is a model hyperparameter: --model.optimizer"),
    ("optimizer flag", lambda t: ["--model", "cnn", "--optimizer", "SGD"], "unknown option --optimizer: the optim"),
]


@pytest.mark.parametrize("make_args,expected", [row[1:] for row in BAD_INPUTS], ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2(make_args, expected: str, tmp_path: Path, capsys) -> None:
    args = make_args(tmp_path)
    runs = [] if "--runs-dir" in args else ["--runs-dir", str(tmp_path / "runs")]
    assert main([*args, *runs, "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1"]) == 2
    line = last_error(capsys)
    assert expected in line, line
    leftovers = [p for p in (tmp_path / "runs").rglob("config.yaml")] if (tmp_path / "runs").exists() else []
    assert not leftovers, leftovers  # no run folder holding only its config


@pytest.fixture(scope="module")
def cnn_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("cnn")
    assert main([*TINY, "--runs-dir", str(root / "runs")]) == 0
    return str(next((root / "runs").glob("cnn/*/checkpoints/last.ckpt")))


def _npy(tmp_path: Path, array: object) -> str:
    import numpy as np

    np.save(tmp_path / "x.npy", array, allow_pickle=True)
    return str(tmp_path / "x.npy")


def _bomb(tmp_path: Path) -> str:
    from PIL import Image

    Image.new("L", (14000, 14000)).save(tmp_path / "big.png", optimize=False)
    return str(tmp_path / "big.png")


PREDICT_INPUTS = [
    ("1-D array", lambda t: _npy(t, __import__("numpy").zeros(5, "uint8")), "has shape (5,)"),
    ("5-D array", lambda t: _npy(t, __import__("numpy").zeros((1, 1, 8, 8, 1, ), "uint8")[..., None]), "has shape"),
    ("strings", lambda t: _npy(t, __import__("numpy").array([[["a"] * 8] * 8])), "dtype <U1"),
    ("objects", lambda t: _npy(t, __import__("numpy").array([[[object()] * 8] * 8])), "holds Python objects"),
    ("floats above 1", lambda t: _npy(t, __import__("numpy").full((2, 8, 8), 3.0)), "must be in [0, 1]"),
    ("a huge PNG", _bomb, "is not a readable image"),
]


@pytest.mark.parametrize("make_input,expected", [r[1:] for r in PREDICT_INPUTS], ids=[r[0] for r in PREDICT_INPUTS])
def test_bad_predict_input_is_one_line_exit_2(make_input, expected: str, cnn_checkpoint: str, tmp_path: Path,
                                              capsys) -> None:
    code = main(["predict", "--ckpt-path", cnn_checkpoint, "--input", make_input(tmp_path), "--runs-dir",
                 str(tmp_path / "runs")])
    assert code == 2 and expected in last_error(capsys)


def test_float_images_in_0_1_predict_like_uint8(cnn_checkpoint: str, tmp_path: Path) -> None:
    import numpy as np
    from sklearn.datasets import load_digits

    images = (load_digits().images[:8] * 255 / 16).round().astype(np.uint8)
    outputs = []
    for name, array in (("u8", images), ("f32", images.astype(np.float32) / 255)):
        np.save(tmp_path / f"{name}.npy", array)
        assert main(["predict", "--ckpt-path", cnn_checkpoint, "--input", str(tmp_path / f"{name}.npy"),
                     "--output-dir", str(tmp_path / name)]) == 0
        outputs.append([line.split(",")[1:] for line in (tmp_path / name / "predictions.csv").read_text().splitlines()])
    assert outputs[0] == outputs[1]


def test_bf16_lstm_runs_in_float32_where_the_cpu_has_no_bf16_kernels(monkeypatch) -> None:
    import zoo.models.lstm as lstm_module
    from zoo.models import LSTMForecaster

    model = LSTMForecaster(input_size=1, horizon=3, num_targets=1, hidden_size=8)
    seen: list[torch.dtype] = []
    model.lstm.register_forward_hook(lambda m, args, out: seen.append(out[0].dtype))
    x = torch.randn(4, 12, 1)
    # The bf16 path only where this CPU has the kernels (elsewhere oneDNN raises); forced off everywhere: the path
    # an AVX2-only CPU takes.
    paths = (True, False) if lstm_module.cpu_bf16_kernels() else (False,)
    for has_kernels in paths:
        monkeypatch.setattr(lstm_module, "cpu_bf16_kernels", lambda: has_kernels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert model(x).shape == (4, 3, 1)
    assert seen == [torch.bfloat16 if has else torch.float32 for has in paths]


def test_bf16_notice_states_the_measured_cost(monkeypatch) -> None:
    import zoo.precision as precision

    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: False)
    monkeypatch.setattr(precision, "cpu_bf16_kernels", lambda: False)
    note = precision.bf16_notice()
    assert note and "no native bf16" in note and "x the float32 time" in note and "32-true" in note
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: True)
    assert precision.bf16_notice() is None


def test_exports_accept_other_shapes_and_ship_what_the_caller_needs(tmp_path: Path, capsys) -> None:
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    assert run(tmp_path, "--model", "bert", "--model.backbone", "scratch", "--data.size", "120", "--max-epochs", "1",
               "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
               "--trainer.limit_test_batches", "1") == 0
    ckpt = str(next((tmp_path / "runs").glob("bert/*/checkpoints/last.ckpt")))
    assert run(tmp_path, "export", "--ckpt-path", ckpt, "--format", "onnx") == 0
    assert "[(2, 16), (2, 16)]" in capsys.readouterr().out  # checked on a longer sequence than the example's 8
    folder = next((tmp_path / "runs").glob("bert-export/*"))
    ids = Tokenizer.from_file(str(folder / "tokenizer.json")).encode("a truly wonderful film , full of life").ids
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.array([ids], dtype=np.int64)
    assert session.run(None, {"input0": x, "input1": np.ones_like(x)})[0].shape == (1, 2)
    card = json.loads((folder / "export.json").read_text())
    assert card["inputs"][0]["shape"] == ["batch", "sequence"] and "tokenizer.json" in card["notes"]


def test_an_unwritable_metrics_file_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    import zoo.runs

    def read_only(path: Path, text: str) -> None:
        if path.name.startswith("metrics"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        path.write_text(text)

    monkeypatch.setattr(zoo.runs, "atomic_write_text", read_only)
    assert run(tmp_path, *TINY) == 2
    line = last_error(capsys)
    assert "Read-only file system" in line and "intact checkpoints: best.ckpt, last.ckpt" in line


def test_data_that_fits_is_not_refused() -> None:
    from zoo.catalog import check_data_fits

    for model, data in (("resnet", "mnist"), ("gan", "fashion_mnist"), ("gnn", "cora_link"), ("bert", "sst2")):
        check_data_fits(model, data)  # raises for data that does not fit


def test_max_steps_ending_mid_epoch_finishes(tmp_path: Path) -> None:
    assert run(tmp_path, *tiny(trainer__limit_train_batches="10"), "--trainer.max_steps", "5") == 0


@pytest.mark.parametrize("load,env,expected", [
    (0.2, {}, None),  # quiet: OpenMP's spinning default, the fastest there
    (3.5, {}, "PASSIVE"),  # busy: idle threads sleep instead of fighting the other jobs
    (3.5, {"OMP_WAIT_POLICY": "ACTIVE"}, None),  # the user's choice always wins
    (3.5, {"GOMP_SPINCOUNT": "10000"}, None),
])
def test_thread_wait_policy_follows_the_load(monkeypatch: pytest.MonkeyPatch, load: float, env: dict,
                                             expected: str | None) -> None:
    from zoo.devices import choose_wait_policy

    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    environ = dict(env)
    assert choose_wait_policy(environ) == expected
    assert environ.get("OMP_WAIT_POLICY") == (expected or env.get("OMP_WAIT_POLICY"))
