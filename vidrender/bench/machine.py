"""Bench section `machine`: what the figures were measured on, and its measured fp32 matrix-product peak.

The peak is the best FLOP/s of square fp32 `torch.mm` products at the current torch thread count; model
sections divide their achieved FLOP/s by it (`peak_flops`), so it is measured once per run and cached.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import av
import numpy as np
import torch

from vidrender.bench.measure import time_it
from vidrender.bench.registry import bench_section

# (matrix side, timed repeats): large enough for the BLAS kernels' steady state; quick mode's 2048 got
# 97-98% of 4096's rate here, so the quick peak is only slightly low
_FULL_SIZES = ((2048, 5), (4096, 3))
_QUICK_SIZES = ((1024, 3), (2048, 2))
_SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "asimd", "sve")


@bench_section("machine")
def machine_section(quick: bool) -> dict:
    """CPU, cores, threads, library versions, load, and the measured fp32 matrix-product GFLOP/s by size."""
    by_size = matmul_flops_per_second(quick, torch.get_num_threads())
    return {
        "cpu": cpu_model(),
        "simd": " ".join(flag for flag in _SIMD_FLAGS if flag in _cpu_flags()) or "unknown",
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # other work on the machine slows every figure; a load above the core count means shared cores
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "av": av.__version__,
        "numpy": np.__version__,
        "matmul_fp32_gflops": {str(side): rate / 1e9 for side, rate in by_size.items()},
        "peak_fp32_gflops": max(by_size.values()) / 1e9,
    }


def peak_flops(quick: bool = False) -> float:
    """The machine's measured peak fp32 FLOP/s (best square `torch.mm`) at the current thread count.

    Measured on first use per (quick, thread count) and cached, so sections can call it freely.
    """
    return max(matmul_flops_per_second(quick, torch.get_num_threads()).values())


@functools.cache
def matmul_flops_per_second(quick: bool, threads: int) -> dict[int, float]:
    """{matrix side n: FLOP/s} of fp32 (n, n) @ (n, n) `torch.mm`, best of several runs, 2*n^3 FLOPs each.

    `threads` is the torch thread count the caller runs at; it is part of the cache key only.
    """
    generator = torch.Generator().manual_seed(0)
    rates = {}
    for side, repeats in _QUICK_SIZES if quick else _FULL_SIZES:
        left = torch.randn(side, side, generator=generator)
        right = torch.randn(side, side, generator=generator)
        result = torch.empty(side, side)
        timing = time_it(functools.partial(torch.mm, left, right, out=result), repeats)
        rates[side] = 2 * side**3 / timing.min
    return rates


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo, else what `platform` knows)."""
    for line in _cpuinfo_lines():
        if line.startswith(("model name", "Hardware", "Model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def _cpu_flags() -> set[str]:
    for line in _cpuinfo_lines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


@functools.cache
def _cpuinfo_lines() -> tuple[str, ...]:
    try:
        return tuple(Path("/proc/cpuinfo").read_text().splitlines())
    except OSError:
        return ()
