"""Procedural colour textures for synthetic clips: smooth noise, gradients, tiles, stripes, scattered shapes.

Every function draws from a `numpy.random.Generator`, so a seed fixes the result, and returns a float32
array (H, W, 3) with values in [0, 1] (RGB, rows top to bottom). They serve both as background plates
and as fills of character parts.
"""

from __future__ import annotations

import cv2
import numpy as np

BACKGROUND_KINDS = ("noise", "gradient", "tiles", "stripes", "shapes")


def random_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` distinct-looking RGB colours, (n, 3) float32 in [0, 1], from random hue/saturation/value."""
    hsv = np.stack([rng.uniform(0, 180, n), rng.uniform(60, 255, n), rng.uniform(70, 255, n)], axis=-1).astype(np.uint8)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0].astype(np.float32) / 255


def colourize(field: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Map a scalar field (H, W) in [0, 1] onto a piecewise-linear ramp through `colours` (n, 3)."""
    positions = np.linspace(0, 1, len(colours))
    return np.stack([np.interp(field, positions, colours[:, c]) for c in range(3)], -1).astype(np.float32)


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int = 4, octaves: int = 4) -> np.ndarray:
    """Fractal value noise (H, W) in [0, 1]: octaves of bicubically upsampled random grids.

    `cells` is the number of grid cells across the first octave; each octave doubles it at half the weight.
    """
    field = np.zeros((height, width), np.float32)
    for octave in range(octaves):
        n = cells * 2**octave + 1
        grid = rng.random((n, n)).astype(np.float32)
        field += 0.5**octave * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    field -= field.min()
    return field / max(float(field.max()), 1e-6)


def linear_gradient(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Scalar ramp (H, W) in [0, 1] along a random direction."""
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = np.cos(angle) * xs / width + np.sin(angle) * ys / height
    ramp -= ramp.min()
    return ramp / max(float(ramp.max()), 1e-6)


def radial_gradient(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Scalar field (H, W) in [0, 1] growing with distance from a random centre."""
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    dist = np.hypot((xs - cx) / width, (ys - cy) / height)
    return dist / max(float(dist.max()), 1e-6)


def stripes(rng: np.random.Generator, height: int, width: int, period: float, sharp: bool = True) -> np.ndarray:
    """Parallel stripes (H, W) in [0, 1] at a random angle, `period` pixels apart; soft-edged if not sharp."""
    angle = rng.uniform(0, np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    wave = np.sin(2 * np.pi * (np.cos(angle) * xs + np.sin(angle) * ys) / period + rng.uniform(0, 2 * np.pi))
    # tanh of a steep sine gives stripes with a one-or-two pixel ramp: visible edges without aliasing
    return (0.5 + 0.5 * np.tanh(4 * wave)) if sharp else (0.5 + 0.5 * wave)


def checker(rng: np.random.Generator, height: int, width: int, period: float) -> np.ndarray:
    """Checkerboard (H, W) in {0, 1} with squares `period` pixels wide, rotated by a random angle."""
    angle = rng.uniform(0, np.pi / 2)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    u = (np.cos(angle) * xs + np.sin(angle) * ys) / period
    v = (-np.sin(angle) * xs + np.cos(angle) * ys) / period
    return ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)


def tiles(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Colour tiles (H, W, 3): a grid of random-coloured rectangles separated by thin grout lines."""
    tile = rng.uniform(0.12, 0.3) * min(height, width)
    rows, cols = int(np.ceil(height / tile)) + 1, int(np.ceil(width / tile)) + 1
    palette = random_colours(rng, 3)
    choice = rng.integers(0, len(palette), (rows, cols))
    shade = rng.uniform(0.8, 1.1, (rows, cols, 1))
    small = np.clip(palette[choice] * shade, 0, 1).astype(np.float32)
    image = cv2.resize(small, (int(cols * tile), int(rows * tile)), interpolation=cv2.INTER_NEAREST)
    offset_y, offset_x = rng.integers(0, int(tile), 2)
    image = image[offset_y : offset_y + height, offset_x : offset_x + width]
    grout = random_colours(rng, 1)[0] * 0.5
    line = max(1, int(round(tile / 12)))
    for y in np.arange(tile - offset_y, height, tile).astype(int):
        image[y : y + line] = grout
    for x in np.arange(tile - offset_x, width, tile).astype(int):
        image[:, x : x + line] = grout
    return image


def scattered_shapes(rng: np.random.Generator, height: int, width: int, base: np.ndarray) -> np.ndarray:
    """Draw 8-20 random filled ellipses and rectangles over `base` (H, W, 3); returns a new array."""
    image = np.ascontiguousarray(base.copy())
    size = min(height, width)
    for _ in range(rng.integers(8, 21)):
        colour = tuple(float(c) for c in random_colours(rng, 1)[0])
        centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        if rng.random() < 0.5:
            axes = (int(rng.uniform(0.03, 0.15) * size) + 1, int(rng.uniform(0.03, 0.15) * size) + 1)
            cv2.ellipse(image, centre, axes, rng.uniform(0, 180), 0, 360, colour, -1, cv2.LINE_AA)
        else:
            half = rng.uniform(0.03, 0.12, 2) * size
            box = ((centre[0], centre[1]), (2 * half[0], 2 * half[1]), rng.uniform(0, 90))
            cv2.fillPoly(image, [cv2.boxPoints(box).astype(np.int32)], colour, cv2.LINE_AA)
    return image


def background_plate(rng: np.random.Generator, height: int, width: int, kind: str | None = None) -> np.ndarray:
    """A textured background (H, W, 3) float32 in [0, 1] of the given kind (one of BACKGROUND_KINDS).

    `kind=None` picks one at random. Every kind gets a low-contrast noise layer on top, so no region is
    flat: a difference matte then has to separate the character from real texture, not from a blank.
    """
    kind = BACKGROUND_KINDS[rng.integers(len(BACKGROUND_KINDS))] if kind is None else kind
    size = min(height, width)
    if kind == "noise":
        image = colourize(smooth_noise(rng, height, width, cells=int(rng.integers(2, 6))), random_colours(rng, 3))
    elif kind == "gradient":
        field = linear_gradient(rng, height, width) if rng.random() < 0.5 else radial_gradient(rng, height, width)
        image = colourize(field, random_colours(rng, 2))
    elif kind == "tiles":
        image = tiles(rng, height, width)
    elif kind == "stripes":
        field = stripes(rng, height, width, rng.uniform(0.08, 0.2) * size, sharp=rng.random() < 0.5)
        image = colourize(field, random_colours(rng, 2))
    elif kind == "shapes":
        base = colourize(smooth_noise(rng, height, width, cells=2, octaves=2), random_colours(rng, 2))
        image = scattered_shapes(rng, height, width, base)
    else:
        raise ValueError(f"unknown background kind {kind!r}; expected one of {', '.join(BACKGROUND_KINDS)}")
    grain = smooth_noise(rng, height, width, cells=max(4, size // 8), octaves=2) - 0.5
    return np.clip(image + rng.uniform(0.06, 0.14) * grain[..., None], 0, 1).astype(np.float32)
