"""The small-character table of docs/results.md: non-square clips with small characters, every default.

For each frame shape (16:9, 9:16, 4:3, 21:9), character size (3 % and 8 % of the frame) and seed, makes
the synthetic clip with truth and does what `vidrender train CLIP -o m.pt` does with every default
(variant frame-pair, no labels), scored as `vidrender eval m.pt --truth DIR --baseline classical` does.
It is `motion_table.py` over a grid: the same clip folders and cached results (OUT/seedN-WxH-coverC/), so
runs of either script fill the same cache and this one only prints what is missing. A row passes when the
character layer is not empty, matte IoU >= 0.95 and the plate >= 30 dB.

    python benchmarks/small_character_table.py [--seeds 0 1 2] [--out DIR] [--frames 64] [--only-cached]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch
from motion_table import cached_variant, clip_folder_name

from vidrender.synth import make_clip, write_truth

SHAPES = {"16:9": (320, 180), "9:16": (180, 320), "4:3": (240, 180), "21:9": (336, 144)}
COVERAGES = (0.03, 0.08)
VARIANT = "frame-pair"  # MotionConfig's default
MIN_IOU, MIN_PLATE_DB = 0.95, 30.0


def row(aspect: str, coverage: float, seed: int, result: dict) -> str:
    model, classical = result["model"], result["classical"]
    passed = model["matte_iou"] >= MIN_IOU and model["background_psnr"] >= MIN_PLATE_DB
    return (f"| {aspect} {SHAPES[aspect][0]}x{SHAPES[aspect][1]} | {coverage:.0%} | {seed} | "
            f"{model['matte_iou']:.3f} | {model['background_psnr']:.1f} | {model['affine_error_px']:.2f} | "
            f"{classical['matte_iou']:.3f} | {classical['background_psnr']:.1f} | "
            f"{result['seconds']['total']:.0f} | {'yes' if passed else '**no**'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("motion-table"))
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--only-cached", action="store_true", help="print the cached rows, train nothing")
    args = parser.parse_args()
    lines = ["| clip | character | seed | matte IoU | plate (dB) | affine (px) | classical IoU | classical plate (dB) "
             "| time (s) | passes |", "|---|---|---|---|---|---|---|---|---|---|"]
    missing = []
    for aspect, (width, height) in SHAPES.items():
        for coverage in COVERAGES:
            for seed in args.seeds:
                clip_dir = args.out / clip_folder_name(seed, 0.0, None, False, shape=f"{width}x{height}",
                                                       coverage=coverage)
                if args.only_cached and not (clip_dir / f"{VARIANT}.json").exists():
                    missing.append(clip_dir.name)
                    continue
                truth_dir = clip_dir / "truth"
                if not truth_dir.exists():
                    write_truth(make_clip(seed, size=(width, height), frames=args.frames, coverage=coverage),
                                truth_dir)
                result = cached_variant(VARIANT, truth_dir, clip_dir, [], force=False)
                lines.append(row(aspect, coverage, seed, result))
                print(lines[-1], flush=True)
    print("\n" + "\n".join(lines))
    if missing:
        print(f"\nnot run yet: {', '.join(missing)}")
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg()[0]}
    print(json.dumps({"machine": machine, "frames": args.frames, "seeds": args.seeds, "missing": missing}))


if __name__ == "__main__":
    main()
