"""Compose quality (issue 4, "Done when"): A's character with A's motion over B's background, against the truth.

Given two synthetic truth folders (`vidrender samples`) and a motion checkpoint trained on each, runs the
real command `vidrender compose --character A.pt --background B.pt -o OUT/compose` into a PNG folder
(lossless, so the codec is not measured) and scores it against the true re-render: A's true sprite moved
by A's true affines over B's true plate (`vidrender.synth.recompose`), at the frames compose writes
(B's size and frame rate: output frame i shows A's motion at time i / fps_B). The classical cut-and-paste
(`pipelines/motion/baseline.py`: temporal-median plate and difference matte of A, OpenCV-tracked
motion, pasted onto B's temporal-median plate) is scored the same way. Metrics (`vidrender.metrics`):
PSNR and SSIM over whole frames, and PSNR over the character's area (the true matte dilated by 2 px),
which the plate cannot dominate. Prints a markdown table, then one JSON object on the last line.

    python benchmarks/compose_table.py TRUTH_A TRUTH_B --checkpoints A.pt B.pt [--out DIR]
    python benchmarks/compose_table.py TRUTH_A TRUTH_B --train [--variant V] [--set key=value ...] [--out DIR]

`--train` first runs `vidrender train TRUTH -o DIR/{a,b}.pt` with default settings (the default
variant, frame-pair, unless `--variant`; `--affines` and `--set key=value` are passed on).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vidrender import metrics
from vidrender.io.video import read_video
from vidrender.pipelines.motion.background import median_plate
from vidrender.pipelines.motion.baseline import baseline_decompose, character_layer, paste
from vidrender.synth import read_truth, recompose


def vidrender(*args) -> float:
    """Run `vidrender ARGS` as a user would; returns its wall time in seconds, raises if it fails."""
    command = [sys.executable, "-m", "vidrender", *[str(arg) for arg in args]]
    print("$ vidrender " + " ".join(str(arg) for arg in args), file=sys.stderr, flush=True)
    started = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise SystemExit(f"vidrender {args[0]} failed with exit code {result.returncode}")
    return time.perf_counter() - started


def output_indices(source_frames: int, source_fps: float, fps: float) -> list[int]:
    """Which source frame each output frame shows when a motion of `source_frames` at `source_fps` is
    written at `fps` (compose's default length: the motion played once)."""
    count = max(1, round(source_frames * fps / source_fps))
    return [round(i / fps * source_fps) % source_frames for i in range(count)]


def character_area(clip, size: tuple[int, int], affines: torch.Tensor) -> torch.Tensor:
    """(T, 1, H, W) bool: the true character's matte on a (W, H) frame, dilated by 2 px."""
    white = recompose(clip, torch.ones(3, size[1], size[0]), affines)
    black = recompose(clip, torch.zeros(3, size[1], size[0]), affines)
    alpha = 1 - (white - black)[:, :1]
    return F.max_pool2d(alpha, 5, stride=1, padding=2) > 1 / 255


def scores(frames: torch.Tensor, truth: torch.Tensor, area: torch.Tensor) -> dict[str, float]:
    inside = area.expand_as(truth)
    return {"psnr": metrics.psnr(frames, truth), "ssim": metrics.ssim(frames, truth),
            "character_psnr": metrics.psnr(frames[inside], truth[inside])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("truth_a", type=Path, help="truth folder of the character's clip")
    parser.add_argument("truth_b", type=Path, help="truth folder of the background's clip")
    parser.add_argument("--checkpoints", type=Path, nargs=2, metavar=("A_PT", "B_PT"))
    parser.add_argument("--train", action="store_true", help="train DIR/a.pt and DIR/b.pt first")
    parser.add_argument("--variant", help="for --train (default: vidrender train's default)")
    parser.add_argument("--affines", help="for --train --variant known: truth (default) or track")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], help="for --train: key=value")
    parser.add_argument("--out", type=Path, default=Path("compose-table"))
    args = parser.parse_args()
    if args.train == (args.checkpoints is not None):
        parser.error("give either --checkpoints A.pt B.pt or --train")

    args.out.mkdir(parents=True, exist_ok=True)
    seconds = {}
    if args.train:
        checkpoints = [args.out / "a.pt", args.out / "b.pt"]
        options = [*(["--variant", args.variant] if args.variant else []),
                   *(["--affines", args.affines] if args.affines else []),
                   *[item for override in args.overrides for item in ("--set", override)]]
        for name, truth_dir, checkpoint in zip("ab", (args.truth_a, args.truth_b), checkpoints, strict=True):
            seconds[f"train_{name}"] = vidrender("train", truth_dir, "-o", checkpoint, "--cpu", *options)
    else:
        checkpoints = list(args.checkpoints)

    composed = args.out / "compose"  # an earlier run's PNG sequence there is replaced
    seconds["compose"] = vidrender("compose", "--character", checkpoints[0], "--background", checkpoints[1],
                                   "-o", composed)
    frames, _ = read_video(composed)

    clip_a, clip_b = read_truth(args.truth_a), read_truth(args.truth_b)
    indices = output_indices(clip_a.num_frames, clip_a.fps, clip_b.fps)
    truth = recompose(clip_a, clip_b.background, clip_a.affines[indices])
    if frames.shape != truth.shape:
        raise SystemExit(f"compose wrote {tuple(frames.shape)} frames, the true re-render has {tuple(truth.shape)}")
    area = character_area(clip_a, (clip_b.width, clip_b.height), clip_a.affines[indices])

    started = time.perf_counter()
    layers = baseline_decompose(clip_a.frames, clip_a.reference)
    premultiplied, alpha = character_layer(clip_a.frames, layers)
    classical = paste(premultiplied, alpha, layers.affines[indices].float(), median_plate(clip_b.frames))
    seconds["classical"] = time.perf_counter() - started

    rows = {"model": scores(frames, truth, area), "classical": scores(classical, truth, area)}
    variant = torch.load(checkpoints[0], weights_only=True)["artifact"].get("variant", "?")
    print(f"\n{args.truth_a.name} character on {args.truth_b.name} background, {len(indices)} frames of "
          f"{clip_b.width}x{clip_b.height} at {clip_b.fps:g} fps\n")
    print("| method | PSNR (dB) | SSIM | character-area PSNR (dB) |\n|---|---|---|---|")
    trained = f"{variant}, --affines {args.affines}" if args.train and args.affines else variant
    names = {"model": f"vidrender compose ({trained} models)", "classical": "classical cut-and-paste"}
    for key, row in rows.items():
        print(f"| {names[key]} | {row['psnr']:.2f} | {row['ssim']:.4f} | {row['character_psnr']:.2f} |")
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "load_average": os.getloadavg()[0]}
    print(json.dumps({"truth_a": str(args.truth_a), "truth_b": str(args.truth_b),
                      "checkpoints": [str(path) for path in checkpoints], "variant": variant,
                      "frames": len(indices), "size": [clip_b.width, clip_b.height], "fps": clip_b.fps,
                      **rows, "beats_classical": rows["model"]["psnr"] > rows["classical"]["psnr"],
                      "seconds": seconds, "machine": machine}))


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    main()
