"""Renderer for the scene3d data sets: sphere tracing of SDF objects in torch, with shadows, no Blender.

Camera convention (the reference code's; the model rotates its latent with the same matrices):

* World axes (see `objects.py`): x points from the origin to the camera at azimuth 0, elevation 0;
  y points **down**; z points to the right in that camera's image. "Up" is -y.
* `camera_rotation(az, el) = Ry(-az) @ Rz(-el)` (degrees; `Ry(a) = [[c,0,s],[0,1,0],[-s,0,c]]`,
  `Rz(a) = [[c,-s,0],[s,c,0],[0,0,1]]`). Its columns are the camera's axes in world coordinates:
  column 0 points from the origin to the camera (the camera looks along minus it), column 1 is the
  image's downward direction (rows), column 2 the image's rightward direction (columns). At az = el = 0
  it is the identity: the camera frame is the world frame.
* So the camera sits at `radius * (cos(el) cos(az), -sin(el), cos(el) sin(az))`: elevation +90 is
  straight above the object (looking down), -90 straight below. Increasing azimuth moves the camera
  from +x towards +z, i.e. to its own right, counter-clockwise seen from above (about the up axis -y).
* A world point p appears at camera coordinates `q = camera_rotation^T @ p`: the further along q[1]
  the lower in the image, the further along q[2] the more to the right, q[0] is the depth towards the
  camera. This is the frame of the reference model's scene tensor, matrix axes (0, 1, 2) = tensor axes
  (D, H, W): rotating a scene inferred at view s by `R_obj(t) @ R_obj(s)^T` (`R_obj = camera_rotation^T`)
  gives the scene at view t. (D must grow towards the camera for these rotations to be the camera's
  motion rather than its mirror image; H and W are the image's rows and columns.)

Projection: pinhole, 39.6-degree field of view (Blender's default 50 mm lens on a 36 mm sensor), camera
radius 25 world units; the image's optical centre is the origin. Light: a fixed directional light
in the world frame (so shadows turn with the object, as with Blender's lamp), Lambert shading with
ambient and a weak fill, soft shadows traced towards the light, a plain background.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vidrender.pipelines.scene3d.objects import SdfObject

CAMERA_RADIUS = 25.0
FIELD_OF_VIEW_DEG = 39.6
BACKGROUND = (1.0, 1.0, 1.0)
# Direction *towards* the light, in world axes (y down): 39 degrees above the horizon, behind the object
# and to its right as seen from the az = 0 camera, so parts shadow each other (a chair's back on its seat,
# a bent bar's raised end on its inside); the fill term keeps the shaded side (the underside) readable.
LIGHT_DIRECTION = (-0.4, -0.8, 0.9)
AMBIENT, DIFFUSE, FILL = 0.35, 0.7, 0.3
MAX_STEPS, SHADOW_STEPS = 96, 48


def _rotation_y(degrees: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(torch.deg2rad(degrees)), torch.sin(torch.deg2rad(degrees))
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    return torch.stack([c, zero, s, zero, one, zero, -s, zero, c], -1).reshape(*c.shape, 3, 3)


def _rotation_z(degrees: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(torch.deg2rad(degrees)), torch.sin(torch.deg2rad(degrees))
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    return torch.stack([c, -s, zero, s, c, zero, zero, zero, one], -1).reshape(*c.shape, 3, 3)


def camera_rotation(azimuth_deg: torch.Tensor | float, elevation_deg: torch.Tensor | float) -> torch.Tensor:
    """`Ry(-az) @ Rz(-el)`: the camera's axes as columns (to camera, image down, image right).

    Angles in degrees, scalars or broadcastable tensors of shape `(...)`. Returns float32 `(..., 3, 3)`.
    """
    azimuth = torch.as_tensor(azimuth_deg, dtype=torch.float32)
    elevation = torch.as_tensor(elevation_deg, dtype=torch.float32)
    azimuth, elevation = torch.broadcast_tensors(azimuth, elevation)
    return _rotation_y(-azimuth) @ _rotation_z(-elevation)


def camera_position(
    azimuth_deg: torch.Tensor | float, elevation_deg: torch.Tensor | float, radius: float = CAMERA_RADIUS
) -> torch.Tensor:
    """World position `(..., 3)` of the camera: `radius` times column 0 of `camera_rotation`."""
    return radius * camera_rotation(azimuth_deg, elevation_deg)[..., :, 0]


def _rays(rotations: torch.Tensor, view: torch.Tensor, row: torch.Tensor, column: torch.Tensor, size: int):
    """Origins and unit directions `(N, 3)` of rays through image points of `size`-pixel views.

    rotations: `(B, 3, 3)` camera rotations; view `(N,)` long indexes them; row, column `(N,)` float are
    pixel coordinates with the origin at the image's top-left corner (pixel centres at i + 0.5).
    """
    tan_half = math.tan(math.radians(FIELD_OF_VIEW_DEG) / 2)
    down, right = (row / size * 2 - 1) * tan_half, (column / size * 2 - 1) * tan_half
    # camera-frame direction: minus the to-camera axis, plus image-down and image-right parts
    local = torch.stack([-torch.ones_like(down), down, right], dim=1)
    cameras = rotations[view]
    directions = F.normalize(torch.einsum("nij,nj->ni", cameras, local), dim=1)
    return CAMERA_RADIUS * cameras[:, :, 0], directions


def _sphere_interval(origins: torch.Tensor, directions: torch.Tensor, radius: float):
    """Entry and exit distances along unit rays through a sphere at the origin (exit < entry: missed)."""
    b = (origins * directions).sum(dim=1)
    discriminant = b * b - ((origins * origins).sum(dim=1) - radius * radius)
    root = discriminant.clamp(min=0).sqrt()
    missed = discriminant < 0
    entry, exit_ = (-b - root).clamp(min=0), -b + root
    return entry, torch.where(missed, torch.full_like(exit_, -1.0), exit_)


def _trace(
    obj: SdfObject,
    t: float,
    origins: torch.Tensor,
    directions: torch.Tensor,
    start: torch.Tensor,
    stop: torch.Tensor,
    epsilon: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sphere-trace rays `(N, 3)` from distance `start` to `stop` `(N,)` -> (hit mask, distance), `(N,)`.

    Only rays still marching are evaluated each step (they leave the set when they hit or exit); a ray
    hits where the SDF drops below `epsilon`.
    """
    distance = start.clone()
    hit = torch.zeros_like(start, dtype=torch.bool)
    active = torch.nonzero(start < stop).squeeze(1)
    last_sdf = torch.full_like(start, float("inf"))
    for _ in range(MAX_STEPS):
        if active.numel() == 0:
            break
        along = distance[active]
        sdf = obj.sdf(origins[active] + along[:, None] * directions[active], t)
        last_sdf[active] = sdf
        arrived = sdf < epsilon
        along = along + obj.step_scale * sdf
        distance[active] = torch.where(arrived, distance[active], along)
        hit[active[arrived]] = True
        active = active[~arrived & (along < stop[active])]
    # rays that ran out of steps are grazing a surface; count them as hits when close to it
    hit[active] = last_sdf[active] < 4 * epsilon
    return hit, distance


def _normals(obj: SdfObject, points: torch.Tensor, t: float, step: float = 1e-2) -> torch.Tensor:
    """Unit surface normals `(N, 3)` by the tetrahedron finite difference (4 SDF evaluations)."""
    corners = torch.tensor([[1, -1, -1], [-1, -1, 1], [-1, 1, -1], [1, 1, 1]], dtype=points.dtype)
    samples = obj.sdf((points[None] + step * corners[:, None]).reshape(-1, 3), t).reshape(4, -1)
    return F.normalize((corners[:, None, :] * samples[..., None]).sum(dim=0), dim=1)


def _soft_shadow(obj: SdfObject, points: torch.Tensor, light: torch.Tensor, t: float, reach: float) -> torch.Tensor:
    """Visibility of the light in [0, 1] from surface points `(N, 3)` (penumbra from the nearest miss)."""
    sharpness, distance = 10.0, torch.full(points.shape[:1], 0.05)
    visibility = torch.ones(points.shape[0])
    active = torch.arange(points.shape[0])
    for _ in range(SHADOW_STEPS):
        if active.numel() == 0:
            break
        along = distance[active]
        sdf = obj.sdf(points[active] + along[:, None] * light, t)
        visibility[active] = torch.minimum(visibility[active], (sharpness * sdf / along).clamp(0, 1))
        along = along + (obj.step_scale * sdf).clamp(min=0.02)
        distance[active] = along
        active = active[(sdf > 1e-3) & (along < reach)]
    return visibility


def _shade(obj: SdfObject, time: float, origins: torch.Tensor, directions: torch.Tensor, epsilon: float):
    """Colour `(N, 3)` in [0, 1] seen along rays `(N, 3)`: the shaded object or the background."""
    start, stop = _sphere_interval(origins, directions, obj.bounding_radius)
    hit, distance = _trace(obj, time, origins, directions, start, stop, epsilon)
    colours = torch.tensor(BACKGROUND).repeat(origins.shape[0], 1)
    if hit.any():
        points = origins[hit] + distance[hit, None] * directions[hit]
        normals = _normals(obj, points, time)
        light = F.normalize(torch.tensor(LIGHT_DIRECTION), dim=0)
        facing = normals @ light
        shadow = _soft_shadow(obj, points + 0.02 * normals, light, time, reach=2 * obj.bounding_radius)
        shade = AMBIENT + DIFFUSE * facing.clamp(min=0) * shadow + FILL * (-facing).clamp(min=0)
        colours[hit] = (obj.albedo(points, time) * shade[:, None]).clamp(0, 1)
    return colours


def _edge_pixels(images: torch.Tensor, threshold: float = 0.06) -> torch.Tensor:
    """Mask `(B, H, W)` of pixels differing from a 3x3 neighbour by more than `threshold` in a channel."""
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    brightest = F.max_pool2d(padded, 3, stride=1)
    darkest = -F.max_pool2d(-padded, 3, stride=1)
    return ((brightest - images).amax(dim=1) > threshold) | ((images - darkest).amax(dim=1) > threshold)


@torch.no_grad()
def render_views(
    obj: SdfObject,
    azimuths: torch.Tensor | list[float],
    elevations: torch.Tensor | list[float],
    size: int = 128,
    t: float | None = None,
    antialias: int = 2,
) -> torch.Tensor:
    """Render B views of `obj` at time t (None: 0) -> float32 `(B, 3, size, size)` in [0, 1].

    azimuths, elevations: degrees, shape `(B,)`, camera convention in the module docstring. Row 0 of
    each image is its top (the world's "up" side at elevation 0), column 0 its left. Anti-aliasing is
    adaptive: pixels that differ from a neighbour (silhouettes, creases, shadow edges) are re-shaded
    as the mean of an `antialias` x `antialias` grid of samples inside the pixel (1: no anti-aliasing).
    """
    time = 0.0 if t is None else float(t)
    rotations = camera_rotation(torch.as_tensor(azimuths), torch.as_tensor(elevations)).reshape(-1, 3, 3)
    views = rotations.shape[0]
    # hit tolerance: a quarter of a pixel's footprint at the camera's distance from the origin
    epsilon = 0.25 * 2 * math.tan(math.radians(FIELD_OF_VIEW_DEG) / 2) / size * CAMERA_RADIUS
    view, row, column = (
        index.flatten()
        for index in torch.meshgrid(torch.arange(views), torch.arange(size), torch.arange(size), indexing="ij")
    )
    colours = _shade(obj, time, *_rays(rotations, view, row + 0.5, column + 0.5, size), epsilon)

    def as_images(colours: torch.Tensor) -> torch.Tensor:
        return colours.reshape(views, size, size, 3).permute(0, 3, 1, 2).contiguous()

    if antialias > 1:
        edges = _edge_pixels(as_images(colours)).flatten()
        samples = (torch.arange(antialias, dtype=torch.float32) + 0.5) / antialias
        sub_row, sub_column = (offset.flatten() for offset in torch.meshgrid(samples, samples, indexing="ij"))
        count, edge_count = antialias * antialias, int(edges.sum())
        view, row, column = (index[edges].repeat_interleave(count) for index in (view, row, column))
        rays = _rays(rotations, view, row + sub_row.repeat(edge_count), column + sub_column.repeat(edge_count), size)
        colours[edges] = _shade(obj, time, *rays, epsilon / antialias).reshape(-1, count, 3).mean(dim=1)
    return as_images(colours)


def render_view(
    obj: SdfObject,
    azimuth: float,
    elevation: float,
    size: int = 128,
    t: float | None = None,
    antialias: int = 2,
) -> torch.Tensor:
    """One view (degrees) of `obj` at time t -> float32 `(3, size, size)` in [0, 1]; see `render_views`."""
    return render_views(obj, [azimuth], [elevation], size, t, antialias)[0]
