"""Procedural 3-D objects for the scene3d data sets, as signed distance functions (SDFs) with colours.

Objects (`make_object(name, seed, timesteps)`):

* `bend`  - the temporal write-up's object: an elongated box (a bar) with a red underside, the other
  faces one other colour, bending over time. At timestep t of T the bar's total bend angle is
  `max_bend * sin(2*pi*t / T)`: t = 0 is straight, t = T/4 bends its ends furthest up, t = 3T/4 furthest
  down; t may be fractional (in-between times). The bar's midpoint stays at the origin. Deterministic
  (the seed does not change it), so one scene per data set.
* `chair` - seat, back (panel or posts and rails, slightly tilted), four legs (square or round),
  sometimes arms; proportions and colours drawn from the seed. Rigid (t is ignored).
* `mug`   - cylindrical shell with a closed bottom and a torus handle; proportions and colours drawn
  from the seed. Rigid.

Frames (the renderer, the data set and the model share the first one; see `raymarch.py`):

* **World frame** = the reference code's axes: x points from the origin to the camera at azimuth 0,
  elevation 0; y points **down**; z points to the right of that camera's image. "Up" is -y.
* Objects are modelled in a **Y-up model frame**: X to the right of the az = 0 camera's image, Y up, Z
  towards the az = 0 camera (OpenGL-like). `model = (z, -y, x)` of world; both frames are right-handed,
  so this is a rotation, not a mirror. A chair faces the az = 0 camera; a mug's handle is on the right.

Sizes are world units: every object fits in a sphere of `bounding_radius` (about 8) around the origin,
so with the camera at radius 25 and a 39.6-degree field of view it fills much of a 128-px frame, like the
ShapeNet renders of the reference data. SDFs take points `(N, 3)` float32 and return `(N,)`; they are
exact or slightly conservative, so the sphere tracer may step by `step_scale * sdf`.
"""

from __future__ import annotations

import colorsys
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch

from vidrender.errors import UserError

OBJECT_NAMES = ("bend", "chair", "mug")
# Radius (world units) of the sphere rigid objects are scaled to fit. From radius 25 such a sphere spans
# 94 % of the 39.6-degree field of view, so objects fill the frame without leaving it from any view.
TARGET_RADIUS = 8.0


def world_to_model(points: torch.Tensor) -> torch.Tensor:
    """World (reference axes: x to camera at az=0, y down, z right) -> Y-up model frame. (N, 3) -> (N, 3)."""
    return torch.stack([points[:, 2], -points[:, 1], points[:, 0]], dim=1)


class SdfObject(ABC):
    """An object the renderer can draw: a signed distance and a surface colour (albedo) in world space."""

    #: radius of a sphere around the origin containing the object at every time (world units)
    bounding_radius: float
    #: fraction of the SDF value the sphere tracer may step safely (1 for exact distance bounds)
    step_scale: float = 1.0

    def sdf(self, points: torch.Tensor, t: float = 0.0) -> torch.Tensor:
        """Signed distance (negative inside) at world points `(N, 3)` at time t -> `(N,)`."""
        return self.model_sdf(world_to_model(points), t)

    def albedo(self, points: torch.Tensor, t: float = 0.0) -> torch.Tensor:
        """RGB albedo in [0, 1] of the surface nearest to world points `(N, 3)` -> `(N, 3)`."""
        return self.model_albedo(world_to_model(points), t)

    @abstractmethod
    def model_sdf(self, points: torch.Tensor, t: float) -> torch.Tensor:
        """`sdf` in the Y-up model frame."""

    @abstractmethod
    def model_albedo(self, points: torch.Tensor, t: float) -> torch.Tensor:
        """`albedo` in the Y-up model frame."""


# ----------------------------------------------------------------------------------------------------
# Primitives (model frame). Each has `sdf(points (N,3)) -> (N,)` and `bounds() -> (low (3,), high (3,))`.


def _box_distance(local: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    """Exact distance to an axis-aligned box of half-sizes `half` centred at the origin."""
    q = local.abs() - half
    return q.clamp(min=0).norm(dim=1) + q.max(dim=1).values.clamp(max=0)


@dataclass(frozen=True)
class Box:
    """Box with half-sizes `half`, edges rounded by `rounding`, its axes turned by `rotation` (3x3)."""

    centre: tuple[float, float, float]
    half: tuple[float, float, float]
    rounding: float = 0.0
    rotation: tuple[tuple[float, ...], ...] | None = None

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        local = points - torch.tensor(self.centre, dtype=points.dtype)
        if self.rotation is not None:
            # row vectors: local @ R is R^T applied to each point, i.e. into the box's own axes
            local = local @ torch.tensor(self.rotation, dtype=points.dtype)
        inner = torch.tensor(self.half, dtype=points.dtype) - self.rounding
        return _box_distance(local, inner) - self.rounding

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        rotation = np.eye(3) if self.rotation is None else np.array(self.rotation)
        extent = np.abs(rotation) @ np.array(self.half)
        return np.array(self.centre) - extent, np.array(self.centre) + extent


@dataclass(frozen=True)
class Cylinder:
    """Solid cylinder with a vertical (Y) axis through `centre`, of `radius` and height 2 * `half_height`."""

    centre: tuple[float, float, float]
    radius: float
    half_height: float

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        local = points - torch.tensor(self.centre, dtype=points.dtype)
        radial = torch.stack([local[:, 0], local[:, 2]], dim=1).norm(dim=1) - self.radius
        axial = local[:, 1].abs() - self.half_height
        q = torch.stack([radial, axial], dim=1)
        return q.clamp(min=0).norm(dim=1) + q.max(dim=1).values.clamp(max=0)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        extent = np.array([self.radius, self.half_height, self.radius])
        return np.array(self.centre) - extent, np.array(self.centre) + extent


@dataclass(frozen=True)
class Torus:
    """Torus lying in the XY plane (its axis along Z) around `centre`: ring radius `major`, tube `minor`."""

    centre: tuple[float, float, float]
    major: float
    minor: float

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        local = points - torch.tensor(self.centre, dtype=points.dtype)
        ring = local[:, :2].norm(dim=1) - self.major
        return torch.stack([ring, local[:, 2]], dim=1).norm(dim=1) - self.minor

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        outer = self.major + self.minor
        extent = np.array([outer, outer, self.minor])
        return np.array(self.centre) - extent, np.array(self.centre) + extent


Shape = Box | Cylinder | Torus


class PartsObject(SdfObject):
    """Rigid union of coloured parts minus optional cavities, centred and scaled into `TARGET_RADIUS`.

    parts: `(shape, rgb)` pairs in arbitrary units; cavities: shapes carved out of the union (their
    surfaces get `cavity_colour`). The bounding box of the parts is centred on the origin and scaled
    so its half-diagonal is `TARGET_RADIUS`.
    """

    def __init__(
        self,
        parts: list[tuple[Shape, tuple[float, float, float]]],
        cavities: list[Shape] = (),
        cavity_colour: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ):
        self.parts, self.cavities = list(parts), list(cavities)
        lows, highs = zip(*(shape.bounds() for shape, _ in self.parts), strict=True)
        low, high = np.min(lows, axis=0), np.max(highs, axis=0)
        self.centre = torch.tensor((low + high) / 2, dtype=torch.float32)
        self.scale = TARGET_RADIUS / float(np.linalg.norm(high - low) / 2)
        self.bounding_radius = TARGET_RADIUS * 1.01
        self.colours = torch.tensor([colour for _, colour in self.parts] + [cavity_colour], dtype=torch.float32)

    def _distances(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-part distances `(P, N)` and the cavities' distance `(N,)` (or None), in world units."""
        unit_points = points / self.scale + self.centre
        parts = torch.stack([shape.sdf(unit_points) for shape, _ in self.parts]) * self.scale
        if not self.cavities:
            return parts, None
        cavity = torch.stack([shape.sdf(unit_points) for shape in self.cavities]).min(dim=0).values
        return parts, cavity * self.scale

    def model_sdf(self, points: torch.Tensor, t: float) -> torch.Tensor:
        parts, cavity = self._distances(points)
        union = parts.min(dim=0).values
        return union if cavity is None else torch.maximum(union, -cavity)

    def model_albedo(self, points: torch.Tensor, t: float) -> torch.Tensor:
        parts, cavity = self._distances(points)
        union, nearest = parts.min(dim=0)
        if cavity is not None:
            # where the carved surface is the boundary, the point lies on the cavity wall
            nearest = torch.where(-cavity > union, len(self.parts), nearest)
        return self.colours[nearest]


# ----------------------------------------------------------------------------------------------------
# The bending bar


class BendingBar(SdfObject):
    """A bar along model X bending in the XY plane; red underside (model -Y face before bending).

    Bending maps the bar's rest frame onto a circular arc of the same length: the neutral axis (rest
    y = 0) becomes an arc of radius `length / angle` through the origin with its centre above (angle > 0,
    ends up) or below (angle < 0). Distances are measured in rest coordinates, which shrinks them by
    at most `1 - thickness / (2 * radius)` on the arc's inner side, hence `step_scale` < 1.
    """

    step_scale = 0.8

    def __init__(
        self,
        timesteps: int = 20,
        length: float = 15.0,
        thickness: float = 1.6,
        width: float = 3.4,
        max_bend_deg: float = 100.0,
        colour: tuple[float, float, float] = (0.35, 0.6, 0.9),
        underside_colour: tuple[float, float, float] = (0.85, 0.08, 0.06),
    ):
        if timesteps < 1:
            raise UserError(f"bend object needs at least 1 timestep, got {timesteps}")
        self.timesteps, self.length, self.max_bend = timesteps, length, math.radians(max_bend_deg)
        self.half = torch.tensor([length / 2, thickness / 2, width / 2])
        self.colours = torch.tensor([colour, underside_colour])
        self.bounding_radius = math.sqrt((length / 2) ** 2 + (thickness / 2) ** 2 + (width / 2) ** 2) + 0.2

    def bend_angle(self, t: float) -> float:
        """Total bend angle in radians at (possibly fractional) timestep t."""
        return self.max_bend * math.sin(2 * math.pi * t / self.timesteps)

    def _rest(self, points: torch.Tensor, t: float) -> torch.Tensor:
        """Model-frame points -> the straight bar's rest frame. (N, 3) -> (N, 3)."""
        angle = self.bend_angle(t)
        if abs(angle) < 1e-6:
            return points
        sign, radius = math.copysign(1.0, angle), self.length / abs(angle)
        x, y = points[:, 0], points[:, 1] * sign  # a downward bend is the mirror image of an upward one
        # polar coordinates about the arc's centre (0, radius); angle 0 points straight down from it
        arc_angle = torch.atan2(x, radius - y)
        from_centre = torch.stack([x, y - radius], dim=1).norm(dim=1)
        return torch.stack([radius * arc_angle, sign * (radius - from_centre), points[:, 2]], dim=1)

    def model_sdf(self, points: torch.Tensor, t: float) -> torch.Tensor:
        return _box_distance(self._rest(points, t), self.half.to(points.dtype))

    def model_albedo(self, points: torch.Tensor, t: float) -> torch.Tensor:
        rest = self._rest(points, t)
        # the face a surface point lies on is the axis where it is furthest out relative to the half-size
        face_axis = (rest.abs() - self.half.to(points.dtype)).argmax(dim=1)
        underside = (face_axis == 1) & (rest[:, 1] < 0)
        return self.colours[underside.long()]


# ----------------------------------------------------------------------------------------------------
# Random rigid objects


def _random_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    hue, saturation, value = rng.random(), rng.uniform(0.3, 0.8), rng.uniform(0.55, 0.95)
    return colorsys.hsv_to_rgb(hue, saturation, value)


def _tilt_about_x(degrees: float) -> tuple[tuple[float, ...], ...]:
    """Rotation about model X leaning +Y towards -Z (a chair back leaning backwards)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return ((1.0, 0.0, 0.0), (0.0, c, s), (0.0, -s, c))


def random_chair(rng: np.random.Generator) -> PartsObject:
    """A chair facing model +Z (the az = 0 camera), floor at y = 0 before centring."""
    seat_w, seat_d, seat_t = rng.uniform(4.5, 6.5), rng.uniform(4.5, 6.0), rng.uniform(0.35, 0.8)
    seat_top, leg_t, inset = rng.uniform(3.5, 5.0), rng.uniform(0.3, 0.65), rng.uniform(0.0, 0.4)
    back_h, back_t, tilt = rng.uniform(3.5, 6.5), rng.uniform(0.3, 0.55), rng.uniform(0.0, 15.0)
    seat_colour = _random_colour(rng)
    leg_colour = seat_colour if rng.random() < 0.5 else _random_colour(rng)
    rounding = min(seat_t, leg_t, back_t) * 0.2

    parts: list[tuple[Shape, tuple[float, float, float]]] = [
        (Box((0, seat_top - seat_t / 2, 0), (seat_w / 2, seat_t / 2, seat_d / 2), rounding), seat_colour)
    ]
    leg_height = seat_top - seat_t
    round_legs = rng.random() < 0.4
    for sx in (-1, 1):
        for sz in (-1, 1):
            centre = (
                sx * (seat_w / 2 - inset - leg_t / 2),
                leg_height / 2,
                sz * (seat_d / 2 - inset - leg_t / 2),
            )
            leg = (
                Cylinder(centre, leg_t / 2, leg_height / 2)
                if round_legs
                else Box(centre, (leg_t / 2, leg_height / 2, leg_t / 2), rounding)
            )
            parts.append((leg, leg_colour))

    # the back pivots about its bottom edge at the seat's rear
    rotation = _tilt_about_x(tilt)
    pivot = np.array([0.0, seat_top, -seat_d / 2 + back_t / 2])

    def back_box(offset: tuple[float, float, float], half: tuple[float, float, float]) -> Box:
        centre = pivot + np.array(rotation) @ np.array(offset)
        return Box(tuple(centre), half, rounding, rotation)

    if rng.random() < 0.6:
        parts.append((back_box((0, back_h / 2, 0), (seat_w / 2, back_h / 2, back_t / 2)), seat_colour))
    else:
        post = rng.uniform(0.35, 0.6)
        rail = rng.uniform(0.6, 1.4)
        for sx in (-1, 1):
            parts.append(
                (
                    back_box((sx * (seat_w / 2 - post / 2), back_h / 2, 0), (post / 2, back_h / 2, back_t / 2)),
                    seat_colour,
                )
            )
        parts.append((back_box((0, back_h - rail / 2, 0), (seat_w / 2, rail / 2, back_t / 2)), seat_colour))
        parts.append((back_box((0, back_h * 0.45, 0), (seat_w / 2, rail / 4, back_t / 2)), seat_colour))

    if rng.random() < 0.3:
        arm_height, arm_t = rng.uniform(1.8, 2.8), rng.uniform(0.3, 0.5)
        for sx in (-1, 1):
            x = sx * (seat_w / 2 - arm_t / 2)
            arm_centre = (x, seat_top + arm_height, 0.0)
            parts.append((Box(arm_centre, (arm_t / 2, arm_t / 2, seat_d / 2), rounding), leg_colour))
            support = (x, seat_top + arm_height / 2, seat_d / 2 - arm_t / 2)
            parts.append((Box(support, (arm_t / 2, arm_height / 2, arm_t / 2), rounding), leg_colour))
    return PartsObject(parts)


def random_mug(rng: np.random.Generator) -> PartsObject:
    """A mug standing on model y = 0, handle on model +X (the right of the az = 0 view)."""
    radius, height = rng.uniform(2.2, 3.2), rng.uniform(4.0, 6.5)
    wall, bottom = rng.uniform(0.25, 0.45), rng.uniform(0.3, 0.6)
    tube = rng.uniform(0.25, 0.45)
    ring = min(rng.uniform(1.1, 1.7), height / 2 - tube - 0.3)
    colour = _random_colour(rng)
    inside = (0.95, 0.95, 0.93) if rng.random() < 0.5 else colour
    body = Cylinder((0, height / 2, 0), radius, height / 2)
    handle = Torus((radius, height * rng.uniform(0.45, 0.55), 0), ring, tube)
    # the cavity pokes out above the rim so the mug is open; it also removes the handle's inner half
    cavity_height = height - bottom + 1.0
    cavity = Cylinder((0, bottom + cavity_height / 2, 0), radius - wall, cavity_height / 2)
    return PartsObject([(body, colour), (handle, colour)], [cavity], inside)


def make_object(name: str, seed: int = 0, timesteps: int = 20) -> SdfObject:
    """Object `name` (one of `OBJECT_NAMES`); rigid ones are drawn from `seed`, `bend` uses `timesteps`."""
    if name == "bend":
        return BendingBar(timesteps)
    rng = np.random.default_rng(seed)
    if name == "chair":
        return random_chair(rng)
    if name == "mug":
        return random_mug(rng)
    raise UserError(f"unknown object {name!r}; choose one of {', '.join(OBJECT_NAMES)}")
