"""Reproduce the temporal write-up's results on the bending bar: data, training, pictures and numbers.

    python benchmarks/scene3d_results.py [--work runs/scene3d] [--out samples/scene3d] [--threads 1]
        [--steps 3000 6000] [--pairs 300] [--bench]

Steps (each skipped when its output exists in WORK, so a finished run only redraws and re-scores):
1. `vidrender scene dataset WORK/bend --object bend --views 50 --timesteps 20 --size 64`: train times
   {0..19} minus val {5, 10} and test {9, 16}; and WORK/newviews (seed 1, 10 views per time): new camera
   angles at the training times, for held-out *views*.
2. `vidrender scene train WORK/bend -o WORK/bend_s3000.pt --config configs/scene3d/temporal.yaml --cpu
   --steps 3000` (OMP_NUM_THREADS=--threads), then that run resumed to 6000 steps as bend_s6000.pt;
   wall times in WORK/bend_sN.seconds.
3. For each model: `vidrender scene eval` on the test and val splits (held-out times), and its function
   on the new views at training times, against copying the source view and the mean training image;
   from the Python API, the same test pairs rendered with time offset 0 (does the time slice matter?),
   and renders at every time offset from one view against the true bar at that time (the renderer of
   `vidrender scene dataset` draws it at any time, fractional ones too).
4. Pictures of the last model in OUT (truth row above model row; 32-px images shown at 2x): novel views
   at a held-out time, all time slices from one image (extrapolation), fractional offsets
   (interpolation), rotation at another time; GIFs from `scene render --timelapse`, `--orbit
   --timelapse` and `scene latent`; the latent's depth slices as PNG. Figures: OUT/results.json, and
   markdown tables on standard output.
5. With --bench: `vidrender bench --only scene3d --threads 2` (step time and memory at 64 px).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import torchvision.transforms.functional as TF

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vidrender import metrics  # noqa: E402
from vidrender.io.images import contact_sheet, write_image  # noqa: E402
from vidrender.pipelines.scene3d import infer  # noqa: E402
from vidrender.pipelines.scene3d.commands import load_model  # noqa: E402
from vidrender.pipelines.scene3d.data import load_views  # noqa: E402
from vidrender.pipelines.scene3d.evaluation import evaluate_novel_views  # noqa: E402
from vidrender.pipelines.scene3d.objects import make_object  # noqa: E402
from vidrender.pipelines.scene3d.raymarch import render_views as true_views  # noqa: E402

TIMESTEPS = 20
DATA_SIZE = 64
SHOW_SCALE = 2
CONFIG = REPO / "configs" / "scene3d" / "temporal.yaml"


def vidrender(*args, threads: int) -> str:
    """Run `python -m vidrender ARGS` (single-threaded math unless told) and return its standard output."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    command = [sys.executable, "-m", "vidrender", *map(str, args)]
    print("$", " ".join(["vidrender", *map(str, args)]), flush=True)
    done = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True, check=True)
    return done.stdout


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def truth(azimuths: list[float], elevations: list[float], times: list[float], size: int) -> torch.Tensor:
    """The true bar (N, 3, size, size) in [0, 1], drawn as the data set is (64 px, 8-bit), resized as it is read."""
    bar = make_object("bend", timesteps=TIMESTEPS)
    angles = zip(azimuths, elevations, times, strict=True)
    views = [true_views(bar, [az], [el], DATA_SIZE, t % TIMESTEPS)[0] for az, el, t in angles]
    pixels = (torch.stack(views) * 255).round().to(torch.uint8)
    return TF.resize(pixels, [size, size], antialias=True).float() / 255


def strip(rows: list[torch.Tensor], path: Path) -> None:
    """Save rows of (N, 3, S, S) pictures, one row each, upscaled SHOW_SCALE times, as one PNG."""
    columns = max(row.shape[0] for row in rows)
    tiles = []
    for row in rows:
        big = torch.nn.functional.interpolate(row, scale_factor=SHOW_SCALE, mode="nearest")
        tiles += list(big) + [torch.ones_like(big[0])] * (columns - row.shape[0])
    write_image(path, contact_sheet(tiles, columns))


def make_data(work: Path, threads: int) -> None:
    """The bending-bar data set and the new-views set in WORK, unless they exist."""
    if not (work / "bend-train").is_dir():
        vidrender(
            "scene",
            "dataset",
            work / "bend",
            "--views",
            50,
            "--timesteps",
            TIMESTEPS,
            "--size",
            DATA_SIZE,
            threads=threads,
        )
    if not (work / "newviews-train").is_dir():
        vidrender(
            "scene",
            "dataset",
            work / "newviews",
            "--views",
            10,
            "--timesteps",
            TIMESTEPS,
            "--size",
            DATA_SIZE,
            "--seed",
            1,
            threads=threads,
        )


def train(work: Path, steps: int, previous: int | None, threads: int) -> tuple[Path, float]:
    """WORK/bend_s{steps}.pt trained for `steps` steps, continuing the run of `previous` steps when there
    is one (resuming gives the weights of an uninterrupted run); returns (checkpoint, wall seconds of
    the training this checkpoint took beyond `previous`, NaN when it was trained before)."""
    checkpoint = work / f"bend_s{steps}.pt"
    seconds_file = work / f"bend_s{steps}.seconds"
    if not checkpoint.is_file():
        resume = []
        if previous is not None:
            shutil.copytree(work / f"bend_s{previous}.run", work / f"bend_s{steps}.run", dirs_exist_ok=True)
            resume = ["--resume"]
        started = time.perf_counter()
        vidrender(
            "scene",
            "train",
            work / "bend",
            "-o",
            checkpoint,
            "--config",
            CONFIG,
            "--cpu",
            "--steps",
            steps,
            *resume,
            threads=threads,
        )
        seconds_file.write_text(f"{time.perf_counter() - started:.0f}\n")
    return checkpoint, float(seconds_file.read_text()) if seconds_file.is_file() else float("nan")


def scores(guess: torch.Tensor, target: torch.Tensor) -> dict:
    return {"psnr": metrics.psnr(guess, target), "ssim": metrics.ssim(guess, target)}


def time_blind_test(model, test_dir: Path, pairs: int) -> dict:
    """Test pairs as `scene eval` draws them, rendered with the true offset and with offset 0."""
    (scene,) = load_views(test_dir, size=model.config.image_size)
    images = scene.images.float() / 255
    generator = torch.Generator().manual_seed(0)
    with_time, without, targets = [], [], []
    for _ in range(pairs):
        source, target = torch.randperm(images.shape[0], generator=generator)[:2].tolist()
        dt = float(scene.time[target] - scene.time[source])
        if dt == 0:
            continue
        slices = infer.infer_scenes(model, images[source])
        angles = [float(scene.azimuth[target])], [float(scene.elevation[target])]
        source_angles = float(scene.azimuth[source]), float(scene.elevation[source])
        with_time.append(infer.render_views(model, slices, *angles, [dt], *source_angles)[0])
        without.append(infer.render_views(model, slices, *angles, [0.0], *source_angles)[0])
        targets.append(images[target])
    truth_images = torch.stack(targets)
    return {
        "pairs": len(targets),
        "true_offset": scores(torch.stack(with_time), truth_images),
        "offset_0": scores(torch.stack(without), truth_images),
    }


def time_sweep(model, test_dir: Path, sources: int) -> tuple[dict, dict]:
    """Every time offset from one view, against the true bar at t + dt: (by |dt|, half offsets).

    By |dt|: PSNR of the model's render and of the copied source image. Half offsets k + 0.5: PSNR of the
    render blending slices k and k + 1 (what `--dt 2.5` does) and of each slice alone.
    """
    (scene,) = load_views(test_dir, size=model.config.image_size)
    size = model.config.image_size
    low, high = infer.time_range(model)
    offsets = [0.5 * k for k in range(2 * low, 2 * high + 1)]  # whole and half steps
    whole: dict[int, dict[str, list[torch.Tensor]]] = {}
    half: dict[str, list[torch.Tensor]] = {"blend": [], "lower_slice": [], "upper_slice": [], "truth": []}
    chosen = torch.linspace(0, len(scene.paths) - 1, sources).round().long().tolist()  # spread over both times
    for index in chosen:
        image = scene.images[index].float() / 255
        azimuth, elevation, t = float(scene.azimuth[index]), float(scene.elevation[index]), int(scene.time[index])
        renders = infer.timelapse_frames(model, image, frames=len(offsets))  # same view, offsets low..high
        true = truth([azimuth] * len(offsets), [elevation] * len(offsets), [t + dt for dt in offsets], size)
        for position, (dt, render, target) in enumerate(zip(offsets, renders, true, strict=True)):
            if dt == int(dt):
                entry = whole.setdefault(abs(int(dt)), {"model": [], "copy": [], "truth": []})
                entry["model"].append(render)
                entry["copy"].append(image)
                entry["truth"].append(target)
            else:
                half["blend"].append(render)
                half["lower_slice"].append(renders[position - 1])
                half["upper_slice"].append(renders[position + 1])
                half["truth"].append(target)
    table = {}
    for gap in sorted(whole):
        entry = {name: torch.stack(values) for name, values in whole[gap].items()}
        table[str(gap)] = {
            "model_psnr": metrics.psnr(entry["model"], entry["truth"]),
            "copy_source_psnr": metrics.psnr(entry["copy"], entry["truth"]),
        }
    target = torch.stack(half.pop("truth"))
    halves = {name: metrics.psnr(torch.stack(values), target) for name, values in half.items()}
    return table, {"renders": target.shape[0], **halves}


def pictures(model, checkpoint: Path, test_dir: Path, out: Path, threads: int) -> dict:
    """The write-up's pictures, from a held-out source image; returns what each shows."""
    (scene,) = load_views(test_dir, size=model.config.image_size)
    size = model.config.image_size
    # the source: a held-out time (16, near the largest downward bend at 15), seen from above-ish
    candidates = [i for i in range(len(scene.paths)) if int(scene.time[i]) == 16]
    index = max(candidates, key=lambda i: float(scene.elevation[i]) if abs(float(scene.elevation[i])) < 50 else -99)
    image = scene.images[index].float() / 255
    azimuth, elevation, t = float(scene.azimuth[index]), float(scene.elevation[index]), int(scene.time[index])
    slices = infer.infer_scenes(model, image)

    def row(azimuths, elevations, offsets):
        model_row = infer.render_views(model, slices, azimuths, elevations, offsets, azimuth, elevation)
        return truth(azimuths, elevations, [t + dt for dt in offsets], size), model_row

    turn = [azimuth + 45.0 * k for k in range(8)]
    true_row, model_row = row(turn, [elevation] * 8, [0.0] * 8)
    strip([torch.cat([image[None], true_row]), torch.cat([image[None], model_row])], out / "novel_views.png")
    low, high = infer.time_range(model)
    offsets = [float(dt) for dt in range(low, high + 1)]
    true_row, model_row = row([azimuth] * len(offsets), [elevation] * len(offsets), offsets)
    strip([true_row, model_row], out / "extrapolation.png")
    fractions = [-8 + 0.5 * k for k in range(9)]  # t = 8 .. 12: the bar passes through straight at 10
    true_row, model_row = row([azimuth] * 9, [elevation] * 9, fractions)
    strip([true_row, model_row], out / "interpolation.png")
    true_row, model_row = row(turn, [elevation] * 8, [-7.0] * 8)
    strip([true_row, model_row], out / "rotation_at_dt-7.png")

    source_png = out / "source.png"
    write_image(source_png, image)
    vidrender(
        "scene",
        "render",
        checkpoint,
        "--image",
        source_png,
        "--timelapse",
        "-o",
        out / "timelapse.gif",
        "--fps",
        6,
        threads=threads,
    )
    vidrender(
        "scene",
        "render",
        checkpoint,
        "--image",
        source_png,
        "--orbit",
        "--timelapse",
        "--frames",
        42,
        "-o",
        out / "orbit_timelapse.gif",
        threads=threads,
    )
    vidrender(
        "scene", "latent", checkpoint, "--image", source_png, "-o", out / "latent.png", "--tile", 32, threads=threads
    )
    vidrender(
        "scene", "latent", checkpoint, "--image", source_png, "-o", out / "latent.gif", "--tile", 32, threads=threads
    )
    return {
        "source": {
            "file": str(scene.paths[index].relative_to(test_dir.parent)),
            "time": t,
            "azimuth": azimuth,
            "elevation": elevation,
        },
        "novel_views.png": "source, then azimuth +0..+315 in 45-degree steps at the source's time; truth above",
        "extrapolation.png": f"time offsets {low}..{high} (t = {t + low}..{t + high} mod 20) from the source view",
        "interpolation.png": "time offsets -8, -7.5, ..., -4 (t = 8..12; half steps blend neighbouring slices)",
        "rotation_at_dt-7.png": "azimuth +0..+315 at time offset -7 (t = 9)",
    }


def _db(value: float | None) -> str:
    return "exact" if value is None else f"{value:.1f}"  # None: an infinite PSNR (identical images)


def markdown(results: dict) -> str:
    lines = ["| evaluation | pairs | model PSNR / SSIM | copy source | mean training image |", "|---|---|---|---|---|"]
    for name, result in results["eval"].items():
        cells = [
            f"{result[key]['psnr']:.2f} dB / {result[key]['ssim']:.3f}"
            for key in ("model", "copy_source", "mean_train_image")
        ]
        lines.append(f"| {name} | {result['pairs']} | " + " | ".join(cells) + " |")
    blind = results["time_slices"]
    lines += [
        "",
        f"held-out times, pairs across time ({blind['pairs']}): true offset "
        f"{blind['true_offset']['psnr']:.2f} dB, offset 0 {blind['offset_0']['psnr']:.2f} dB",
        "",
        "| abs(dt) | " + " | ".join(results["time_sweep"]) + " |",
        "|---|" + "---|" * len(results["time_sweep"]),
        "| model PSNR | " + " | ".join(_db(v["model_psnr"]) for v in results["time_sweep"].values()) + " |",
        "| copy source | " + " | ".join(_db(v["copy_source_psnr"]) for v in results["time_sweep"].values()) + " |",
    ]
    half = results["half_offsets"]
    lines += [
        "",
        f"half offsets ({half['renders']} renders): blended slices {half['blend']:.2f} dB, lower slice "
        f"{half['lower_slice']:.2f} dB, upper slice {half['upper_slice']:.2f} dB",
    ]
    return "\n".join(lines)


def evaluate(model, checkpoint: Path, work: Path, pairs: int, threads: int) -> dict:
    """`scene eval` on the held-out times, its function on the new views; time-slice checks."""
    results = {}
    for name, split in (("held-out times 9, 16 (test)", "test"), ("held-out times 5, 10 (val)", "val")):
        output = vidrender(
            "scene", "eval", checkpoint, work / "bend", "--split", split, "--pairs", pairs, threads=threads
        )
        results[name] = last_json(output)
    # what `scene eval` computes, with the mean image of the data the model was trained on (bend-train)
    results["held-out views at training times"] = evaluate_novel_views(
        model, work / "newviews-train", pairs, train_dir=work / "bend-train"
    )
    sweep, half_offsets = time_sweep(model, work / "bend-test", sources=20)
    return {
        "eval": results,
        "time_slices": time_blind_test(model, work / "bend-test", pairs),
        "time_sweep": sweep,
        "half_offsets": half_offsets,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "scene3d", help="data sets and the models")
    parser.add_argument("--out", type=Path, default=REPO / "samples" / "scene3d", help="pictures and results.json")
    parser.add_argument("--threads", type=int, default=1, help="math threads of every step")
    parser.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=[3000, 6000],
        help="training lengths, ascending; each continues the previous; pictures of the last",
    )
    parser.add_argument("--pairs", type=int, default=300, help="evaluation pairs per split")
    parser.add_argument("--bench", action="store_true", help="also run `vidrender bench --only scene3d`")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    make_data(args.work, args.threads)

    results: dict = {"config": str(CONFIG.relative_to(REPO)), "runs": {}}
    previous = None
    for steps in sorted(args.steps):
        checkpoint, seconds = train(args.work, steps, previous, args.threads)
        model, _ = load_model(checkpoint)
        torch.manual_seed(0)
        with torch.inference_mode():
            results["runs"][str(steps)] = {
                "train_seconds": seconds,
                **evaluate(model, checkpoint, args.work, args.pairs, args.threads),
            }
        previous = steps
    with torch.inference_mode():
        results["pictures"] = pictures(model, checkpoint, args.work / "bend-test", args.out, args.threads)
    if args.bench:
        results["bench"] = last_json(vidrender("bench", "--only", "scene3d", "--threads", 2, threads=2))["scene3d"]
    results = json.loads(json.dumps(results, default=float), parse_constant=lambda _: None)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    for steps, run in results["runs"].items():
        print(f"\n{steps} steps, trained in {run['train_seconds']} s (null: before this script ran)\n")
        print(markdown(run))


if __name__ == "__main__":
    main()
