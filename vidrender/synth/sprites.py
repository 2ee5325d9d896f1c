"""Procedural characters: asymmetric RGBA sprites built from textured, outlined shapes.

A character is a body (ellipse, polygon, star or blob) with one to three appendages and an off-centre
"eye", each part filled with its own texture (stripes, checker, noise, gradient or flat colour) and
outlined. Parts are drawn on a large canvas and area-downsampled, so edges are anti-aliased. The
result is checked not to look the same after any rotation, so rotation is observable in a clip.

Arrays here are numpy float32, channels last: RGBA (h, w, 4) with straight (not premultiplied) colour
in [0, 1], rows top to bottom.
"""

from __future__ import annotations

import cv2
import numpy as np

from vidrender.compositing import over
from vidrender.synth.textures import (
    checker,
    colourize,
    linear_gradient,
    random_colours,
    smooth_noise,
    stripes,
)

SHAPES = ("ellipse", "polygon", "star", "blob")
FILLS = ("stripes", "checker", "noise", "gradient", "flat")
CANVAS = 384
# Rotations (degrees) under which a character must not match itself, including the k-fold symmetries
# a star or regular polygon could have.
_SYMMETRY_ANGLES = (45, 60, 72, 90, 120, 180)
_MAX_SYMMETRY_IOU = 0.9


def shape_mask(rng: np.random.Generator, kind: str, centre: np.ndarray, radius: float, canvas: int) -> np.ndarray:
    """Anti-aliased coverage (canvas, canvas) float32 in [0, 1] of one random shape of `kind` at `centre`."""
    mask = np.zeros((canvas, canvas), np.uint8)
    if kind == "ellipse":
        axes = (int(radius * rng.uniform(0.7, 1.0)), int(radius * rng.uniform(0.4, 0.8)))
        cv2.ellipse(mask, (int(centre[0]), int(centre[1])), axes, rng.uniform(0, 180), 0, 360, 255, -1, cv2.LINE_AA)
        return mask.astype(np.float32) / 255
    if kind == "polygon":
        # evenly spread vertex directions, jittered: irregular, but never a thin sliver
        count = int(rng.integers(3, 8))
        angles = (np.arange(count) + rng.uniform(-0.3, 0.3, count)) * 2 * np.pi / count + rng.uniform(0, 2 * np.pi)
        radii = radius * rng.uniform(0.6, 1.1, count)
    elif kind == "star":
        points = int(rng.integers(4, 8))
        angles = np.arange(2 * points) * np.pi / points + rng.uniform(0, 2 * np.pi)
        radii = np.where(np.arange(2 * points) % 2 == 0, radius, radius * rng.uniform(0.4, 0.65))
        radii = radii * rng.uniform(0.9, 1.1, len(angles))
    elif kind == "blob":
        angles = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        wobble = sum(rng.uniform(0, 0.15) * np.cos(k * angles + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4))
        radii = radius * (0.85 + wobble)
    else:
        raise ValueError(f"unknown shape {kind!r}; expected one of {', '.join(SHAPES)}")
    vertices = centre + np.stack([np.cos(angles), np.sin(angles)], -1) * radii[:, None]
    # 4 fractional bits: sub-pixel vertex positions keep small shapes smooth
    cv2.fillPoly(mask, [np.round(vertices * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) / 255


def fill_texture(rng: np.random.Generator, kind: str, canvas: int, feature: float) -> np.ndarray:
    """Colour fill (canvas, canvas, 3) of `kind` whose pattern period is about `feature` canvas pixels."""
    colours = random_colours(rng, int(rng.integers(2, 4)))
    if kind == "stripes":
        field = stripes(rng, canvas, canvas, feature * rng.uniform(0.8, 1.5))
    elif kind == "checker":
        field = checker(rng, canvas, canvas, feature * rng.uniform(0.6, 1.0))
    elif kind == "noise":
        field = smooth_noise(rng, canvas, canvas, cells=max(2, int(canvas / (2 * feature))), octaves=2)
    elif kind == "gradient":
        field = linear_gradient(rng, canvas, canvas)
    elif kind == "flat":
        field = np.full((canvas, canvas), rng.uniform(0, 1), np.float32)
    else:
        raise ValueError(f"unknown fill {kind!r}; expected one of {', '.join(FILLS)}")
    return colourize(field, colours)


def outlined_part(coverage: np.ndarray, fill: np.ndarray, outline: np.ndarray, width: int) -> np.ndarray:
    """Premultiplied RGBA (canvas, canvas, 4): `fill` inside `coverage`, ringed by `width` px of `outline`."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    outer = cv2.dilate(coverage, kernel)
    rgb = coverage[..., None] * fill + (outer - coverage)[..., None] * outline
    return np.concatenate([rgb, outer[..., None]], -1).astype(np.float32)


def _rotation_iou(alpha: np.ndarray, degrees: float) -> float:
    """IoU of the (alpha > 0.5) shape with itself rotated by `degrees` about its centroid."""
    ys, xs = np.nonzero(alpha > 0.5)
    matrix = cv2.getRotationMatrix2D((float(xs.mean()), float(ys.mean())), degrees, 1.0)
    rotated = cv2.warpAffine(alpha, matrix, alpha.shape[::-1], flags=cv2.INTER_LINEAR)
    a, b = alpha > 0.5, rotated > 0.5
    return float((a & b).sum() / max((a | b).sum(), 1))


def is_rotation_symmetric(alpha: np.ndarray) -> bool:
    """Whether the shape of `alpha` (h, w) nearly matches itself after one of the tested rotations."""
    small = cv2.resize(alpha, (96, 96), interpolation=cv2.INTER_AREA)
    return any(_rotation_iou(small, angle) > _MAX_SYMMETRY_IOU for angle in _SYMMETRY_ANGLES)


def _boundary_point(rng: np.random.Generator, coverage: np.ndarray) -> np.ndarray:
    """A random point (x, y) on the outline of the shape `coverage > 0.5`."""
    contours, _ = cv2.findContours((coverage > 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    points = np.concatenate(contours)[:, 0]
    return points[rng.integers(len(points))].astype(np.float64)


def _eye_place(rng: np.random.Generator, body: np.ndarray, radius: float) -> tuple[np.ndarray, float]:
    """Centre and radius of an eye that fits inside the body, away from the body's centre."""
    inside = (body > 0.5).astype(np.uint8)
    depth = cv2.distanceTransform(inside, cv2.DIST_L2, 5)
    ys, xs = np.nonzero(inside)
    centroid = np.array([xs.mean(), ys.mean()])
    ys, xs = np.nonzero(depth >= 1.3 * radius)
    candidates = np.stack([xs, ys], -1).astype(np.float64)
    off_centre = candidates[np.linalg.norm(candidates - centroid, axis=-1) > 0.8 * radius]
    if len(off_centre):
        return off_centre[rng.integers(len(off_centre))], radius
    deepest = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return np.array([deepest[1], deepest[0]], np.float64), 0.7 * float(depth.max())


def _draw_character(rng: np.random.Generator, canvas: int) -> np.ndarray:
    """One random character, premultiplied RGBA (canvas, canvas, 4); may happen to be symmetric."""
    centre = np.array([canvas / 2, canvas / 2])
    radius = canvas * 0.2
    outline_width = max(2, int(radius * rng.uniform(0.05, 0.09)))
    dark_outline = rng.random() < 0.7
    outline = np.full(3, rng.uniform(0.02, 0.15) if dark_outline else rng.uniform(0.85, 1.0), np.float32)

    def part(coverage: np.ndarray) -> np.ndarray:
        fill = fill_texture(rng, FILLS[rng.integers(len(FILLS))], canvas, feature=radius * rng.uniform(0.25, 0.45))
        return outlined_part(coverage, fill, outline, outline_width)

    body = shape_mask(rng, SHAPES[rng.integers(len(SHAPES))], centre, radius, canvas)
    character = part(body)
    # limbs sit on the body's outline, so the character is one connected piece
    for _ in range(rng.integers(1, 4)):
        at = _boundary_point(rng, body)
        limb = part(shape_mask(rng, SHAPES[rng.integers(len(SHAPES))], at, radius * rng.uniform(0.3, 0.55), canvas))
        front, back = (limb, character) if rng.random() < 0.5 else (character, limb)
        character = over(front, back, channel_axis=-1)
    # an eye: white disc with a dark pupil, off-centre on the body, so the character has a clear "front"
    eye_at, eye_radius = _eye_place(rng, body, radius * rng.uniform(0.14, 0.22))
    white = np.ones(3, np.float32) * rng.uniform(0.9, 1.0)
    eye = outlined_part(
        shape_mask(rng, "ellipse", eye_at, eye_radius, canvas),
        np.broadcast_to(white, (canvas, canvas, 3)),
        outline,
        max(1, outline_width // 2),
    )
    look = rng.uniform(0, 2 * np.pi)
    pupil_at = eye_at + eye_radius * 0.35 * np.array([np.cos(look), np.sin(look)])
    pupil = shape_mask(rng, "ellipse", pupil_at, eye_radius * 0.5, canvas)
    pupil_layer = np.concatenate([np.repeat(pupil[..., None] * 0.05, 3, -1), pupil[..., None]], -1)
    return over(over(pupil_layer, eye, channel_axis=-1), character, channel_axis=-1)


def procedural_character(rng: np.random.Generator, canvas: int = CANVAS, attempts: int = 20) -> np.ndarray:
    """A random asymmetric character on a `canvas`-pixel square, premultiplied RGBA (canvas, canvas, 4).

    Draws until the shape does not match itself under any tested rotation (at most `attempts` draws;
    the texture and eye already break symmetry, this makes the silhouette alone break it too).
    """
    for _ in range(attempts):
        character = _draw_character(rng, canvas)
        if not is_rotation_symmetric(character[..., 3]):
            return character
    return character


def fit_sprite(premultiplied: np.ndarray, pixels_per_canvas_pixel: float, margin: int = 2) -> np.ndarray:
    """Crop a premultiplied RGBA canvas to its content and resample it; returns straight RGBA (h, w, 4).

    The output is `pixels_per_canvas_pixel` times the canvas resolution, with `margin` empty pixels on
    each side, quantized to 8-bit levels (so it survives a PNG round trip exactly).
    """
    ys, xs = np.nonzero(premultiplied[..., 3] > 1 / 255)
    pad = int(np.ceil(margin / pixels_per_canvas_pixel))
    top, left = max(ys.min() - pad, 0), max(xs.min() - pad, 0)
    crop = premultiplied[top : ys.max() + pad + 1, left : xs.max() + pad + 1]
    size = (
        max(4, round(crop.shape[1] * pixels_per_canvas_pixel)),
        max(4, round(crop.shape[0] * pixels_per_canvas_pixel)),
    )
    small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    alpha = np.clip(small[..., 3:], 0, 1)
    rgb = np.where(alpha > 0, small[..., :3] / np.maximum(alpha, 1e-6), 0)
    return np.round(np.clip(np.concatenate([rgb, alpha], -1), 0, 1) * 255).astype(np.float32) / 255
