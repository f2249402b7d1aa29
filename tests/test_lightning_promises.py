"""Lightning's promises for real: W&B offline tracking, CPU DDP with two processes (Lightning's launcher and
torchrun), resume after kill -9, a checkpoint on Ctrl-C / SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch

from tests.conftest import REPO
from zoo.cli import main

TINY = ["--model", "cnn", "--model.channels", "[16, 32]", "--model.hidden", "32", "--model.scheduler", "none",
        "--model.lr", "0.01", "--seed", "3"]


def train_py(*args: str, **kwargs) -> subprocess.Popen:
    """``python train.py ARGS`` as from a terminal: SIGINT at its default disposition (a shell that starts a
    job in the background, as CI runners may, hands it SIGINT ignored, and Ctrl-C would never arrive)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    return subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kwargs)


def metrics_of(runs: Path) -> dict:
    (path,) = runs.glob("cnn/*/metrics.json")
    return json.loads(path.read_text())


def wandb_records(path: Path) -> Iterator:
    """Records of a W&B ``.wandb`` file (LevelDB-style log: 7-byte header, 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, buf = path.read_bytes(), 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        if pos + 7 + length > len(data):  # the W&B service is still writing this record: the caller reads again
            return
        buf, pos = buf + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL or LAST fragment
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def test_wandb_offline_run_holds_test_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no key anywhere
    runs = tmp_path / "runs"
    assert main([*TINY, "--max-epochs", "1", "--logger", "wandb", "--wandb-tags", "ci", "--runs-dir", str(runs)]) == 0
    assert "wandb sync" in capsys.readouterr().out
    (run_file,) = runs.glob("cnn/*/wandb/offline-run-*/run-*.wandb")
    summary: dict = {}
    for _ in range(100):  # the wandb service process may still be flushing the file
        for record in wandb_records(run_file):
            if record.WhichOneof("record_type") == "summary":
                summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                for item in record.summary.update})
        if "test/acc" in summary:
            break
        time.sleep(0.2)
    metrics = metrics_of(runs)
    assert summary["test/acc"] == pytest.approx(metrics["test/acc"]) and "val/loss" in summary
    run_dir = run_file.parents[2]
    assert (run_dir / "wandb_run_id.txt").read_text() in run_file.name  # a resume continues this W&B run


def test_kill_9_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    args = [*TINY, "--max-epochs", "4", "--data.batch_size", "16", "--no-early-stopping", "--threads", "1"]
    reference = train_py(*args, "--runs-dir", str(tmp_path / "ref"))
    victim = train_py(*args, "--runs-dir", str(tmp_path / "crash"))
    last = None
    deadline = time.time() + 240
    while time.time() < deadline and victim.poll() is None:
        last = next((tmp_path / "crash").glob("cnn/*/checkpoints/last.ckpt"), None)
        if last is not None:
            break
        time.sleep(0.05)
    time.sleep(0.1)  # into the next epoch
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert last is not None and victim.returncode == -signal.SIGKILL
    assert torch.load(last, weights_only=True)["epoch"] < 3  # it really stopped before the end
    resumed = train_py(*args, "--runs-dir", str(tmp_path / "crash"), "--ckpt-path", "last")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out[-3000:]
    reference.communicate(timeout=300)
    a, b = metrics_of(tmp_path / "ref"), metrics_of(tmp_path / "crash")
    for key in ("test/acc", "test/loss", "val/loss", "train/loss", "epochs", "global_step"):
        assert a[key] == b[key], key


def test_sigint_saves_a_checkpoint_and_says_how_to_resume(tmp_path: Path) -> None:
    proc = train_py(*TINY, "--max-epochs", "50", "--data.batch_size", "16", "--runs-dir", str(tmp_path))
    deadline = time.time() + 240
    while time.time() < deadline and not list(tmp_path.glob("cnn/*/checkpoints/last.ckpt")):
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:]
    assert "--ckpt-path" in out and list(tmp_path.glob("cnn/*/checkpoints/interrupted.ckpt"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(nodes: int, runs: Path, args: list[str]) -> list[subprocess.Popen]:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    if nodes == 1:
        return [subprocess.Popen([*torchrun, "--standalone", "train.py", *args], cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)]
    endpoint = f"127.0.0.1:{_free_port()}"  # two "nodes" on this machine, as on a cluster
    return [subprocess.Popen([*torchrun, "--nnodes", "2", "--node_rank", str(rank), "--rdzv-backend", "c10d",
                              "--rdzv-endpoint", endpoint, "--rdzv-id", "zoo-test", "train.py", *args, "--num-nodes",
                              "2"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for rank in range(2)]


@pytest.mark.parametrize("nodes", [1, pytest.param(2, marks=pytest.mark.slow)])  # 2 nodes x 2: four processes
def test_ddp_launched_by_lightning_and_by_torchrun_share_one_folder_and_agree(tmp_path: Path, nodes: int) -> None:
    """CPU DDP for real: Lightning's own launcher (``--trainer.devices 2``) and torchrun's ranks each write one
    run folder from rank 0, count both shards in the test metric and agree with each other."""
    args = [*TINY, "--max-epochs", "1", "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--threads", "1"]
    launched = _torchrun(nodes, tmp_path / "torchrun", [*args, "--trainer.devices", "2", "--runs-dir",
                                                        str(tmp_path / "torchrun")])
    reference = train_py(*args, "--trainer.devices", str(2 * nodes), "--runs-dir", str(tmp_path / "lightning"))
    outputs = []
    for proc in [*launched, reference]:
        out, _ = proc.communicate(timeout=400)
        assert proc.returncode == 0, out[-3000:]
        outputs.append(out)
    assert f"MEMBER: {2 * nodes}/{2 * nodes}" in outputs[-1]  # Lightning really started the other processes
    for runs in (tmp_path / "torchrun", tmp_path / "lightning"):
        assert len(list(runs.glob("cnn/*"))) == 1  # every rank of every node in one folder
        assert len(list(runs.glob("cnn/*/config.yaml"))) == 1 and len(list(runs.glob("cnn/*/metrics.json"))) == 1
    a, b = metrics_of(tmp_path / "torchrun"), metrics_of(tmp_path / "lightning")
    for key in ("test/acc", "test/loss", "val/acc"):
        assert a[key] == pytest.approx(b[key], abs=1e-6), key
    if nodes == 1:  # the synced test accuracy is the whole test split's, not one rank's shard
        from zoo.datamodules.images import DigitsDataModule
        from zoo.models.cnn import CNNClassifier

        model = CNNClassifier.load_from_checkpoint(b["best_checkpoint"]).eval()
        dm = DigitsDataModule(seed=42)
        dm.setup()
        with torch.no_grad():
            correct = sum((model(x).argmax(1) == y).sum().item() for x, y in dm.test_dataloader())
        assert b["test/acc"] == pytest.approx(correct / len(dm.splits["test"][1]), abs=1e-6)


def test_max_time_stops_a_run_within_its_budget(tmp_path: Path) -> None:
    """``--trainer.max_time`` is a hard budget (the zoo's own Timer carries it; Lightning would drop it)."""
    args = [*TINY, "--max-epochs", "500", "--no-early-stopping", "--trainer.max_time", "00:00:00:03", "--threads", "1",
            "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1", "--runs-dir", str(tmp_path)]
    assert main(args) == 0
    metrics = metrics_of(tmp_path)
    assert metrics["epochs"] < 500 and metrics["train_time_s"] < 10
