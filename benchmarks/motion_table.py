"""The per-variant results table of pipeline `motion` (docs/results.md), regenerated with one command.

For each seed, makes a synthetic 128x128 clip of 64 frames with truth (`vidrender.synth.make_clip`),
then for each variant does what `vidrender train CLIP -o m.pt --variant V` does with default settings
(`known` takes the truth's affines, as `--affines truth`; `known-track` takes OpenCV tracks, as
`--affines track`), scores the checkpoint as `vidrender eval m.pt --truth DIR --baseline classical`
does, and times each phase: tracking (label-free variants), training, inference (the layers stored in
the checkpoint). Prints a markdown table per clip and the mean, then one JSON object on the last line.
Each variant's result is kept in OUT/seedN/VARIANT.json and reused by later runs (so runs can be split
across machines or resumed; `--force` recomputes).

    python benchmarks/motion_table.py [--seeds 0 1 2] [--variants known frame-pair feature-pair]
        [--out DIR] [--force] [--reinfer] [--set key=value ...] [--noise STD] [--jpeg-quality Q] [--leave-frame]
        [--size S | --size W H] [--coverage C] [--photo]

`--noise`, `--jpeg-quality` and `--leave-frame` make harder clips (sensor noise, JPEG artefacts, a
character that leaves the frame and comes back); `--size W H` a non-square clip, `--coverage` a set
character size, `--photo` the cat of samples/photos over its coffee-cup photograph, `--camera KIND` a
moving camera (`vidrender samples --camera`; the scores then include the camera error, and the classical
baseline is its moving-camera form). Each combination has its own folder, e.g.
OUT/seedN-noise0.02-jpeg75-leave, OUT/seedN-320x180-cover0.04-photo or OUT/seedN-camera-pan-zoom.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from vidrender.config import load_config
from vidrender.io.checkpoint import load_checkpoint
from vidrender.io.images import read_image
from vidrender.pipelines.motion.config import MotionConfig
from vidrender.pipelines.motion.decomposition import Decomposition
from vidrender.pipelines.motion.evaluation import evaluate
from vidrender.pipelines.motion.inputs import load_clips
from vidrender.pipelines.motion.predictors import PREDICTORS
from vidrender.pipelines.motion.task import MotionTask
from vidrender.synth import CAMERA_KINDS, make_clip, write_truth
from vidrender.train import train

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "motion"
# variant name in the table -> (config file, --affines)
VARIANTS = {
    "known": ("known.yaml", ["truth"]),
    "known-track": ("known.yaml", ["track"]),
    "frame-pair": ("frame_pair.yaml", []),
    "feature-pair": ("feature_pair.yaml", []),
}
# the layers' metrics; a moving camera's scores add `camera_error_px`, which is not compared: the classical
# baseline finds its cameras with the same estimator (`world.find_cameras`), so the two tie on it
METRICS = ("background_psnr", "matte_iou", "affine_error_px", "reconstruction_psnr")
HIGHER_IS_BETTER = {"background_psnr": True, "matte_iou": True, "affine_error_px": False, "reconstruction_psnr": True}


def cached_variant(variant: str, truth_dir: Path, out_dir: Path, overrides: list[str], force: bool,
                   reinfer: bool = False) -> dict:
    """`run_variant`'s result, read from OUT/seedN/VARIANT.json if an earlier run with the same overrides left it.

    With `reinfer`, a kept result's layers are rebuilt from its saved weights (OUT/seedN/VARIANT.pt) with
    the current inference code and settings and scored again; its training time is kept.
    """
    result_file = out_dir / f"{variant}.json"
    kept = json.loads(result_file.read_text()) if result_file.exists() and not force else None
    if kept is not None and kept.get("overrides") != overrides:
        kept = None
    if kept is not None and not reinfer:
        return kept
    if kept is not None and (out_dir / f"{variant}.pt").exists():
        result = reinfer_variant(variant, truth_dir, out_dir, overrides, kept)
    else:
        result = run_variant(variant, truth_dir, out_dir, overrides)
    result["overrides"] = overrides
    temporary = result_file.with_suffix(".partial")
    temporary.write_text(json.dumps(result))
    temporary.replace(result_file)
    return result


def run_variant(variant: str, truth_dir: Path, out_dir: Path, overrides: list[str]) -> dict:
    """Train `variant` on the truth folder like `vidrender train`, score it like `vidrender eval`."""
    config_file, affines = VARIANTS[variant]
    settings = load_config(MotionConfig, CONFIGS / config_file, overrides)
    started = time.perf_counter()
    clips = load_clips([truth_dir], PREDICTORS[settings.variant].needs_affines, affines)
    task = MotionTask(settings, clips)
    tracked = time.perf_counter()
    model = train(task, settings.train, out_dir / f"{variant}.run", cpu=True)
    training = time.perf_counter() - tracked
    result = layers_and_scores(variant, task, model, truth_dir, out_dir)
    result["seconds"] |= {"tracking": tracked - started, "training": training}
    result["seconds"]["total"] = tracked - started + training + result["seconds"]["inference"]
    result["pairs_per_second"] = settings.train.steps * settings.train.batch_size / training
    return result


def reinfer_variant(variant: str, truth_dir: Path, out_dir: Path, overrides: list[str], kept: dict) -> dict:
    """`run_variant` without training: the weights of OUT/seedN/VARIANT.pt, new layers, new scores."""
    config_file, affines = VARIANTS[variant]
    settings = load_config(MotionConfig, CONFIGS / config_file, overrides)
    clips = load_clips([truth_dir], PREDICTORS[settings.variant].needs_affines, affines)
    task = MotionTask(settings, clips)  # label-free variants: OpenCV tracks, as training had them
    model = task.build_model()
    model.load_state_dict(load_checkpoint(out_dir / f"{variant}.pt", "motion")["weights"])
    result = layers_and_scores(variant, task, model, truth_dir, out_dir)
    seconds = kept["seconds"]
    result["seconds"] |= {"tracking": seconds["tracking"], "training": seconds["training"]}
    result["seconds"]["total"] = seconds["tracking"] + seconds["training"] + result["seconds"]["inference"]
    result["pairs_per_second"] = kept["pairs_per_second"]
    return result


def layers_and_scores(variant: str, task: MotionTask, model, truth_dir: Path, out_dir: Path) -> dict:
    """Build the checkpoint's layers (timed), save OUT/seedN/VARIANT.pt and score it against the truth."""
    started = time.perf_counter()
    decomposition = Decomposition(task.config, model.state_dict(), task.decompose(model))
    inference = time.perf_counter() - started
    decomposition.save(out_dir / f"{variant}.pt")
    scores = evaluate(decomposition.stacks[0], truth_dir, baseline="classical")
    return {
        "model": scores["model"],
        "classical": scores["classical"],
        "seconds": {"inference": inference},
        "beats_classical": all(
            (scores["model"][name] >= scores["classical"][name]) == HIGHER_IS_BETTER[name] for name in METRICS
        ),
    }


def table(rows: dict[str, dict]) -> str:
    """Markdown table: one row per variant plus the classical baseline (a camera column for moving cameras)."""
    camera = "camera_error_px" in next(iter(rows.values()))["model"]

    def scores(values: dict) -> str:
        cells = (f"{values['background_psnr']:.1f} | {values['matte_iou']:.3f} | {values['affine_error_px']:.2f} | "
                 f"{values['reconstruction_psnr']:.1f} |")
        return cells + (f" {values['camera_error_px']:.3f} |" if camera else "")

    lines = [
        "| variant | background PSNR (dB) | matte IoU | affine error (px) | recon. PSNR (dB) | "
        + ("camera error (px) | " if camera else "") + "train time (s) | total time (s) | pairs/s |",
        "|---|---|---|---|---|" + ("---|" if camera else "") + "---|---|---|",
    ]
    for variant, row in rows.items():
        lines.append(f"| {variant} | {scores(row['model'])} {row['seconds']['training']:.0f} | "
                     f"{row['seconds']['total']:.0f} | {row['pairs_per_second']:.0f} |")
    classical = next(iter(rows.values()))["classical"]
    lines.append(f"| classical (median + difference) | {scores(classical)} - | - | - |")
    return "\n".join(lines)


def mean_rows(per_seed: dict[int, dict[str, dict]]) -> dict[str, dict]:
    """Mean over seeds of every number of every variant's row."""
    def mean(values):
        first = values[0]
        if isinstance(first, dict):
            return {key: mean([value[key] for value in values]) for key in first}
        if isinstance(first, bool):
            return all(values)
        if not isinstance(first, (int, float)):
            return first
        return statistics.fmean(values)

    variants = next(iter(per_seed.values())).keys()
    return {variant: mean([rows[variant] for rows in per_seed.values()]) for variant in variants}


def photo_layers() -> dict:
    """make_clip's `character` and `background`: the cat and the coffee-cup photograph of samples/photos."""
    photos = Path(__file__).resolve().parents[1] / "samples" / "photos"
    return {"character": read_image(photos / "cat.png"), "background": read_image(photos / "coffee.jpg")}


def clip_folder_name(seed: int, noise: float, jpeg_quality: int | None, leave_frame: bool,
                     shape: str = "", coverage: float | None = None, photo: bool = False,
                     camera: str | None = None) -> str:
    """seedN, plus -noiseS, -jpegQ and -leave for each hardening that is on, -WxH for a non-default size,
    -coverC for a set character size, -photo for the cat over the photograph and -camera-KIND for a moving
    camera."""
    parts = [f"seed{seed}", *([shape] if shape else []), *([f"cover{coverage:g}"] if coverage else []),
             *(["photo"] if photo else []), *([f"camera-{camera}"] if camera else [])]
    if noise:
        parts.append(f"noise{noise:g}")
    if jpeg_quality is not None:
        parts.append(f"jpeg{jpeg_quality}")
    if leave_frame:
        parts.append("leave")
    return "-".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["known", "frame-pair", "feature-pair"],
                        choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path("motion-table"))
    parser.add_argument("--size", type=int, nargs="+", default=[128], metavar="S",
                        help="clip side in pixels, or width and height (e.g. 320 180)")
    parser.add_argument("--coverage", type=float, default=None,
                        help="share of the frame the character covers (default: random, 7-15 %%)")
    parser.add_argument("--photo", action="store_true",
                        help="samples/photos: the cat over the coffee-cup photograph instead of procedural layers")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--force", action="store_true", help="recompute results kept from earlier runs")
    parser.add_argument("--reinfer", action="store_true",
                        help="rebuild kept results' layers from their saved weights (after an inference change)")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], help="config overrides key=value")
    parser.add_argument("--noise", type=float, default=0.0, help="std of Gaussian noise on the frames")
    parser.add_argument("--jpeg-quality", type=int, default=None, help="JPEG round trip of every frame")
    parser.add_argument("--leave-frame", action="store_true", help="the character leaves the frame and returns")
    parser.add_argument("--camera", choices=CAMERA_KINDS, default=None, help="a moving camera (default: static)")
    args = parser.parse_args()
    hardening = dict(noise=args.noise, jpeg_quality=args.jpeg_quality, leave_frame=args.leave_frame)
    if len(args.size) not in (1, 2):
        parser.error("--size takes one side or a width and a height")
    width, height = args.size * 2 if len(args.size) == 1 else args.size
    shape = "" if (width, height) == (128, 128) else f"{width}x{height}"
    layers = photo_layers() if args.photo else {}

    per_seed: dict[int, dict[str, dict]] = {}
    for seed in args.seeds:
        clip_dir = args.out / clip_folder_name(seed, **hardening, shape=shape, coverage=args.coverage, photo=args.photo,
                                               camera=args.camera)
        truth_dir = clip_dir / "truth"
        if not truth_dir.exists():
            clip = make_clip(seed, size=(width, height), frames=args.frames, coverage=args.coverage, **layers,
                             **hardening, camera=args.camera)
            write_truth(clip, truth_dir)
        per_seed[seed] = {
            variant: cached_variant(variant, truth_dir, clip_dir, args.overrides, args.force, args.reinfer)
            for variant in args.variants
        }
        print(f"\nseed {seed} ({width}x{height}, {args.frames} frames)\n\n{table(per_seed[seed])}", flush=True)
    mean = mean_rows(per_seed)
    print(f"\nmean over seeds {args.seeds}\n\n{table(mean)}")
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
               "load_average": os.getloadavg()[0]}
    print(json.dumps({"machine": machine, "size": [width, height], "coverage": args.coverage, "photo": args.photo,
                      "camera": args.camera,
                      "frames": args.frames, "seeds": args.seeds, **hardening,
                      "overrides": args.overrides, "per_seed": per_seed, "mean": mean}))


if __name__ == "__main__":
    main()
