"""3-D rotations from camera angles, and the rotation of a voxel scene tensor (Equivariant Neural Rendering).

Conventions (shared by the `scene3d` model, its data renderer and its inference tools):

* **Angles are in degrees.** A view is a camera on a sphere looking at the origin, placed by its
  azimuth and elevation.
* **Axes.** A scene tensor is `(B, C, D, H, W)`. Rotation matrices act on points `p = (d, h, w)`:
  matrix axis 0 is the tensor's depth axis D (the viewing axis, index growing towards the camera), axis 1
  is H (image rows, top to bottom) and axis 2 is W (image columns, left to right); the data renderer
  (`pipelines/scene3d/raymarch.py`) uses the same frame, and a test checks that rotating a voxelised
  object matches rendering it from the moved camera. Coordinates are normalized to [-1, 1] along each axis with
  `align_corners=False` semantics (voxel i of n has its centre at `(2i + 1) / n - 1`), so the volume's
  centre is the origin and the rotation centre.
* `rotation_about(axis, angle)` is the rotation by `angle` in the plane of the two other axes taken in
  cyclic order: about axis 1 it turns axis 2 towards axis 0, about axis 2 it turns axis 0 towards 1.
* **Camera** of a view: `camera_rotation(az, el) = R_1(-az) @ R_2(-el)` (elevation first, then
  azimuth): azimuth turns about H (the image vertical), elevation about W. The **object rotation** that
  brings the canonical scene into that view's frame is its transpose, and the rotation taking a scene
  inferred from a source view into the frame of a target view is
  `relative_rotation = R_obj(target) @ R_obj(source)^T`.
* `rotate_scene(scene, R)` moves content by R: `out(p) = in(R^T p)`, i.e. what sat at `q` now sits at
  `R q`. It uses `affine_grid`/`grid_sample` (`align_corners=False`, trilinear, zeros outside). Those
  order grid coordinates as (x, y, z) = (W, H, D), the reverse of the tensor's dimensions, so the
  matrix handed to `affine_grid` is `R^T` with its rows and columns reversed.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F


def _as_angles(*angles: torch.Tensor | float) -> list[torch.Tensor]:
    """Angles as float tensors of one dtype: float tensors' promoted dtype, or the default for numbers."""
    tensors = [torch.as_tensor(angle) for angle in angles]
    dtype = torch.get_default_dtype()
    float_dtypes = [tensor.dtype for tensor in tensors if tensor.is_floating_point()]
    if float_dtypes:
        dtype = functools.reduce(torch.promote_types, float_dtypes)
    return [tensor.to(dtype) for tensor in tensors]


def rotation_about(axis: int, angle: torch.Tensor | float) -> torch.Tensor:
    """Rotation matrices about one tensor axis (0 = D, 1 = H, 2 = W).

    angle: degrees, any shape `(...)` (a float gives `()`). Returns `(..., 3, 3)` in angle's float dtype.
    Differentiable in `angle`.
    """
    if axis not in (0, 1, 2):
        raise ValueError(f"rotation axis must be 0 (D), 1 (H) or 2 (W), got {axis}")
    (angle,) = _as_angles(angle)
    radians = angle * (math.pi / 180.0)
    cos, sin = torch.cos(radians), torch.sin(radians)
    zero, one = torch.zeros_like(cos), torch.ones_like(cos)
    first, second = (axis + 1) % 3, (axis + 2) % 3
    entries = [[zero] * 3 for _ in range(3)]
    entries[axis][axis] = one
    entries[first][first] = entries[second][second] = cos
    entries[first][second], entries[second][first] = -sin, sin
    return torch.stack([torch.stack(row, dim=-1) for row in entries], dim=-2)


def camera_rotation(azimuth: torch.Tensor | float, elevation: torch.Tensor | float) -> torch.Tensor:
    """Camera rotation of a view: `R_1(-azimuth) @ R_2(-elevation)`.

    azimuth, elevation: degrees, broadcastable shapes `(...)`. Returns `(..., 3, 3)`.
    """
    azimuth, elevation = torch.broadcast_tensors(*_as_angles(azimuth, elevation))
    return rotation_about(1, -azimuth) @ rotation_about(2, -elevation)


def object_rotation(azimuth: torch.Tensor | float, elevation: torch.Tensor | float) -> torch.Tensor:
    """Rotation of the scene seen from a view: the transpose (inverse) of `camera_rotation`. `(..., 3, 3)`."""
    return camera_rotation(azimuth, elevation).transpose(-1, -2)


def relative_rotation(
    source_azimuth: torch.Tensor | float,
    source_elevation: torch.Tensor | float,
    target_azimuth: torch.Tensor | float,
    target_elevation: torch.Tensor | float,
) -> torch.Tensor:
    """Rotation taking a scene seen from the source view into the frame of the target view.

    `R_obj(target) @ R_obj(source)^T`; all angles in degrees, broadcastable `(...)`. Returns `(..., 3, 3)`.
    """
    angles = _as_angles(source_azimuth, source_elevation, target_azimuth, target_elevation)
    source, target = object_rotation(*angles[:2]), object_rotation(*angles[2:])
    return target @ source.transpose(-1, -2)


def rotate_scene(scene: torch.Tensor, rotation: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Rotate a voxel scene about its centre: `out(p) = in(R^T p)` (content moves by R).

    scene: `(B, C, D, H, W)` float, any memory format; rotation: `(B, 3, 3)` or `(3, 3)` acting on
    `(d, h, w)` normalized coordinates (see module docstring). mode: "bilinear" (trilinear in 5-D) or
    "nearest". Returns `(B, C, D, H, W)`; samples falling outside the volume are zero. Differentiable in
    both scene and rotation.
    """
    if scene.dim() != 5:
        raise ValueError(f"rotate_scene expects a (B, C, D, H, W) tensor, got shape {tuple(scene.shape)}")
    if rotation.dim() == 2:
        rotation = rotation.expand(scene.shape[0], 3, 3)
    if rotation.shape != (scene.shape[0], 3, 3):
        expected = (scene.shape[0], 3, 3)
        raise ValueError(f"rotate_scene expects rotations of shape {expected}, got {tuple(rotation.shape)}")
    # affine_grid maps output coordinates to input ones, so it needs R^T; its coordinate order is
    # (W, H, D), so reversing both matrix axes re-expresses R^T in that order.
    inverse_in_grid_order = rotation.transpose(1, 2).flip(1, 2)
    # Sample in at least fp32, autocast or not: bf16 grid coordinates would be off by up to ~1/256 of
    # the volume's width (affine_grid is on autocast's low-precision list).
    dtype = torch.promote_types(scene.dtype, torch.float32)
    with torch.autocast(device_type=scene.device.type, enabled=False):
        theta = F.pad(inverse_in_grid_order, (0, 1)).to(dtype)  # zero translation column
        grid = F.affine_grid(theta, list(scene.shape), align_corners=False)
        rotated = F.grid_sample(scene.to(dtype), grid, mode=mode, padding_mode="zeros", align_corners=False)
    return rotated.to(scene.dtype)
