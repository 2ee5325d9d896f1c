"""`vidrender compose`: the character of one trained clip over the background of another, in pixels.

Frame t of the output is `alpha_t * char_t + (1 - alpha_t) * plate_B`, where the character layer
(reference RGBA of clip A) is moved by affine M_t (normalized coordinates, so a character trained at one
resolution lands at the same relative place and size on a background of another). M_t comes from:
  * `source`      clip A's own motion;
  * `background`  clip B's character's motion (B's character is replaced: B's clean plate is used);
  * `PATH.json`   a trajectory file (the format `export` writes);
then optionally edited: `--translate DX,DY` (fraction of the frame per second), `--rotate DEG` (degrees
per second, counter-clockwise on screen), `--scale S` (factor per second), all about the frame centre
and applied after the motion; `--speed` resamples time, `--frames N` sets the length (looping).
"""

from __future__ import annotations

import math

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


def edits(frames: int, fps: float, translate: tuple[float, float], rotate: float, scale: float) -> torch.Tensor:
    """Per-frame edit affines (frames, 2, 3): rates per second, about the frame centre."""
    seconds = torch.arange(frames, dtype=torch.float32) / fps
    if scale <= 0:
        raise UserError(f"--scale must be positive, got {scale}")
    return geometry.from_params(
        2 * translate[0] * seconds, 2 * translate[1] * seconds, torch.deg2rad(rotate * seconds), scale**seconds
    )


def compose_frames(character: dict, background: dict, affines: torch.Tensor) -> torch.Tensor:
    """(T, 3, H, W) frames: the character entry moved by `affines` over the background's plate.

    The character layer is resized to the background's size first; affines are normalized, so its place
    and size relative to the frame are kept.
    """
    plate = background["plate"].float()
    layer = character["character"].float()
    if layer.shape[-2:] != plate.shape[-2:]:
        layer = torch.nn.functional.interpolate(layer[None], size=plate.shape[-2:], mode="bilinear",
                                                align_corners=False, antialias=True)[0]
    moved = character_frames({**character, "character": layer}, affines)
    return over(moved, plate)
