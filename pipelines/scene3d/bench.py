"""Bench section `scene3d` (`vidrender bench --only scene3d`): training-step time, memory and render time.

For `configs/scene3d/cpu.yaml` and `paper.yaml` (the reference architecture) at 64x64 and 4 view pairs
(8 images, the reference implementation's "batch 8", which takes 3.1 s a step and 2.8 GB there), in
each config's `train.mixed_precision` (bf16 autocast for paper.yaml; fp16 is a GPU setting and runs as
fp32 here): seconds per training step (forward, backward, Adam; wall-clock fastest and median of the
timed steps, and the fastest step's CPU seconds of all threads), the process's peak resident memory
and how much building the model and training raised it,
and seconds to render one novel view from one image (infer the scene, rotate, render; batch 1, fp32 as
`vidrender scene render`). The machine's 1-minute load average is recorded before and after: on shared
cores every figure is slower.

Also the random training batches used by `benchmarks/scene3d_step.py` and the tests (`random_batch`).
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from vidrender.bench.measure import MIB, peak_memory, time_it
from vidrender.bench.registry import bench_section
from vidrender.config import load_config
from vidrender.pipelines.scene3d.config import Scene3dConfig
from vidrender.pipelines.scene3d.infer import render
from vidrender.pipelines.scene3d.model import SceneRenderer, count_parameters
from vidrender.pipelines.scene3d.step import training_step

CONFIG_DIR = Path(__file__).resolve().parent.parent.parent / "configs" / "scene3d"
BENCH_CONFIGS = ("cpu", "paper")
SIZE = 64
PAIRS = 4
REFERENCE_SECONDS_PER_STEP = 3.1
REFERENCE_PEAK_GB = 2.8
TIME_STEPS = 20  # time stamps of the random batches, as the bending-bar data set


def random_batch(pairs: int, size: int, max_gap: int = 0, seed: int = 0) -> dict:
    """A training batch of random content in the data set's ranges (see `pipelines/scene3d/step.py`).

    images (pairs, 3, size, size) uniform in [0, 1]; azimuths U[0, 360), elevations U[-90, 90) degrees;
    time_a uniform in [0, 20), time_b = time_a + a gap uniform in [-max_gap, max_gap].
    """
    generator = torch.Generator().manual_seed(seed)
    time_a = torch.randint(0, TIME_STEPS, (pairs,), generator=generator)
    return {
        "image_a": torch.rand(pairs, 3, size, size, generator=generator),
        "image_b": torch.rand(pairs, 3, size, size, generator=generator),
        "azimuth_a": torch.rand(pairs, generator=generator) * 360,
        "azimuth_b": torch.rand(pairs, generator=generator) * 360,
        "elevation_a": torch.rand(pairs, generator=generator) * 180 - 90,
        "elevation_b": torch.rand(pairs, generator=generator) * 180 - 90,
        "time_a": time_a,
        "time_b": time_a + torch.randint(-max_gap, max_gap + 1, (pairs,), generator=generator),
    }


def bench_config(
    name_or_path: str | os.PathLike, size: int = SIZE, overrides: list[str] | None = None
) -> Scene3dConfig:
    """A preset (`cpu`, `paper`, `temporal`) or YAML file, at image size `size`."""
    path = CONFIG_DIR / f"{name_or_path}.yaml" if str(name_or_path) in ("cpu", "paper", "temporal") else name_or_path
    return load_config(Scene3dConfig, path, [f"model.image_size={size}", *(overrides or [])])


def autocast_dtype(config: Scene3dConfig, precision: str = "config") -> torch.dtype | None:
    """bfloat16 when `precision` (or, for "config", train.mixed_precision) is bf16; else None (fp32)."""
    chosen = config.train.mixed_precision if precision == "config" else precision
    return torch.bfloat16 if chosen == "bf16" else None


def step_function(
    model: torch.nn.Module, config: Scene3dConfig, batch: dict, dtype: torch.dtype | None, step=training_step
) -> Callable[[], dict]:
    """One optimizer step on `batch` per call (Adam at the config's lr); each call returns its logs.

    `step` is the loss function (training_step, or a torch.compile'd version of it); autocast to
    `dtype` around it when given, as the training loop does.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)

    def run() -> dict:
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss, logs = step(model, batch, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return logs

    return run


def measure_config(name: str, quick: bool, size: int = SIZE, pairs: int = PAIRS) -> dict:
    """Step time, memory and render time of one preset at `size` px and `pairs` view pairs."""
    config = bench_config(name, size)
    dtype = autocast_dtype(config)
    batch = random_batch(pairs, size, config.temporal.max_gap)
    warmup, repeats = (1, 2) if quick else (2, 5)

    def build_and_warm_up():
        torch.manual_seed(0)
        model = SceneRenderer.from_config(config)
        run = step_function(model, config, batch, dtype)
        for _ in range(warmup):  # first steps pay for allocations and oneDNN kernel choices
            run()
        return model, run

    _release_freed_memory()  # so that memory a previous section freed does not hide this one's rise
    memory = peak_memory(build_and_warm_up)
    model, run = memory.result
    cpu_seconds: list[float] = []

    def timed_run() -> None:
        started = time.process_time()
        run()
        cpu_seconds.append(time.process_time() - started)

    step_timing = time_it(timed_run, repeats=repeats, warmup=0)

    model.eval()
    image = batch["image_a"][0]
    with torch.inference_mode():  # in fp32, as `vidrender scene render` runs
        render_timing = time_it(lambda: render(model, image, azimuth=40.0, elevation=10.0), repeats=repeats + 1)
    return {
        "precision": "bf16" if dtype is not None else "fp32",
        "parameters": count_parameters(model),
        "scene_shape": list(model.scene_shape),
        "step_seconds": step_timing.min,
        "step_seconds_median": step_timing.median,
        # CPU seconds of all threads: what the step costs, less sensitive than wall time to other processes
        "step_cpu_seconds": min(cpu_seconds),
        "images_per_second": 2 * pairs / step_timing.min,
        "peak_rss_mb": memory.peak_bytes / MIB,
        "training_memory_mb": memory.increase_mib,
        "render_seconds_per_image": render_timing.min,
    }


def _release_freed_memory() -> None:
    """Return the C allocator's free memory to the system (glibc `malloc_trim`), so RSS shows live memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: resident memory stays an upper bound
        pass


@bench_section("scene3d")
def scene3d_section(quick: bool) -> dict:
    """cpu.yaml and paper.yaml at 64 px, 4 pairs (8 images) a step; paper.yaml's ratio to the reference."""
    figures: dict = {
        "size": SIZE,
        "images_per_step": 2 * PAIRS,
        "threads": torch.get_num_threads(),
        "load_average_1min_before": round(os.getloadavg()[0], 2),
    }
    for name in BENCH_CONFIGS:
        figures[name] = measure_config(name, quick)
    figures["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    paper = figures["paper"]
    # the reference figures: its public code on a CPU like this one (see docs/design.md section 6)
    paper["step_time_vs_reference"] = paper["step_seconds"] / REFERENCE_SECONDS_PER_STEP
    paper["peak_memory_vs_reference"] = paper["peak_rss_mb"] / (REFERENCE_PEAK_GB * 1024)
    return figures
