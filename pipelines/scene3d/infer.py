"""Inference with a trained `scene3d` model: one image in, novel views, orbits and timelapses out.

No pose is needed: a scene inferred from one image is rotated by the *relative* rotation from the view
the image was taken from (the source view) to the wanted view. When the source view is unknown, the
default source (azimuth 0, elevation 0) makes the requested angles relative turns of the camera: azimuth
about the image's vertical axis, elevation about its horizontal axis. Angles are degrees (see
`vidrender.geometry3d`). Time offsets dt are steps relative to the input image's time; fractional dt
interpolates linearly between neighbouring time slices.

Images are float tensors (3, S, S) in [0, 1] with S = the model's image size (the data loader's
crop/resize makes them); outputs are float in [0, 1] on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vidrender.errors import UserError
from vidrender.geometry3d import relative_rotation
from vidrender.pipelines.scene3d.model import SceneRenderer, select_time


def time_range(model: SceneRenderer) -> tuple[int, int]:
    """Smallest and largest time offset the model's T slices cover: [-(T // 2), T - 1 - T // 2]."""
    return -(model.timesteps // 2), model.timesteps - 1 - model.timesteps // 2


def check_offsets(model: SceneRenderer, offsets: Sequence[float]) -> None:
    """Raise UserError unless every time offset lies within `time_range(model)`."""
    low, high = time_range(model)
    for dt in offsets:
        if not low <= dt <= high:
            hint = "this model is static (no time steps)" if model.timesteps == 1 else f"T = {model.timesteps}"
            raise UserError(f"time offset --dt {dt:g} is outside [{low}, {high}] ({hint})")


def _device(model: SceneRenderer) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def infer_scenes(model: SceneRenderer, image: torch.Tensor) -> torch.Tensor:
    """All time slices of the scene seen in one image: (3, S, S) in [0, 1] -> (T, C, D, H, W)."""
    size = model.config.image_size
    if image.dim() != 3 or tuple(image.shape) != (3, size, size):
        raise UserError(f"input image has shape {tuple(image.shape)}; this model needs RGB {size}x{size}")
    return model.inverse_render(image[None].to(_device(model), torch.float32))[0]


@torch.no_grad()
def render_views(
    model: SceneRenderer,
    scenes: torch.Tensor,
    azimuths: Sequence[float],
    elevations: Sequence[float],
    offsets: Sequence[float],
    source_azimuth: float = 0.0,
    source_elevation: float = 0.0,
    chunk: int = 8,
) -> torch.Tensor:
    """Render one scene's time slices `scenes` (T, C, D, H, W) in N views -> (N, 3, S, S) in [0, 1].

    azimuths, elevations, offsets: N target camera angles (degrees) and time offsets (steps, may be
    fractional); the scene was inferred from the source view. Renders `chunk` views per batch.
    """
    if not len(azimuths) == len(elevations) == len(offsets):
        raise ValueError("render_views needs as many azimuths, elevations and offsets")
    check_offsets(model, offsets)
    device = _device(model)
    frames = []
    for start in range(0, len(azimuths), chunk):
        stop = min(start + chunk, len(azimuths))
        dt = torch.tensor(offsets[start:stop], dtype=torch.float32, device=device)
        timed = select_time(scenes.to(device).expand(stop - start, *scenes.shape), dt)
        rotation = relative_rotation(
            torch.tensor(source_azimuth, device=device),
            torch.tensor(source_elevation, device=device),
            torch.tensor(azimuths[start:stop], dtype=torch.float32, device=device),
            torch.tensor(elevations[start:stop], dtype=torch.float32, device=device),
        )
        frames.append(model.render(model.rotate(timed, rotation)).float().cpu())
    return torch.cat(frames)


def render(
    model: SceneRenderer,
    image: torch.Tensor,
    azimuth: float = 0.0,
    elevation: float = 0.0,
    dt: float = 0.0,
    source_azimuth: float = 0.0,
    source_elevation: float = 0.0,
) -> torch.Tensor:
    """One novel view of the scene in `image` (3, S, S): camera at (azimuth, elevation), dt steps later."""
    scenes = infer_scenes(model, image)
    return render_views(model, scenes, [azimuth], [elevation], [dt], source_azimuth, source_elevation)[0]


def orbit_frames(
    model: SceneRenderer,
    image: torch.Tensor,
    frames: int = 36,
    elevation: float | None = None,
    dt: float = 0.0,
    source_azimuth: float = 0.0,
    source_elevation: float = 0.0,
) -> torch.Tensor:
    """A full turn of the camera around the scene in `image`: (frames, 3, S, S), starting at the source.

    The camera keeps `elevation` (default: the source's) while its azimuth steps by 360 / frames.
    """
    if frames < 1:
        raise UserError(f"an orbit needs at least 1 frame, got {frames}")
    keep = source_elevation if elevation is None else elevation
    azimuths = [source_azimuth + 360.0 * index / frames for index in range(frames)]
    scenes = infer_scenes(model, image)
    return render_views(model, scenes, azimuths, [keep] * frames, [dt] * frames, source_azimuth, source_elevation)


def timelapse_frames(
    model: SceneRenderer,
    image: torch.Tensor,
    frames: int | None = None,
    dt_range: tuple[float, float] | None = None,
    azimuth: float = 0.0,
    elevation: float = 0.0,
    source_azimuth: float = 0.0,
    source_elevation: float = 0.0,
) -> torch.Tensor:
    """The scene in `image` evolving over time from one view: (frames, 3, S, S).

    dt_range (first, last) defaults to the model's whole range; frames defaults to one per time step.
    More frames than steps interpolate between slices.
    """
    if model.timesteps == 1:
        raise UserError("--timelapse needs a temporal model (temporal.timesteps > 1); this one is static")
    first, last = time_range(model) if dt_range is None else dt_range
    frames = int(round(last - first)) + 1 if frames is None else frames
    if frames < 2:
        raise UserError(f"a timelapse needs at least 2 frames, got {frames}")
    offsets = torch.linspace(first, last, frames).tolist()
    scenes = infer_scenes(model, image)
    return render_views(
        model, scenes, [azimuth] * frames, [elevation] * frames, offsets, source_azimuth, source_elevation
    )


def orbit_timelapse_frames(
    model: SceneRenderer,
    image: torch.Tensor,
    frames: int = 36,
    elevation: float | None = None,
    dt_range: tuple[float, float] | None = None,
    source_azimuth: float = 0.0,
    source_elevation: float = 0.0,
) -> torch.Tensor:
    """The camera turns once around the scene in `image` while time runs: (frames, 3, S, S).

    Frame i: azimuth source + 360 i / frames at `elevation` (default: the source's), time offset
    linearly from dt_range[0] to dt_range[1] (default: the model's whole range; fractions interpolate).
    """
    if model.timesteps == 1:
        raise UserError("--orbit with --timelapse needs a temporal model (temporal.timesteps > 1); this one is static")
    if frames < 2:
        raise UserError(f"an animation needs at least 2 frames, got {frames}")
    first, last = time_range(model) if dt_range is None else dt_range
    keep = source_elevation if elevation is None else elevation
    azimuths = [source_azimuth + 360.0 * index / frames for index in range(frames)]
    offsets = torch.linspace(first, last, frames).tolist()
    scenes = infer_scenes(model, image)
    return render_views(model, scenes, azimuths, [keep] * frames, offsets, source_azimuth, source_elevation)
