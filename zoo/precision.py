"""bf16 on CPUs with and without bf16 kernels: what the CPU has, and the one warning a user sees.

oneDNN implements some bf16 primitives (the LSTM among them) only where the CPU has AVX-512 (emulated) or
native bf16 (AVX512_BF16 / AMX); an AVX2-only CPU has none, and bf16 there is slow where it works at all.

Example:
    >>> isinstance(cpu_bf16_kernels(), bool)
    True
"""
from __future__ import annotations

import functools
import time
from pathlib import Path

import torch

__all__ = ["cpu_bf16_kernels", "cpu_native_bf16", "bf16_slowdown", "bf16_notice"]


@functools.lru_cache(maxsize=None)
def cpu_bf16_kernels() -> bool:
    """Whether oneDNN has bf16 kernels on this CPU (False on AVX2-only x86-64: bf16 LSTMs fail there)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


@functools.lru_cache(maxsize=None)
def cpu_native_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512_BF16 or AMX); elsewhere bf16 is emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def bf16_slowdown(size: int = 256, reps: int = 10) -> float:
    """Measured time of a bf16 matrix product over a float32 one on this CPU (a few milliseconds)."""
    def timed(x: torch.Tensor) -> float:
        x @ x  # warm-up
        start = time.perf_counter()
        for _ in range(reps):
            x @ x
        return time.perf_counter() - start

    a = torch.randn(size, size)
    return timed(a.bfloat16()) / max(timed(a), 1e-9)


def bf16_notice() -> str | None:
    """The start-up note for ``--precision bf16-*`` on a CPU without native bf16 (None where it is native)."""
    if cpu_native_bf16():
        return None
    kernels = "emulated with AVX-512" if cpu_bf16_kernels() else "without oneDNN bf16 kernels (LSTMs run in float32)"
    return (f"note: this CPU has no native bf16; bf16-mixed runs {kernels}: a matrix product measured "
            f"{bf16_slowdown():.1f}x the float32 time here; --precision 32-true is usually faster on this CPU")
