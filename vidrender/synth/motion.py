"""Smooth random character motion for synthetic clips: per-frame translation, rotation, scale and shear.

Each motion parameter follows a sum of three low-frequency sines, so paths are smooth and never
repeat exactly. The result is a *placement* per frame: a pixel-coordinate affine (T, 2, 3), float64,
mapping sprite pixel coordinates (origin at the sprite's top-left corner, x right, y down) to frame
pixel coordinates (origin at the frame's top-left corner). The clip's affines follow from them:
`A_t = placement_t @ placement_ref^-1` (see `vidrender/geometry.py` for the conventions).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from vidrender import geometry
from vidrender.errors import UserError


@dataclass(frozen=True)
class MotionRanges:
    """How far the character may move over a clip.

    travel:   fraction (0..1) of the room the character has inside the frame that its centre sweeps.
    rotation: largest |angle| in degrees away from the sprite's upright pose.
    scale:    (smallest, largest) size factor, relative to the size that gives the clip's coverage.
    shear:    largest |shear| factor (x shifted by shear * y in the character's own axes).
    cycles:   (min, max) number of oscillations over the clip of each parameter; larger is faster.
    """

    travel: float = 1.0
    rotation: float = 30.0
    scale: tuple[float, float] = (0.8, 1.25)
    shear: float = 0.1
    cycles: tuple[float, float] = (0.5, 1.5)

    def validate(self) -> None:
        """Raise UserError naming the first out-of-range field."""
        if not 0 <= self.travel <= 1:
            raise UserError(f"motion travel must be in [0, 1], got {self.travel}")
        if not 0 <= self.rotation <= 180:
            raise UserError(f"motion rotation must be in [0, 180] degrees, got {self.rotation}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise UserError(f"motion scale must be (low, high) with 0 < low <= high, got {self.scale}")
        if not 0 <= self.shear < 1:
            raise UserError(f"motion shear must be in [0, 1), got {self.shear}")
        if not 0 < self.cycles[0] <= self.cycles[1]:
            raise UserError(f"motion cycles must be (low, high) with 0 < low <= high, got {self.cycles}")

    def to_dict(self) -> dict:
        """JSON-able form (tuples become lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


def smooth_signal(rng: np.random.Generator, frames: int, cycles: tuple[float, float]) -> np.ndarray:
    """(frames,) float64 sum of three sines with `cycles` oscillations per clip, rescaled to span [-1, 1]."""
    t = np.arange(frames) / max(frames, 1)
    signal = sum(
        rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * rng.uniform(*cycles) * t + rng.uniform(0, 2 * np.pi))
        for _ in range(3)
    )
    low, high = float(signal.min()), float(signal.max())
    return 2 * (signal - low) / max(high - low, 1e-9) - 1


def linear_parts(angle: np.ndarray, scale: np.ndarray, shear: np.ndarray) -> np.ndarray:
    """(T, 2, 2) rotation @ shear @ scale matrices, same convention as `geometry.from_params`."""
    zeros = torch.zeros(len(angle), dtype=torch.float64)
    affine = geometry.from_params(zeros, zeros, torch.as_tensor(angle), torch.as_tensor(scale), torch.as_tensor(shear))
    return affine[:, :, :2].numpy()


def _inside_path(rng: np.random.Generator, signal: np.ndarray, low: float, high: float, travel: float) -> np.ndarray:
    """Map a signal in [-1, 1] to positions that stay within [low, high], sweeping `travel` of the room."""
    if high <= low:
        return np.full_like(signal, (low + high) / 2)
    span = travel * (high - low) * rng.uniform(0.7, 1.0)
    middle = rng.uniform(low + span / 2, high - span / 2)
    return middle + span / 2 * signal


def _exit_path(
    rng: np.random.Generator,
    frames: int,
    reference: int,
    extent: float,
    radius: float,
    low: float,
    high: float,
) -> np.ndarray:
    """Positions that start inside [low, high] at `reference`, leave the frame [0, extent] entirely
    (past the character's `radius`) and come back, along a smooth sin^2 excursion."""
    start = rng.uniform(low, high) if high > low else extent / 2
    toward_end = rng.random() < 0.5
    distance = (extent + radius - start) if toward_end else (start + radius)
    # overshoot so that several frames are fully outside, not just the peak one
    depth = 1.2 * distance + 2
    period = rng.uniform(0.6, 0.9) * frames
    excursion = np.sin(np.pi * (np.arange(frames) - reference) / period) ** 2
    return start + (depth if toward_end else -depth) * excursion


def character_radius(alpha: np.ndarray, sprite_scale: float) -> float:
    """Largest distance (frame pixels at scale 1) from the sprite centre to a visible sprite pixel corner."""
    ys, xs = np.nonzero(alpha > 0)
    h, w = alpha.shape
    dx = np.abs(xs + 0.5 - w / 2) + 0.5
    dy = np.abs(ys + 0.5 - h / 2) + 0.5
    return float(np.sqrt(dx**2 + dy**2).max() * sprite_scale)


def random_placements(
    rng: np.random.Generator,
    frames: int,
    width: int,
    height: int,
    sprite_alpha: np.ndarray,
    sprite_scale: float,
    ranges: MotionRanges,
    leave_frame: bool = False,
    reference: int = 0,
) -> np.ndarray:
    """Per-frame sprite placements (T, 2, 3) float64, pixel coordinates (sprite -> frame).

    `sprite_alpha` (h, w) is the sprite's coverage and `sprite_scale` the frame pixels per sprite pixel
    at motion scale 1. Without `leave_frame` the whole character stays inside the frame in every frame;
    with it, the character leaves the frame completely along one axis and comes back, and is fully
    inside at the `reference` frame.
    """
    angle = math.radians(ranges.rotation) * rng.uniform(0.6, 1.0) * smooth_signal(rng, frames, ranges.cycles)
    log_low, log_high = math.log(ranges.scale[0]), math.log(ranges.scale[1])
    scale = np.exp((log_low + log_high) / 2 + (log_high - log_low) / 2 * smooth_signal(rng, frames, ranges.cycles))
    shear = ranges.shear * rng.uniform(0.5, 1.0) * smooth_signal(rng, frames, ranges.cycles)
    linear = linear_parts(angle, scale * sprite_scale, shear)

    # the room the centre has: the character's farthest point, under the largest linear part, stays inside
    radius = character_radius(sprite_alpha, 1.0) * float(np.linalg.norm(linear, ord=2, axis=(1, 2)).max())
    exit_axis = int(rng.integers(2)) if leave_frame else -1
    centre = np.empty((frames, 2))
    for axis, extent in enumerate((width, height)):
        low, high = radius, extent - radius
        if axis == exit_axis:
            centre[:, axis] = _exit_path(rng, frames, reference, extent, radius, low, high)
        else:
            centre[:, axis] = _inside_path(rng, smooth_signal(rng, frames, ranges.cycles), low, high, ranges.travel)

    h, w = sprite_alpha.shape
    sprite_centre = np.array([w / 2, h / 2])
    translation = centre - linear @ sprite_centre
    return np.concatenate([linear, translation[:, :, None]], axis=-1)


def affines_from_placements(placements: np.ndarray, reference: int) -> np.ndarray:
    """Pixel affines (T, 2, 3) float64 from the reference frame to each frame: P_t @ P_ref^-1."""
    P = geometry.to_homogeneous(torch.as_tensor(placements, dtype=torch.float64))
    return (P @ torch.linalg.inv(P[reference]))[:, :2, :].numpy()
