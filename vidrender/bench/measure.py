"""Measurement helpers shared by bench sections: wall-clock timing, peak memory, and FLOP counting.

- `time_it` runs a function repeatedly and keeps the best and median wall-clock time;
  `time_interleaved` does so for several functions in turn, for fair comparisons on a busy machine.
- `peak_memory` measures how far the process's resident memory (RSS) rises while a function runs.
- `model_flops` counts the floating-point operations of a function with torch's FlopCounterMode, and
  `achieved_fraction` compares the resulting FLOP/s to a measured peak.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 2**20
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_SAMPLING_INTERVAL = 0.001  # seconds between RSS samples when the kernel's high-water mark cannot be reset


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of the timed runs: the fastest (`min`, the least disturbed) and the median."""

    min: float
    median: float
    repeats: int

    def rate(self, count: float) -> float:
        """Items per second when one run handles `count` items, at the fastest run."""
        return count / self.min


def time_it(
    fn: Callable[[], Any],
    repeats: int = 5,
    warmup: int = 1,
    max_seconds: float | None = None,
    setup: Callable[[], Any] | None = None,
) -> Timing:
    """Call `fn()` `warmup` times untimed, then up to `repeats` times timed (time.perf_counter).

    max_seconds: stop repeating once this much time (warm-up included) has gone by, after at least one
    timed run; keeps slow measurements bounded. setup: called untimed before every call of fn (e.g. to
    delete the previous run's output). Raises ValueError unless repeats >= 1 and warmup >= 0.
    """
    return time_interleaved({"fn": fn}, repeats, warmup, max_seconds, setup)["fn"]


def time_interleaved(
    functions: dict[str, Callable[[], Any]],
    repeats: int = 5,
    warmup: int = 1,
    max_seconds: float | None = None,
    setup: Callable[[], Any] | None = None,
) -> dict[str, Timing]:
    """`time_it` for functions to be compared: they run in turn (a, b, a, b, ...), so that a change in
    the machine's load during the measurement hits them alike. Returns name -> Timing.

    max_seconds caps the whole comparison (warm-up included), after at least one timed round; setup is
    called untimed before every call of every function.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"timing needs repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    started = time.perf_counter()
    for _ in range(warmup):
        for fn in functions.values():
            if setup is not None:
                setup()
            fn()
    durations: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            if setup is not None:
                setup()
            begin = time.perf_counter()
            fn()
            durations[name].append(time.perf_counter() - begin)
        if max_seconds is not None and time.perf_counter() - started >= max_seconds:
            break
    return {
        name: Timing(min=min(runs), median=statistics.median(runs), repeats=len(runs))
        for name, runs in durations.items()
    }


@dataclass(frozen=True)
class MemoryPeak:
    """What `peak_memory` saw: fn's return value and the process's resident memory in bytes.

    baseline_bytes: RSS just before fn. peak_bytes: the highest RSS while fn ran. method: "VmHWM" (the
    kernel's exact high-water mark) or "psutil sampling" (polled every millisecond; can miss a peak
    shorter than that).
    """

    result: Any
    baseline_bytes: int
    peak_bytes: int
    method: str

    @property
    def increase_bytes(self) -> int:
        return max(0, self.peak_bytes - self.baseline_bytes)

    @property
    def increase_mib(self) -> float:
        return self.increase_bytes / MIB


def peak_memory(fn: Callable[[], Any], method: str = "auto") -> MemoryPeak:
    """Run `fn()` and measure the peak rise of the whole process's resident memory while it runs.

    method: "hwm" resets the kernel's high-water mark (Linux: writing 5 to /proc/self/clear_refs) and
    reads VmHWM afterwards; exact, but process-wide, so memory other threads allocate meanwhile counts
    too. "sampling" polls psutil's RSS from a background thread. "auto" uses "hwm" where the kernel
    allows it, else "sampling". Memory fn frees before returning still counts (that is the point).
    """
    if method not in ("auto", "hwm", "sampling"):
        raise ValueError(f"peak_memory method must be 'auto', 'hwm' or 'sampling', got {method!r}")
    if method in ("auto", "hwm") and _reset_high_water_mark():
        baseline = _status_bytes("VmRSS")
        result = fn()
        return MemoryPeak(result, baseline, _status_bytes("VmHWM"), "VmHWM")
    if method == "hwm":
        raise RuntimeError("cannot reset the resident-memory high-water mark here (/proc/self/clear_refs)")
    return _sampled_peak(fn)


def _reset_high_water_mark() -> bool:
    """Set VmHWM back to the current RSS; False where /proc/self/clear_refs is missing or read-only."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (reported in kB) in bytes."""
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{_STATUS} has no {field} field")


def _sampled_peak(fn: Callable[[], Any]) -> MemoryPeak:
    import psutil  # installed with accelerate

    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(_SAMPLING_INTERVAL):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = fn()
        peak[0] = max(peak[0], process.memory_info().rss)
    finally:
        done.set()
        sampler.join()
    return MemoryPeak(result, baseline, peak[0], "psutil sampling")


def model_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations of one call of `fn()`, counted by torch.utils.flop_counter.FlopCounterMode.

    Counts what the counter knows: matrix products, convolutions and attention (forward and, if fn runs
    it, backward), a multiply-add being 2 FLOPs, so an (m, k) @ (k, n) product counts 2*m*k*n.
    Elementwise work (activations, normalisation, optimiser updates) is not counted.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def achieved_fraction(flops: float, seconds: float, peak_flops_per_second: float) -> float:
    """The share of a peak rate reached by doing `flops` in `seconds`: (flops / seconds) / peak."""
    if seconds <= 0 or peak_flops_per_second <= 0:
        raise ValueError(f"seconds ({seconds}) and peak FLOP/s ({peak_flops_per_second}) must be positive")
    return flops / seconds / peak_flops_per_second
