"""Synthetic camera motion: smooth per-frame camera paths over a world plate larger than the frame.

A moving-camera clip has a *world*: a plate (W_w x H_w pixels) that holds every pixel any frame sees,
and the character, placed in the world. Frame t is what the camera sees of it. Conventions:

* `camera_path` returns, per frame, a pixel-coordinate 3x3 `M_t` mapping frame-t pixels (origin at the
  top-left corner, pixel centres at +0.5) to pixels of the *home view*: the frame-sized window of the
  world that the reference frame shows (`M_reference = I`). The character moves inside the home view,
  in world coordinates: its world placement does not depend on the camera, so a character that stands
  still stays planted while the camera pans, zooms or shakes, and the reference frame shows all of it
  (as in a static clip). The other frames show what their camera sees: a pan of over half a frame
  leaves part of the character, or all of it, out of view near the far end of the clip.
* `world_frame` finds the world plate's size and where the home view sits in it, so that every frame's
  view (and the home view) lies inside the plate with a margin: world pixels = home-view pixels + offset.
* The clip's cameras (`SynthClip.camera`) are `M_t` expressed frame -> world plate in normalized
  coordinates, the convention of `vidrender.geometry.CAMERA_CONVENTION` (`camera.json`, the layer stack).

Kinds (`CAMERA_KINDS`): "pan" (a smooth, eased translation of 55-75 % of the frame width, plus a little
vertical drift), "zoom" (scale from 1 to 1.25-1.35 or back, about a point near the centre), "handheld"
(shake: 1.5-3 % of the frame in translation, 1.5-3 degrees of rotation and 1-2 % of scale, each a sum
of low-frequency sines, so smooth over time) and "pan-zoom" (a pan and a zoom at once). One world
pixel is one pixel of the reference frame; the other frames magnify or shrink the plate by their zoom
relative to it (up to 1.35).
"""

from __future__ import annotations

import math

import numpy as np

from vidrender.errors import UserError
from vidrender.synth.motion import smooth_signal

CAMERA_KINDS = ("pan", "zoom", "handheld", "pan-zoom")
# world pixels kept around the outermost view, so bilinear sampling never reads past the plate's edge
WORLD_MARGIN = 2


def check_kind(kind: str | None) -> None:
    """UserError unless `kind` is None (a static camera) or one of CAMERA_KINDS."""
    if kind is not None and kind not in CAMERA_KINDS:
        raise UserError(f"unknown camera motion {kind!r}; choose from {', '.join(CAMERA_KINDS)}")


def _translation(dx, dy) -> np.ndarray:
    """(T, 3, 3) translations by (dx, dy), each (T,)."""
    matrices = np.repeat(np.eye(3)[None], len(dx), axis=0)
    matrices[:, 0, 2], matrices[:, 1, 2] = dx, dy
    return matrices


def _about(point: tuple[float, float], linear: np.ndarray) -> np.ndarray:
    """(T, 3, 3) maps applying the linear parts `linear` (T, 2, 2) about the pixel `point`."""
    matrices = np.repeat(np.eye(3)[None], len(linear), axis=0)
    matrices[:, :2, :2] = linear
    matrices[:, :2, 2] = np.asarray(point) - linear @ np.asarray(point)
    return matrices


def ease(rng: np.random.Generator, frames: int) -> np.ndarray:
    """(T,) from -0.5 to 0.5, monotonic: a camera move that speeds up, varies its speed a little, and
    slows down at the end (a cosine ease of a randomly varying progress)."""
    speed = 1 + 0.4 * smooth_signal(rng, frames, (0.5, 1.5))
    progress = np.concatenate([[0.0], np.cumsum(speed[1:])])
    progress /= max(progress[-1], 1e-9)
    return -0.5 * np.cos(np.pi * progress)


def _pan(rng: np.random.Generator, frames: int, width: int, height: int) -> np.ndarray:
    direction = 1 if rng.random() < 0.5 else -1
    across, drift = direction * rng.uniform(0.55, 0.75) * width, rng.uniform(-0.15, 0.15) * height
    progress = ease(rng, frames)
    return _translation(across * progress, drift * progress)


def _zoom(rng: np.random.Generator, frames: int, width: int, height: int) -> np.ndarray:
    largest = rng.uniform(1.25, 1.35)
    progress = ease(rng, frames) + 0.5
    zoom = 1 + (largest - 1) * (progress if rng.random() < 0.5 else 1 - progress)
    centre = (width * rng.uniform(0.4, 0.6), height * rng.uniform(0.4, 0.6))
    # zoom z magnifies the world: a frame pixel covers 1 / z world pixels
    return _about(centre, np.eye(2)[None] / zoom[:, None, None])


def _handheld(rng: np.random.Generator, frames: int, width: int, height: int) -> np.ndarray:
    cycles = (1.0, 3.0)
    shift = [rng.uniform(0.015, 0.03) * extent * smooth_signal(rng, frames, cycles) for extent in (width, height)]
    angle = math.radians(rng.uniform(1.5, 3.0)) * smooth_signal(rng, frames, cycles)
    scale = 1 + rng.uniform(0.01, 0.02) * smooth_signal(rng, frames, cycles)
    c, s = np.cos(angle), np.sin(angle)
    linear = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2) * scale[:, None, None]
    return _translation(*shift) @ _about((width / 2, height / 2), linear)


def camera_path(rng: np.random.Generator, kind: str, frames: int, width: int, height: int,
                reference: int = 0) -> np.ndarray:
    """(T, 3, 3) float64 pixel maps frame t -> home view (module docstring) of a `kind` camera move over
    `frames` frames of `width` x `height`; the home view is frame `reference`'s, so its map is I."""
    check_kind(kind)
    if kind == "pan":
        path = _pan(rng, frames, width, height)
    elif kind == "zoom":
        path = _zoom(rng, frames, width, height)
    elif kind == "handheld":
        path = _handheld(rng, frames, width, height)
    else:
        path = _pan(rng, frames, width, height) @ _zoom(rng, frames, width, height)
    return np.linalg.inv(path[reference]) @ path


def _corners(width: int, height: int) -> np.ndarray:
    """(4, 3) homogeneous pixel coordinates of a frame's outer corners."""
    return np.array([[0, 0, 1], [width, 0, 1], [width, height, 1], [0, height, 1]], np.float64)


def world_frame(views: np.ndarray, width: int, height: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Where the world plate lies: (offset (3, 3), a translation home-view pixels -> world pixels, and the
    plate's (W_w, H_w)), such that every frame's view `views` (T, 3, 3, frame -> home view) and the home
    view itself lie inside the plate with WORLD_MARGIN pixels to spare."""
    corners = _corners(width, height)
    seen = np.einsum("tij,nj->tni", views, corners)
    points = np.concatenate([seen[..., :2] / seen[..., 2:], corners[None, :, :2]]).reshape(-1, 2)
    low = np.floor(points.min(axis=0)) - WORLD_MARGIN
    high = np.ceil(points.max(axis=0)) + WORLD_MARGIN
    size = (int(high[0] - low[0]), int(high[1] - low[1]))
    return _translation([-low[0]], [-low[1]])[0], size
