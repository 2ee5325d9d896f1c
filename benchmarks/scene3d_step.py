"""Time one `scene3d` training step (forward + backward + Adam) and its peak memory on this machine.

Runs the swap-rendering step of `pipelines/scene3d/step.py` on random images and poses, by default at the
reference architecture (`configs/scene3d/paper.yaml`), 64x64, 4 pairs = 8 images (the reference's
"batch 8": its batches count images, two per pair), 2 threads. Prints one line per timed step, then one
JSON object on the last line: wall and CPU seconds per step (min, median), peak resident memory (MB)
and the settings.

On a machine shared with other busy processes, run it with `OMP_WAIT_POLICY=PASSIVE`: with the default
(spinning) OpenMP threads a step measured here took 11-18 s instead of 2.2 s while another process held
a core, because every parallel region waits for a thread that is not scheduled.

    python benchmarks/scene3d_step.py [--config configs/scene3d/paper.yaml] [--size 64] [--pairs 4]
        [--threads 2] [--steps 6] [--warmup 2] [--precision config|no|bf16] [--compile] [--channels-last]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import torch

from pipelines.scene3d.config import Scene3dConfig
from pipelines.scene3d.model import SceneRenderer, count_parameters
from pipelines.scene3d.step import training_step
from vidrender.config import load_config

PAPER_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "scene3d" / "paper.yaml"


def random_batch(pairs: int, size: int, timesteps: int, max_gap: int, generator: torch.Generator) -> dict:
    """Random images in [0, 1], poses in the data set's ranges, time pairs within max_gap."""
    time_a = torch.randint(0, 20, (pairs,), generator=generator)
    gap = torch.randint(-max_gap, max_gap + 1, (pairs,), generator=generator) if timesteps > 1 else 0
    return {
        "image_a": torch.rand(pairs, 3, size, size, generator=generator),
        "image_b": torch.rand(pairs, 3, size, size, generator=generator),
        "azimuth_a": torch.rand(pairs, generator=generator) * 360,
        "azimuth_b": torch.rand(pairs, generator=generator) * 360,
        "elevation_a": torch.rand(pairs, generator=generator) * 180 - 90,
        "elevation_b": torch.rand(pairs, generator=generator) * 180 - 90,
        "time_a": time_a,
        "time_b": time_a + gap,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(PAPER_CONFIG), help="scene3d YAML config")
    parser.add_argument("--size", type=int, default=64, help="image size (overrides the config)")
    parser.add_argument("--pairs", type=int, default=4, help="view pairs per step (2 images each)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocator, oneDNN caches)")
    parser.add_argument(
        "--precision",
        choices=["config", "no", "bf16"],
        default="config",
        help="autocast: the config's train.mixed_precision (default), fp32 (no) or bfloat16",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the training step")
    parser.add_argument("--channels-last", action="store_true", help="3-D convolutions in channels_last_3d")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    overrides = [f"model.image_size={args.size}"]
    if args.channels_last:
        overrides.append("model.channels_last=true")
    config = load_config(Scene3dConfig, args.config, overrides)
    precision = config.train.mixed_precision if args.precision == "config" else args.precision
    if precision == "fp16":
        raise SystemExit("fp16 autocast is a GPU setting; benchmark with --precision no or bf16")
    model = SceneRenderer.from_config(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    # The step calls the model through several methods, so compile the whole step (it graph-breaks only
    # at the final .item() of its logs).
    step = torch.compile(training_step) if args.compile else training_step
    generator = torch.Generator().manual_seed(0)

    durations, cpu_times = [], []
    for index in range(args.warmup + args.steps):
        batch = random_batch(args.pairs, args.size, config.temporal.timesteps, config.temporal.max_gap, generator)
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss, logs = step(model, batch, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        elapsed, cpu_elapsed = time.perf_counter() - start, time.process_time() - cpu_start
        if index >= args.warmup:
            durations.append(elapsed)
            cpu_times.append(cpu_elapsed)
        label = " (warm-up)" if index < args.warmup else ""
        print(f"step {index}{label}: {elapsed:.3f} s wall, {cpu_elapsed:.3f} s CPU, loss {logs['loss']:.4f}")

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    result = {
        "seconds_per_step_min": round(min(durations), 4),
        "seconds_per_step_median": round(statistics.median(durations), 4),
        # CPU seconds of all threads: less sensitive than wall time to other processes on the machine.
        "cpu_seconds_per_step_min": round(min(cpu_times), 4),
        "cpu_seconds_per_step_median": round(statistics.median(cpu_times), 4),
        "peak_rss_mb": round(peak_mb, 1),
        "parameters": count_parameters(model),
        "scene_shape": list(model.scene_shape),
        "config": args.config,
        "size": args.size,
        "pairs": args.pairs,
        "images_per_step": 2 * args.pairs,
        "threads": args.threads,
        "precision": precision,
        "compile": args.compile,
        "channels_last": config.model.channels_last,
        "torch": torch.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
