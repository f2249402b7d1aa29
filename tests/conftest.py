"""Shared fixtures: one tiny CPU Trainer factory, every run inside ``tmp_path``."""
from __future__ import annotations

import os

# Before torch loads: idle OpenMP threads sleep instead of spinning, which keeps oversubscribed
# CPUs (2 cores, DDP workers, other jobs) from slowing down by an order of magnitude.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ZOO_OFFLINE", "1")  # pretrained `auto` reads caches only (zoo.pretrained.offline)

import socket  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import lightning as L  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# One intra-op thread: the test models are tiny, and on 2 cores (shared with DDP workers and
# subprocess runs) a second OpenMP thread costs far more than it gives.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def make_trainer(tmp_path: Path) -> Callable[..., L.Trainer]:
    """Build a quiet CPU Trainer rooted in ``tmp_path``; keyword arguments override the defaults."""

    def factory(**overrides: Any) -> L.Trainer:
        kwargs = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                      deterministic=True)
        kwargs.update(overrides)
        return L.Trainer(**kwargs)

    return factory


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests that need it are skipped where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture
def build_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """``build_cli(model, data, *cli_args)``: the CLI's model, DataModule and Trainer, built but not run."""
    from zoo.cli import zoo_parser
    from zoo.registry import get_model_entry
    from zoo.training import ZooCLI, _trainer_defaults

    monkeypatch.setattr("sys.argv", ["train.py"])  # as fit_and_test does: LightningCLI reads only `args`

    def build(model: str, data: str, *cli_args: str) -> ZooCLI:
        entry = get_model_entry(model)
        args = zoo_parser().parse_args(["--runs-dir", str(tmp_path / "runs")])
        return ZooCLI(entry, data, args, run=False, args=list(cli_args), save_config_callback=None,
                      trainer_defaults=_trainer_defaults(entry, args), parser_kwargs={"exit_on_error": False})

    return build


def _loopback(address: object) -> bool:
    host = address[0] if isinstance(address, tuple) else None
    return host is None or str(host).startswith("127.") or host in ("localhost", "::1", "0.0.0.0")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Tests never touch the network: a connection outside loopback is refused (as the offline machine would)
    and fails the test at teardown, even where the code under test catches the error."""
    attempts: list[str] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(sock: socket.socket, address: object) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address):
            attempts.append(repr(address))
            raise ConnectionRefusedError(f"test tried to reach {address!r}: tests must not touch the network")

    def connect(sock: socket.socket, address: object) -> None:
        check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: object) -> int:
        check(sock, address)
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield
    assert not attempts, f"the test tried to use the network: {attempts}"
