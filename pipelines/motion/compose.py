"""`vidrender compose`: the character of one trained clip over the background of another, in pixels.

Frame t of the output is `alpha_t * char_t + (1 - alpha_t) * plate_B`, where the character layer
(reference RGBA of clip A) is moved by affine M_t (normalized coordinates, so a character trained at one
resolution lands at the same relative place and size on a background of another). M_t comes from:
  * `source`      clip A's own motion;
  * `background`  clip B's character's motion (B's character is replaced: B's clean plate is used);
  * `PATH.json`   a trajectory file (the format `export` writes);
then optionally edited: `--translate DX,DY` (fraction of the frame per second), `--rotate DEG` (degrees
per second, counter-clockwise on screen), `--scale S` (factor per second), all about the frame centre
and applied after the motion; `--speed` resamples time, `--frames N` sets the length (looping). The
edits are rigid in pixels of the output frame, so a rotation stays a rotation on a non-square frame.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from pipelines.motion.layers import character_frames, over
from vidrender import geometry
from vidrender.errors import UserError
from vidrender.io.trajectory import read_trajectory


def motion_path(motion: str, character: dict, background: dict) -> tuple[torch.Tensor, float]:
    """Affines (T, 2, 3) normalized and their frame rate for a `--motion` value."""
    if motion == "source":
        return character["affines"].float(), float(character["fps"])
    if motion == "background":
        return background["affines"].float(), float(background["fps"])
    if not Path(motion).is_file():
        raise UserError(f"--motion: {motion!r} is not 'source', 'background' or an existing trajectory file")
    width, height = background["plate"].shape[-1], background["plate"].shape[-2]
    affines, info = read_trajectory(motion, width=width, height=height)
    return affines.float(), float(info.get("fps") or background["fps"])


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


def compose_frames(character: dict, background: dict, affines: torch.Tensor) -> torch.Tensor:
    """(T, 3, H, W) frames: the character entry moved by `affines` over the background's plate (3, H, W).

    affines: (T, 2, 3) normalized, so the character keeps its place and size relative to the frame
    whatever the two clips' sizes (`layers.character_frames`).
    """
    plate = background["plate"].float()
    return over(character_frames(character, affines, tuple(plate.shape[-2:])), plate)
