"""`compose`: the character of one clip's layer stack over the background of another, in pixels.

Frame i of the output is the character layer (reference RGBA of stack A) moved by M_i, laid `over` the
background of stack B. M_i is in normalized coordinates, so a character taken apart at one resolution
lands at the same relative place and size on a background of another. It comes from `motion`:
  * `source`      A's character's own motion;
  * `background`  B's character's motion (B's character is replaced: B's clean plate is used);
  * `PATH.json`   a trajectory file (the format `export` writes);
then optionally edited: `translate` (DX, DY in frame widths/heights per second), `rotate` (degrees per
second, counter-clockwise on screen), `scale` (factor per second), all about the frame centre and applied
after the motion; `speed` resamples time, `frames` sets the length (looping). The edits are rigid in
pixels of the output frame, so a rotation stays a rotation on a non-square frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from vidrender import geometry
from vidrender.errors import UserError
from vidrender.io.trajectory import read_trajectory
from vidrender.io.video import DEFAULT_MAX_PIXELS
from vidrender.pipelines.motion.inputs import MAX_CLIP_BYTES
from vidrender.pipelines.motion.stack import LayerStack, composite, straight


@dataclass
class Composite:
    """What `compose` makes: `frames` (N, 3, H, W) RGB, or (N, 4, H, W) straight RGBA for a layer alone,
    in [0, 1], to be played at `fps`."""

    frames: torch.Tensor
    fps: float


def compose(character: LayerStack, background: LayerStack, motion: str | Path = "source", frames: int | None = None,
            fps: float | None = None, size: tuple[int, int] | None = None, translate: tuple[float, float] = (0.0, 0.0),
            rotate: float = 0.0, scale: float = 1.0, speed: float = 1.0, layers_only: bool = False) -> Composite:
    """The first character of `character` over the background of `background` (module doc).

    size: (W, H) of the output, default the background's native size; fps: default the background's;
    frames: default the motion played once at the output rate; layers_only: the moved character layer
    alone, with alpha. Bad values are one `UserError`.
    """
    # 1. the output grid: the background's size and frame rate unless told otherwise
    width, height = background.size[::-1] if size is None else size
    if width * height > DEFAULT_MAX_PIXELS:
        raise UserError(f"--size: {width}x{height} is over the limit of {DEFAULT_MAX_PIXELS / 1e6:.0f} Mpixel a frame")
    out_fps = background.fps if fps is None else fps  # --fps 0 is an error, not "the default"
    if not 0 < out_fps < math.inf:
        raise UserError(f"--fps must be positive, got {out_fps}")
    if not 0 < speed < math.inf:
        raise UserError(f"--speed must be a positive number, got {speed}")
    if frames is not None and frames < 1:
        raise UserError(f"--frames must be 1 or more, got {frames}")
    # 2. the motion, its length at the output rate, and the memory that length needs
    path, path_fps = motion_path(str(motion), character, background, (width, height))
    count = frames or max(1, round(path.shape[0] * out_fps / path_fps / speed))
    needed = count * 7 * height * width * 4  # the moved RGBA layer and the composited RGB, float32
    if needed > MAX_CLIP_BYTES:
        raise UserError(f"{count} frames of {width}x{height} need {needed / 1024**3:.1f} GB in memory "
                        f"(limit {MAX_CLIP_BYTES / 1024**3:.0f} GB); ask for fewer --frames or a smaller --size")
    # 3. retime to the output rate, then apply the edits after the motion
    affines = retime(path, path_fps, out_fps, count, speed)
    affines = geometry.compose(edits(count, out_fps, translate, rotate, scale, (width, height)), affines)
    # 4. render: the layer sampled once into the output grid, over the background's view of its plate
    layer = character.characters[0].moved(affines, (height, width))
    if layers_only:
        return Composite(straight(layer), out_fps)
    return Composite(composite(background.background.views(count, (height, width)), [layer]), out_fps)


def motion_path(motion: str, character: LayerStack, background: LayerStack, size: tuple[int, int]
                ) -> tuple[torch.Tensor, float]:
    """Affines (T, 2, 3) normalized and their frame rate for a `motion` value; a trajectory file without
    its own "width"/"height" is read on the output's pixel grid `size` (W, H)."""
    if motion == "source":
        return character.characters[0].affines.float(), float(character.fps)
    if motion == "background":
        return background.characters[0].affines.float(), float(background.fps)
    if not Path(motion).is_file():
        raise UserError(f"--motion: {motion!r} is not 'source', 'background' or an existing trajectory file")
    affines, info = read_trajectory(motion, width=size[0], height=size[1])
    return affines.float(), float(info.get("fps") or background.fps)


def retime(affines: torch.Tensor, source_fps: float, fps: float, frames: int, speed: float) -> torch.Tensor:
    """Sample a motion at the output rate: output frame i shows motion time i / fps * speed (looping)."""
    if speed <= 0 or not math.isfinite(speed):
        raise UserError(f"--speed must be a positive number, got {speed}")
    times = torch.arange(frames, dtype=torch.float64) / fps * speed * source_fps
    index = times.round().long() % affines.shape[0]
    return affines[index]


def output_size(text: str) -> tuple[int, int]:
    """(width, height) from a `--size` value like "640x360": two whole numbers of at least 2."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise UserError(f"--size: expected WIDTHxHEIGHT in whole pixels like 640x360, got {text!r}")
    width, height = (int(part) for part in parts)
    if width < 2 or height < 2:
        raise UserError(f"--size: {text} is too small")
    return width, height


def edits(frames: int, fps: float, translate: tuple[float, float], rotate: float, scale: float,
          size: tuple[int, int]) -> torch.Tensor:
    """Per-frame edit affines (frames, 2, 3), normalized for an output of `size` (W, H).

    Rates per second about the frame centre: translate in frame widths/heights, rotate in degrees
    counter-clockwise on screen, scale as a factor. Built in pixels and then normalized, because a
    rotation in normalized coordinates would shear a non-square frame.
    """
    if not all(math.isfinite(value) for value in (*translate, rotate, scale)):
        raise UserError("--translate, --rotate and --scale must be finite numbers")
    if scale <= 0:
        raise UserError(f"--scale must be positive, got {scale}")
    width, height = size
    seconds = torch.arange(frames, dtype=torch.float64) / fps
    zero = torch.zeros_like(seconds)
    linear = geometry.from_params(zero, zero, torch.deg2rad(rotate * seconds), scale**seconds)[..., :2]
    centre = torch.tensor([width / 2, height / 2], dtype=torch.float64)
    shift = torch.stack([translate[0] * width * seconds, translate[1] * height * seconds], -1)
    # about the centre: p -> L (p - c) + c + shift
    offset = centre + shift - linear @ centre
    pixel = torch.cat([linear, offset[..., None]], dim=-1)
    normalized = geometry.pixel_to_normalized(pixel, width, height).float()
    # a large rate compounds over a long clip: refuse what overflows or collapses to a point in float32
    if not (torch.isfinite(normalized).all() and torch.isfinite(geometry.invert(normalized)).all()):
        raise UserError(f"--translate/--scale: over {frames} frames the edit leaves the range of numbers it can render")
    return normalized
