"""`vidrender scene train | render | eval`: train on a data set, render from one image, score novel views.

Also the helpers other scene commands share: loading a checkpoint and a source image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vidrender.errors import UserError

PIPELINE = "scene3d"
# Renders are image_size x image_size and their 3-D scenes grow with it; the reference model uses 128.
# Larger values in a checkpoint are refused rather than risking running out of memory while rendering.
MAX_IMAGE_SIZE = 1024
# Config keys that older scene3d checkpoints store but the schema no longer has, per section. They are
# dropped before the strict `from_dict` rebuild, which would otherwise refuse those checkpoints as
# having unknown keys. model.channels_last: the 3-D convolutions' memory format, retired because it was
# slower and gave the same numbers; the weights do not depend on it.
RETIRED_KEYS = {"model": ("channels_last",)}
OVERWRITE_CHECKPOINT = "Replace an existing checkpoint (and, without --resume, its run folder)."


def load_model(path: Path):
    """The SceneRenderer and config stored in a scene3d checkpoint (refusing other pipelines)."""
    import torch

    from vidrender.config import from_dict
    from vidrender.io.checkpoint import check_weights, load_checkpoint
    from vidrender.pipelines.scene3d.config import Scene3dConfig
    from vidrender.pipelines.scene3d.model import SceneRenderer

    payload = load_checkpoint(path, PIPELINE)
    config = from_dict(Scene3dConfig, without_retired_keys(payload["config"]), str(path))
    if config.model.image_size > MAX_IMAGE_SIZE:
        raise UserError(f"{path}: model.image_size {config.model.image_size} is over the limit of {MAX_IMAGE_SIZE}")
    # compare shapes on a model without storage first: a config edited to describe a huge model must not
    # allocate it; once the shapes match the file's tensors, the model is no larger than the file
    with torch.device("meta"):
        check_weights(payload["weights"], SceneRenderer.from_config(config), path)
    model = SceneRenderer.from_config(config)
    model.load_state_dict(payload["weights"])
    return model.eval(), config


def without_retired_keys(config: dict) -> dict:
    """A copy of a checkpoint's stored config without the RETIRED_KEYS (the stored dict is left as is)."""
    config = dict(config)
    for section, keys in RETIRED_KEYS.items():
        if isinstance(config.get(section), dict):
            config[section] = {key: value for key, value in config[section].items() if key not in keys}
    return config


def load_source(image: Path, model):
    """The source view for `model`: (3, S, S) float in [0, 1], the image centre-cropped and resized to S."""
    import torch

    from vidrender.io.images import read_image
    from vidrender.io.video import fit_frame

    pixels = fit_frame(read_image(image)[..., :3], model.config.image_size, "crop")
    return torch.from_numpy(pixels).permute(2, 0, 1).float() / 255


def train(
    data: Annotated[Path, typer.Argument(help="Data set (ROOT, ROOT-train or a folder of scenes).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The checkpoint to write (.pt).")],
    config: Annotated[Path | None, typer.Option(help="configs/scene3d/{cpu,paper,temporal}.yaml")] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run folder's last checkpoint.")] = False,
    cpu: Annotated[bool, typer.Option("--cpu", help="Train on the CPU even if a GPU is present.")] = False,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Config override key=value.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help=OVERWRITE_CHECKPOINT)] = False,
) -> None:
    """Train a rotation- (and time-) equivariant scene model on pairs of views."""
    from accelerate.state import PartialState

    from vidrender.config import load_config, to_dict
    from vidrender.io.checkpoint import save_checkpoint
    from vidrender.pipelines.scene3d.config import Scene3dConfig
    from vidrender.pipelines.scene3d.task import Scene3dTask
    from vidrender.train import claimed_training_outputs
    from vidrender.train import train as run_training

    named = [f"train.steps={steps}"] if steps is not None else []
    settings = load_config(Scene3dConfig, config, [*(overrides or []), *named])
    with claimed_training_outputs(output, [data, *([config] if config else [])], resume, overwrite) as run_dir:
        task = Scene3dTask(settings, data)
        model = run_training(task, settings.train, run_dir, resume=resume, cpu=cpu)
        if PartialState().is_main_process:
            save_checkpoint(output, PIPELINE, to_dict(settings), model.state_dict(), task.artifact(model))
    if PartialState().is_main_process:
        print(output)


def render(
    checkpoint: Annotated[Path, typer.Argument(help="A scene3d checkpoint (.pt).")],
    image: Annotated[Path, typer.Option(help="The one source image.")],
    output: Annotated[Path, typer.Option("-o", "--output", help=".png (one view), .gif/.mp4 (--orbit/--timelapse)")],
    azimuth: Annotated[float, typer.Option(help="Camera azimuth, degrees, relative to the source view.")] = 0.0,
    elevation: Annotated[float, typer.Option(help="Camera elevation, degrees.")] = 0.0,
    dt: Annotated[float, typer.Option(help="Time offset in steps (fractions interpolate).")] = 0.0,
    orbit: Annotated[bool, typer.Option("--orbit", help="A full turn around the object.")] = False,
    timelapse: Annotated[
        bool, typer.Option("--timelapse", help="Every time slice from one view; with --orbit, turn while time runs.")
    ] = False,
    frames: Annotated[int, typer.Option(help="Frames of an orbit (or of an orbit with --timelapse).")] = 36,
    fps: Annotated[float, typer.Option(help="Frame rate of animations.")] = 12.0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")] = False,
) -> None:
    """Render new views and new times of the scene in one image."""
    from vidrender.io.outputs import Output, claim_outputs

    with claim_outputs([Output(output)], [checkpoint, image], overwrite):
        model, _ = load_model(checkpoint)
        source = load_source(image, model)
        _render(model, source, output, azimuth, elevation, dt, orbit, timelapse, frames, fps)
    print(output)


def _render(model, source, output: Path, azimuth: float, elevation: float, dt: float, orbit: bool, timelapse: bool,
            frames: int, fps: float) -> None:
    """`render`'s work once its output is claimed: one view as .png, or an animation as .gif/.mp4."""
    import torch

    from vidrender.io.images import write_image
    from vidrender.io.video_write import write_video
    from vidrender.pipelines.scene3d import infer

    with torch.inference_mode():
        if orbit or timelapse:
            if output.suffix.lower() == ".png":
                raise UserError(f"{output}: animations are written as .gif or .mp4, not .png")
            if orbit and timelapse:
                views = infer.orbit_timelapse_frames(model, source, frames=frames, elevation=elevation)
            elif orbit:
                views = infer.orbit_frames(model, source, frames=frames, elevation=elevation, dt=dt)
            else:
                views = infer.timelapse_frames(model, source, azimuth=azimuth, elevation=elevation)
            write_video(output, views, fps)
        else:
            if output.suffix.lower() != ".png":
                raise UserError(f"{output}: one view is written as .png; use --orbit or --timelapse for animations")
            write_image(output, infer.render(model, source, azimuth, elevation, dt))
    print(output)


def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A scene3d checkpoint (.pt).")],
    data: Annotated[Path, typer.Argument(help="Data set (ROOT or a split folder).")],
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    pairs: Annotated[int, typer.Option(help="Source/target pairs per scene.")] = 50,
) -> None:
    """PSNR/SSIM of novel views from one source view, vs copying the source and mean images; JSON last."""
    from vidrender.pipelines.scene3d.data import resolve_split
    from vidrender.pipelines.scene3d.evaluation import evaluate_novel_views

    model, _ = load_model(checkpoint)
    try:
        train_dir = resolve_split(data, "train")
    except UserError:  # a lone split folder: no training images to average
        train_dir = None
    print(json.dumps(evaluate_novel_views(model, resolve_split(data, split), pairs, train_dir=train_dir)))
