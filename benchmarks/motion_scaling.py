"""How the cost of pipeline `motion` grows with clip length and resolution: a markdown table, then JSON.

For every clip length (32, 64, 128, 256 frames) and side (64, 128, 256 px) it times, best of `--repeats`:

* inference: `vidrender export MODEL.pt -o DIR` in process, end to end (loading the checkpoint, moving
  the character layer to every frame, writing its PNGs), into a fresh temporary folder each run, from a
  checkpoint of an untrained model at that side (`bench.untrained_checkpoint`) with that many frames;
* compose: `vidrender compose --frames N` in process, end to end, from two checkpoints of untrained models
  at that side, to H.264 `.mp4` (checkpoint loading, compositing, encoding);
* the classical baseline (`pipelines/motion/baseline.py`: median plates, difference matte, OpenCV
  tracking, cut-and-paste) on the same clip, for scale (no encoding).

Clips are a 32-frame synthetic clip repeated to the length (for export: its checkpoint's motion repeated):
the speed of each step does not depend on the content, and rendering long synthetic clips would take
longer than timing them. On a machine shared with other busy processes use `--threads 1` (with more
threads every parallel region waits for the slowest, descheduled thread).

    python benchmarks/motion_scaling.py [--frames 32 64 128 256] [--sizes 64 128 256] [--threads N]
        [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from vidrender.bench.measure import time_it
from vidrender.pipelines.motion import bench
from vidrender.pipelines.motion.baseline import baseline_compose
from vidrender.pipelines.motion.decomposition import load
from vidrender.synth import make_clip

SOURCE_FRAMES = 32


def repeated(tensor: torch.Tensor, count: int) -> torch.Tensor:
    """The first `count` items of `tensor` (T, ...) repeated along the first axis."""
    times = -(-count // tensor.shape[0])
    return tensor.repeat(times, *([1] * (tensor.dim() - 1)))[:count]


def lengthened(checkpoint: Path, count: int, path: Path) -> Path:
    """A copy of a motion checkpoint at `path` whose clips' motion (affines, camera) is repeated to `count`
    frames."""
    decomposition = load(checkpoint)
    for stack in decomposition.stacks:
        stack.background.camera = repeated(stack.background.camera, count)
        for character in stack.characters:
            character.affines = repeated(character.affines, count)
    return decomposition.save(path)


def measure(size: int, lengths: list[int], repeats: int, scratch: Path) -> list[dict]:
    """One row per clip length at `size` px: seconds and frames/s of export, compose and the baseline."""
    synth = make_clip(seed=1, size=size, frames=SOURCE_FRAMES)
    other = make_clip(seed=2, size=size, frames=SOURCE_FRAMES)
    character = bench.untrained_checkpoint(scratch / f"character-{size}.pt", size, SOURCE_FRAMES, seed=1)
    background = bench.untrained_checkpoint(scratch / f"background-{size}.pt", size, SOURCE_FRAMES, seed=2)
    rows = []
    for count in lengths:
        model = lengthened(character, count, scratch / f"export-{size}-{count}.pt")
        background_frames = repeated(other.frames, count)
        with bench.FreshFolders(scratch) as folders:
            runs = {
                "inference": (bench.export_command(model, folders), folders.next),
                "compose": (bench.compose_command(character, background, scratch / "out.mp4", count), None),
                "classical_baseline": (functools.partial(baseline_compose, repeated(synth.frames, count),
                                                         background_frames), None),
            }
            row = {"frames": count, "size_px": size}
            for name, (run, setup) in runs.items():
                seconds = time_it(run, repeats, warmup=1, max_seconds=30.0, setup=setup).min
                row[f"{name}_s"] = round(seconds, 4)
                row[f"{name}_fps"] = round(count / seconds, 1)
        rows.append(row)
        print(f"  {size} px, {count} frames: " + ", ".join(f"{k} {v}" for k, v in row.items() if k.endswith("_s")),
              flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a markdown table: seconds (frames/s) of each stage per clip length and side."""
    lines = [
        "| frames | px | export (inference) s (frames/s) | compose s (frames/s) | classical baseline s (frames/s) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        cells = [f"{row[f'{name}_s']:.3f} ({row[f'{name}_fps']:,.0f})"
                 for name in ("inference", "compose", "classical_baseline")]
        lines.append(f"| {row['frames']} | {row['size_px']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[32, 64, 128, 256], help="clip lengths")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256], help="square sides (px)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (the best is kept)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started, load_before = time.perf_counter(), _load()
    with tempfile.TemporaryDirectory(prefix="motion-scaling-") as scratch:
        rows = [row for size in args.sizes for row in measure(size, args.frames, args.repeats, Path(scratch))]
    print(markdown(rows))
    # other work on the machine slows every figure: a load above the core count means shared cores
    print(json.dumps({"threads": torch.get_num_threads(), "load_average_1min": [load_before, _load()],
                      "seconds": round(time.perf_counter() - started, 1), "rows": rows}))


def _load() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


if __name__ == "__main__":
    main()
