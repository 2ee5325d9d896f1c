"""The commands of pipeline `motion` (`train`, `export`, `eval`, `compose`): a thin shell over its Python API
(`pipeline.py`, `decomposition.py`, `composing.py`) that parses options and writes files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vidrender.bench import add_section_module
from vidrender.errors import UserError


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
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit with an error (checkpoint kept) if a clip's character is lost.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help=OVERWRITE_CHECKPOINT)] = False,
) -> None:
    """Learn a clip's character, background and motion; write a checkpoint for compose and export."""
    from vidrender.config import load_config
    from vidrender.pipelines.motion.config import MotionConfig
    from vidrender.pipelines.motion.inputs import load_clips
    from vidrender.pipelines.motion.pipeline import fit
    from vidrender.pipelines.motion.predictors import PREDICTORS
    from vidrender.train import claimed_training_outputs

    named = [f"{key}={value}" for key, value in
             (("variant", variant), ("train.steps", steps), ("data.size", size), ("train.seed", seed))
             if value is not None]
    settings = load_config(MotionConfig, config, [*(overrides or []), *named])
    inputs = [*clips, *(Path(item) for item in affines or []), *([config] if config else [])]
    with claimed_training_outputs(output, inputs, resume, overwrite) as run_dir:
        loaded = load_clips(clips, PREDICTORS[settings.variant].needs_affines, affines or [], max_frames)
        decomposition = fit(loaded, settings, run_dir, resume=resume, cpu=cpu)
        if decomposition is None:
            return
        decomposition.save(output)
    print(output)
    lost = [report.describe(clip.name) for clip, report in zip(loaded, decomposition.reports, strict=True)
            if report.failed]
    for line in lost:
        _warn(line)
    if lost and strict:
        raise UserError(f"{lost[0]} (--strict; the checkpoint was written)")


def export(
    checkpoint: Annotated[Path, typer.Argument(help="A motion checkpoint (.pt).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the layers.")],
    clip: Annotated[int, typer.Option(help="Which clip of a multi-clip model.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing export folder (one holding only export files).")
    ] = False,
) -> None:
    """Write a trained clip's layers: stack.json, background.png, camera.json, character/ (RGBA), alpha/,
    affine.json."""
    from vidrender.io.outputs import Output, claim_outputs
    from vidrender.pipelines.motion.decomposition import load_stack
    from vidrender.pipelines.motion.diagnostics import empty_layers
    from vidrender.pipelines.motion.stack import EXPORT_NAMES

    with claim_outputs([Output(output, folder=True, own_names=EXPORT_NAMES)], [checkpoint], overwrite):
        stack = load_stack(checkpoint, clip)
        for number in empty_layers(stack):
            _warn(f"{checkpoint}: character layer {number} is empty (alpha <= 0.5 everywhere); its frames are "
                  "written fully transparent")
        stack.export(output)
    print(output)


def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A motion checkpoint (.pt).")],
    truth: Annotated[Path, typer.Option(help="The clip's truth folder (vidrender samples).")],
    clip: Annotated[int, typer.Option(help="Which clip of a multi-clip model.")] = 0,
    baseline: Annotated[str | None, typer.Option(help="Also score 'classical' on the same clip.")] = None,
) -> None:
    """Metrics against a synthetic clip's truth; JSON on the last line."""
    from vidrender.pipelines.motion.decomposition import load_stack
    from vidrender.pipelines.motion.evaluation import evaluate

    print(json.dumps(evaluate(load_stack(checkpoint, clip), truth, baseline)))


OVERWRITE_CHECKPOINT = "Replace an existing checkpoint (and, without --resume, its run folder)."


def _warn(message: str) -> None:
    """One line on stderr, in the form of the command line's errors."""
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold yellow]warning:[/] {message}", markup=True)


def _pair(text: str, name: str, separator: str = ",") -> tuple[float, float]:
    try:
        first, second = (float(part) for part in text.split(separator))
    except ValueError:
        raise UserError(f"{name}: expected two numbers like 0.1{separator}0, got {text!r}") from None
    return first, second


def compose(
    character: Annotated[Path, typer.Option(help="Checkpoint or export folder whose character is used.")],
    background: Annotated[Path, typer.Option(help="Checkpoint or export folder whose background is used.")],
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
    camera: Annotated[str, typer.Option(
        help="Camera move that films the output: background (B's), source (the character's clip's) or static."
    )] = "background",
    layers_only: Annotated[
        bool, typer.Option("--layers-only", help="Write the character layer with alpha only.")
    ] = False,
    preview: Annotated[bool, typer.Option("--preview", help="Also write OUT.gif and OUT.sheet.png.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.")] = False,
) -> None:
    """Put the character of one trained clip onto the background of another and write a video."""
    from vidrender.io.outputs import Output, claim_outputs
    from vidrender.io.video_write import PNG_FOLDER, SEQUENCE_NAME, output_format, write_video
    from vidrender.pipelines.motion.composing import compose as put_together
    from vidrender.pipelines.motion.composing import output_size
    from vidrender.pipelines.motion.decomposition import load_stack

    outputs = [Output(output, folder=output_format(output) == PNG_FOLDER, own_names=SEQUENCE_NAME)]
    gif, sheet = output.with_suffix(".gif"), output.with_name(output.stem + ".sheet.png")
    if preview:
        outputs += [Output(path) for path in (gif, sheet) if path != output]
    inputs = [character, background, *([Path(motion)] if motion not in ("source", "background") else [])]
    with claim_outputs(outputs, inputs, overwrite):
        result = put_together(load_stack(character, character_clip), load_stack(background, background_clip),
                              motion=motion, frames=frames, fps=fps, size=None if size is None else output_size(size),
                              translate=_pair(translate, "--translate"), rotate=rotate, scale=scale, speed=speed,
                              layers_only=layers_only, camera=camera)
        write_video(output, result.frames, result.fps)
        if preview:
            from vidrender.io.images import contact_sheet, write_image

            if gif != output:
                write_video(gif, result.frames, result.fps)
            picks = result.frames[:: max(1, len(result.frames) // 8)][:8]
            write_image(sheet, contact_sheet(list(picks), cols=4))
    print(output)


def register(app: typer.Typer) -> None:
    """Add the motion pipeline's commands to the top-level app."""
    add_section_module("vidrender.pipelines.motion.bench")
    app.command()(train)
    app.command()(export)
    app.command("eval")(evaluate)
    app.command()(compose)
