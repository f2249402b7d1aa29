"""The Trainer's accelerator settings for ``--gpus N`` (shared by fit, predict, export and serve) and the CPU
thread policy chosen before torch loads.

Example:
    >>> device_settings(0, None)
    {'accelerator': 'cpu', 'devices': 1}
"""
from __future__ import annotations

import os
from typing import Any

from zoo.errors import ZooUserError

__all__ = ["device_settings", "machine_is_busy", "choose_wait_policy"]


def machine_is_busy() -> bool:
    """Other work competes for this process's CPUs: the 1-minute load average is at least half of them (>= 1)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average on this platform: assume contention, the safe side
        return True
    return load >= max(1.0, cpus / 2)


def choose_wait_policy(environ: dict[str, str] | None = None) -> str | None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` when the machine is busy (idle OpenMP threads then sleep instead of spinning
    against the other jobs); on a quiet machine keep OpenMP's spinning default, which is fastest there. A user's
    ``OMP_WAIT_POLICY`` / ``GOMP_SPINCOUNT`` always wins. Returns what was set (None: nothing)."""
    env = os.environ if environ is None else environ
    if {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(env) or not machine_is_busy():
        return None
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return "PASSIVE"


def device_settings(gpus: int | None, num_nodes: int | None) -> dict[str, Any]:
    """Trainer accelerator/devices/strategy for ``--gpus N`` (None: auto, one device). Models that
    cannot use several devices are refused after parsing, where ``--trainer.devices`` is seen too."""
    if gpus is None:
        return {"accelerator": "auto", "devices": 1}
    if gpus < 0:
        raise ZooUserError(f"--gpus must be >= 0, got {gpus}")
    if gpus == 0:
        return {"accelerator": "cpu", "devices": 1}
    import torch

    available = torch.cuda.device_count()
    if gpus > available:
        raise ZooUserError(f"--gpus {gpus} asked for {gpus} GPU(s) but {available} is/are available on this "
                           "machine; use --gpus 0 for CPU or leave --gpus out")
    return {"accelerator": "gpu", "devices": gpus, "strategy": "ddp" if gpus > 1 or (num_nodes or 1) > 1 else "auto"}
