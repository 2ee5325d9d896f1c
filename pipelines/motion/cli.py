"""The commands of pipeline `motion`: `vidrender train`, `export` and `eval`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from vidrender.bench import add_section_module
from vidrender.errors import UserError

PIPELINE = "motion"


def _load_entry(path: Path, index: int) -> dict:
    """Clip `index` of a motion checkpoint, with a damaged or hand-edited artifact refused in one line.

    `clip_entry` checks names and shapes; this adds the types and values the commands rely on, so that
    no file makes them fail with a traceback.
    """
    import torch

    from pipelines.motion.layers import clip_entry
    from vidrender.io.checkpoint import load_checkpoint

    payload = load_checkpoint(path, PIPELINE)
    clips = payload["artifact"].get("clips")
    if not isinstance(clips, list) or not all(isinstance(entry, dict) for entry in clips):
        raise UserError(f"{path}: damaged motion checkpoint, its artifact has no list of clips")
    if 0 <= index < len(clips):
        for key in ("plate", "character", "affines"):
            value = clips[index].get(key)
            if value is not None and not (isinstance(value, torch.Tensor) and value.is_floating_point()):
                raise UserError(f"{path}: damaged motion checkpoint, clip {index} {key} is not a float tensor")
    entry = clip_entry(payload, index, str(path))
    height, width = entry["plate"].shape[-2:]
    if min(height, width) < 2 or entry["affines"].shape[0] == 0:
        raise UserError(f"{path}: damaged motion checkpoint, clip {index} has a {width}x{height} plate and "
                        f"{entry['affines'].shape[0]} affines")
    fps, reference = entry["fps"], entry["reference"]
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < float("inf"):
        raise UserError(f"{path}: damaged motion checkpoint, clip {index} fps is {str(fps)[:20]!r}")
    if isinstance(reference, bool) or not isinstance(reference, int) or not 0 <= reference < len(entry["affines"]):
        raise UserError(f"{path}: damaged motion checkpoint, clip {index} reference is {str(reference)[:20]!r}")
    return entry


def train(
    clips: Annotated[list[Path], typer.Argument(help="Video files, image folders or truth folders.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The checkpoint to write (.pt).")],
    variant: Annotated[str | None, typer.Option(help="known, frame-pair or feature-pair.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config (configs/motion/*.yaml).")] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps.")] = None,
    size: Annotated[int | None, typer.Option(help="Training resolution (square side).")] = None,
    affines: Annotated[list[str] | None, typer.Option(help="For known: PATH.json, 'truth' or 'track'.")] = None,
    max_frames: Annotated[int | None, typer.Option(help="Use only the first N frames of each clip.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run folder's last checkpoint.")] = False,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    cpu: Annotated[bool, typer.Option("--cpu", help="Train on the CPU even if a GPU is present.")] = False,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Config override key=value.")] = None,
) -> None:
    """Learn a clip's character, background and motion; write a checkpoint for compose and export."""
    from pipelines.motion.config import MotionConfig, validate
    from pipelines.motion.inputs import load_clips
    from pipelines.motion.task import MotionTask
    from vidrender.config import load_config, to_dict
    from vidrender.io.checkpoint import save_checkpoint
    from vidrender.train import check_output_file
    from vidrender.train import train as run_training

    named = [f"{key}={value}" for key, value in
             (("variant", variant), ("train.steps", steps), ("data.size", size), ("train.seed", seed))
             if value is not None]
    settings = validate(load_config(MotionConfig, config, [*(overrides or []), *named]))
    check_output_file(output)
    loaded = load_clips(clips, settings.variant, affines or [], max_frames)
    task = MotionTask(settings, loaded)
    run_dir = output.with_name(output.stem + ".run")
    model = run_training(task, settings.train, run_dir, resume=resume, cpu=cpu)
    from accelerate.state import PartialState

    if PartialState().is_main_process:
        save_checkpoint(output, PIPELINE, to_dict(settings), model.state_dict(), task.artifact(model))
        print(output)


def export(
    checkpoint: Annotated[Path, typer.Argument(help="A motion checkpoint (.pt).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the layers.")],
    clip: Annotated[int, typer.Option(help="Which clip of a multi-clip model.")] = 0,
) -> None:
    """Write a trained clip's layers: background.png, alpha/, character/ (RGBA) and affine.json."""
    from pipelines.motion.layers import character_frames
    from vidrender.io.atomic import atomic_path
    from vidrender.io.images import write_image
    from vidrender.io.trajectory import write_trajectory

    entry = _load_entry(checkpoint, clip)
    height, width = entry["plate"].shape[-2:]
    with atomic_path(output, is_dir=True) as folder:
        write_image(folder / "background.png", entry["plate"])
        (folder / "alpha").mkdir()
        (folder / "character").mkdir()
        for index, layer in enumerate(character_frames(entry)):
            write_image(folder / "character" / f"{index:05d}.png", layer)
            write_image(folder / "alpha" / f"{index:05d}.png", layer[3:])
        write_trajectory(folder / "affine.json", entry["affines"], width, height, entry["fps"], entry["reference"])
    print(output)


def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A motion checkpoint (.pt).")],
    truth: Annotated[Path, typer.Option(help="The clip's truth folder (vidrender samples).")],
    clip: Annotated[int, typer.Option(help="Which clip of a multi-clip model.")] = 0,
    baseline: Annotated[str | None, typer.Option(help="Also score 'classical' on the same clip.")] = None,
) -> None:
    """Metrics against a synthetic clip's truth; JSON on the last line."""
    from pipelines.motion.evaluation import evaluate_checkpoint

    _load_entry(checkpoint, clip)  # a damaged file is one line of error, not a traceback from deep inside
    print(json.dumps(evaluate_checkpoint(checkpoint, truth, clip, baseline)))


def _pair(text: str, name: str, separator: str = ",") -> tuple[float, float]:
    try:
        first, second = (float(part) for part in text.split(separator))
    except ValueError:
        raise UserError(f"{name}: expected two numbers like 0.1{separator}0, got {text!r}") from None
    return first, second


def compose(
    character: Annotated[Path, typer.Option(help="Checkpoint whose character (appearance + motion) is used.")],
    background: Annotated[Path, typer.Option(help="Checkpoint whose background plate is used.")],
    output: Annotated[Path, typer.Option("-o", "--output", help=".mp4, .webm, .mov, .gif or a PNG folder.")],
    motion: Annotated[str, typer.Option(help="source, background, or a trajectory PATH.json.")] = "source",
    character_clip: Annotated[int, typer.Option(help="Clip index in the character checkpoint.")] = 0,
    background_clip: Annotated[int, typer.Option(help="Clip index in the background checkpoint.")] = 0,
    frames: Annotated[int | None, typer.Option(help="Output length (the motion loops).")] = None,
    fps: Annotated[float | None, typer.Option(help="Output frame rate (default: the background's).")] = None,
    size: Annotated[str | None, typer.Option(help="Output WxH (default: the background's native size).")] = None,
    translate: Annotated[str, typer.Option(help="Extra drift DX,DY in frame widths/heights per second.")] = "0,0",
    rotate: Annotated[float, typer.Option(help="Extra rotation, degrees per second (counter-clockwise).")] = 0.0,
    scale: Annotated[float, typer.Option(help="Extra scale factor per second.")] = 1.0,
    speed: Annotated[float, typer.Option(help="Playback speed of the motion.")] = 1.0,
    layers_only: Annotated[
        bool, typer.Option("--layers-only", help="Write the character layer with alpha only.")
    ] = False,
    preview: Annotated[bool, typer.Option("--preview", help="Also write OUT.gif and OUT.sheet.png.")] = False,
) -> None:
    """Put the character of one trained clip onto the background of another and write a video."""
    import torch

    from pipelines.motion import compose as composing
    from pipelines.motion.inputs import MAX_CLIP_BYTES
    from pipelines.motion.layers import character_frames
    from vidrender import geometry
    from vidrender.io.video import DEFAULT_MAX_PIXELS
    from vidrender.io.video_write import output_format, write_video

    output_format(output)
    char_entry = _load_entry(character, character_clip)
    back_entry = _load_entry(background, background_clip)
    if size is not None:
        width, height = composing.output_size(size)
        if width * height > DEFAULT_MAX_PIXELS:
            raise UserError(f"--size: {size} is over the limit of {DEFAULT_MAX_PIXELS / 1e6:.0f} Mpixel a frame")
        plate = torch.nn.functional.interpolate(back_entry["plate"][None].float(), size=(height, width),
                                                mode="bilinear", align_corners=False, antialias=True)[0]
        back_entry = {**back_entry, "plate": plate}
    path, path_fps = composing.motion_path(motion, char_entry, back_entry)
    out_fps = float(back_entry["fps"]) if fps is None else fps  # --fps 0 is an error, not "the default"
    if not 0 < out_fps < math.inf:
        raise UserError(f"--fps must be positive, got {out_fps}")
    if not 0 < speed < math.inf:
        raise UserError(f"--speed must be a positive number, got {speed}")
    if frames is not None and frames < 1:
        raise UserError(f"--frames must be 1 or more, got {frames}")
    count = frames or max(1, round(path.shape[0] * out_fps / path_fps / speed))
    height, width = back_entry["plate"].shape[-2:]
    # the whole clip is held at once: the moved RGBA layer and the composited RGB, float32
    needed = count * 7 * height * width * 4
    if needed > MAX_CLIP_BYTES:
        raise UserError(f"{count} frames of {width}x{height} need {needed / 1024**3:.1f} GB in memory "
                        f"(limit {MAX_CLIP_BYTES / 1024**3:.0f} GB); ask for fewer --frames or a smaller --size")
    affines = composing.retime(path, path_fps, out_fps, count, speed)
    edits = composing.edits(count, out_fps, _pair(translate, "--translate"), rotate, scale, (width, height))
    affines = geometry.compose(edits, affines)
    if layers_only:
        video = character_frames(char_entry, affines, (height, width))
    else:
        video = composing.compose_frames(char_entry, back_entry, affines)
    write_video(output, video, out_fps)
    if preview:
        from vidrender.io.images import contact_sheet, write_image

        write_video(output.with_suffix(".gif"), video, out_fps)
        picks = video[:: max(1, len(video) // 8)][:8]
        write_image(output.with_name(output.stem + ".sheet.png"), contact_sheet(list(picks), cols=4))
    print(output)


def register(app: typer.Typer) -> None:
    """Add the motion pipeline's commands to the top-level app."""
    add_section_module("pipelines.motion.bench")
    app.command()(train)
    app.command()(export)
    app.command("eval")(evaluate)
    app.command()(compose)
