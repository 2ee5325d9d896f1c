"""Time one `scene3d` training step (forward + backward + Adam) and its peak memory on this machine.

Runs the swap-rendering step of `pipelines/scene3d/step.py` on random images and poses, by default at the
reference architecture (`configs/scene3d/paper.yaml`), 64x64, 4 pairs = 8 images (the reference's
"batch 8": its batches count images, two per pair), 2 threads. Prints one line per timed step, then one
JSON object on the last line: wall and CPU seconds per step (min, median), peak resident memory (MB)
and the settings.

On a machine shared with other busy processes, run it with `OMP_WAIT_POLICY=PASSIVE`: with the default
(spinning) OpenMP threads a step measured here took 11-18 s instead of 2.2 s while another process held
a core, because every parallel region waits for a thread that is not scheduled. Under such load
`--threads 1` is often faster than 2, and the CPU seconds (with the load average, both in the JSON)
are the figure that stays comparable: 1.1-1.3 s a paper.yaml bf16 step on one core of this machine.

    python benchmarks/scene3d_step.py [--config configs/scene3d/paper.yaml] [--size 64] [--pairs 4]
        [--threads 2] [--steps 6] [--warmup 2] [--precision config|no|bf16] [--compile]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time

import torch

from vidrender.pipelines.scene3d.bench import CONFIG_DIR, autocast_dtype, bench_config, random_batch, step_function
from vidrender.pipelines.scene3d.model import SceneRenderer, count_parameters
from vidrender.pipelines.scene3d.step import training_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG_DIR / "paper.yaml"), help="scene3d YAML config")
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
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    config = bench_config(args.config, args.size)
    if args.precision == "config" and config.train.mixed_precision == "fp16":
        raise SystemExit("fp16 autocast is a GPU setting; benchmark with --precision no or bf16")
    dtype = autocast_dtype(config, args.precision)
    torch.manual_seed(0)
    model = SceneRenderer.from_config(config)
    # The step calls the model through several methods, so compile the whole step (it graph-breaks only
    # at the final .item() of its logs).
    step = torch.compile(training_step) if args.compile else training_step
    batch = random_batch(args.pairs, args.size, config.temporal.max_gap)
    run = step_function(model, config, batch, dtype, step)

    durations, cpu_times = [], []
    for index in range(args.warmup + args.steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        logs = run()
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
        "load_average_1min": round(os.getloadavg()[0], 2),
        "parameters": count_parameters(model),
        "scene_shape": list(model.scene_shape),
        "config": args.config,
        "size": args.size,
        "pairs": args.pairs,
        "images_per_step": 2 * args.pairs,
        "threads": args.threads,
        "precision": "bf16" if dtype is not None else "fp32",
        "compile": args.compile,
        "torch": torch.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
