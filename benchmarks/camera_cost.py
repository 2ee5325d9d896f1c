"""What a moving camera costs: `vidrender train` + `vidrender export` end to end, moving against static.

Makes two synthetic clips of the same seed and size (`vidrender samples`): one filmed by a static camera,
one by a moving one (`--camera`, default pan-zoom), and times, as separate processes, exactly what a user
runs on each: `vidrender train CLIP -o m.pt` (every default) then `vidrender export m.pt -o layers`.
Runs alternate static, moving, static, moving, ... so that a drift in the machine's speed touches both.
Prints the wall-clock seconds of each run, the median of each clip and their ratio, then one JSON line
with the machine and its load (time it on an idle machine: two busy processes on 2 cores distort
each other's timings badly).

    python benchmarks/camera_cost.py [--runs 1] [--size 128] [--frames 64] [--seed 0] [--camera pan-zoom]
        [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def vidrender(*args: str) -> None:
    """Run `vidrender ARGS` as the user's shell would (a new process), failing loudly."""
    subprocess.run([sys.executable, "-m", "vidrender", *args], check=True, stdout=subprocess.DEVNULL)


def train_and_export(clip: Path, work: Path) -> float:
    """Wall-clock seconds of `vidrender train CLIP -o m.pt` then `vidrender export m.pt -o layers`."""
    started = time.perf_counter()
    vidrender("train", str(clip), "-o", str(work / "m.pt"), "--overwrite")
    vidrender("export", str(work / "m.pt"), "-o", str(work / "layers"), "--overwrite")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--camera", default="pan-zoom")
    parser.add_argument("--out", type=Path, default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        work = args.out or Path(temporary)
        clips = {}
        for name, camera in (("static", []), ("moving", ["--camera", args.camera])):
            folder = work / name
            vidrender("samples", str(folder), "-n", "1", "--size", str(args.size), "--frames", str(args.frames),
                      "--seed", str(args.seed), "--overwrite", *camera)
            clips[name] = folder / "clip0"
        load_before = os.getloadavg()[0]
        seconds = {"static": [], "moving": []}
        for _ in range(args.runs):
            for name, clip in clips.items():
                seconds[name].append(train_and_export(clip, clip.parent))
                print(f"{name}: {seconds[name][-1]:.1f} s", flush=True)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"\n| clip | train + export (s, median of {args.runs}) |\n|---|---|")
    for name, value in median.items():
        print(f"| {name} | {value:.0f} |")
    print(f"\nmoving / static: {median['moving'] / median['static']:.2f}")
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "load_average_before": load_before, "load_average_after": os.getloadavg()[0]}
    print(json.dumps({"machine": machine, "size": args.size, "frames": args.frames, "seed": args.seed,
                      "camera": args.camera, "seconds": seconds, "ratio": median["moving"] / median["static"]}))


if __name__ == "__main__":
    main()
