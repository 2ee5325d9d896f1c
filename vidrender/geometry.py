"""2-D affine geometry and cameras: conventions, conversions, the spatial-transformer warp and camera views.

Conventions (used everywhere in vidrender, written into `affine.json`):

* An affine is a 2x3 matrix `A = [[a, b, c], [d, e, f]]`, batched as `(..., 2, 3)`.
* It maps a point of the **reference frame** to where that point is in **frame t** (forward motion):
  `[x_t, y_t] = A @ [x_ref, y_ref, 1]`.
* **Normalized coordinates** (used inside models): x to the right, y down, both in [-1, 1] across the
  frame with `align_corners=False` semantics, i.e. pixel column i has its centre at `(2i + 1) / W - 1`.
  This is the coordinate system of `torch.nn.functional.affine_grid`.
* **Pixel coordinates** (used in files users see): x to the right, y down, origin at the top-left
  corner of the top-left pixel, so pixel (i, j) has its centre at (i + 0.5, j + 0.5).
* `warp(image, A)` moves content by A: `out(p) = image(A^-1 p)`. `affine_grid` wants the opposite map
  (output -> input), so the warp passes `invert(A)`.
* A **camera** is a 3x3 matrix `H_t`, batched `(T, 3, 3)`, mapping normalized coordinates of frame t to
  normalized coordinates of a plate, which may be larger than the frame (a world plate):
  `[u, v, w] = H_t @ [x, y, 1]`, the point (u / w, v / w) (`CAMERA_CONVENTION`, written into
  `camera.json`). `camera_view(plate, H, size)` renders what each camera sees: `out_t(p) = plate(H_t p)`.
  An affine camera has last row [0, 0, 1]; a homography need not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vidrender.errors import UserError


def to_homogeneous(A: torch.Tensor) -> torch.Tensor:
    """(..., 2, 3) affine -> (..., 3, 3) matrix with last row [0, 0, 1]."""
    bottom = torch.zeros(*A.shape[:-2], 1, 3, dtype=A.dtype, device=A.device)
    bottom[..., 0, 2] = 1
    return torch.cat([A, bottom], dim=-2)


def identity(batch: int = 1, dtype=torch.float32, device=None) -> torch.Tensor:
    """(batch, 2, 3) identity affines."""
    return torch.eye(2, 3, dtype=dtype, device=device).expand(batch, 2, 3).clone()


def compose(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Affine of "first B, then A": (..., 2, 3) x (..., 2, 3) -> (..., 2, 3)."""
    return (to_homogeneous(A) @ to_homogeneous(B))[..., :2, :]


def invert(A: torch.Tensor) -> torch.Tensor:
    """Inverse affine, (..., 2, 3) -> (..., 2, 3), closed form (differentiable, no 3x3 solve)."""
    M, t = A[..., :2], A[..., 2:]
    a, b, d, e = M[..., 0, 0], M[..., 0, 1], M[..., 1, 0], M[..., 1, 1]
    det = a * e - b * d
    inv_M = torch.stack([torch.stack([e, -b], -1), torch.stack([-d, a], -1)], -2) / det[..., None, None]
    return torch.cat([inv_M, -inv_M @ t], dim=-1)


def apply(A: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Map points by A: A (..., 2, 3), points (..., N, 2) -> (..., N, 2)."""
    return points @ A[..., :2].transpose(-1, -2) + A[..., 2].unsqueeze(-2)


def _pixel_from_normalized(width: int, height: int, dtype=torch.float64) -> torch.Tensor:
    """(3, 3) matrix taking normalized coordinates to pixel coordinates for a W x H frame."""
    return torch.tensor([[width / 2, 0, width / 2], [0, height / 2, height / 2], [0, 0, 1]], dtype=dtype)


def normalized_to_pixel(A: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Express a normalized-coordinate affine (..., 2, 3) in pixel coordinates of a W x H frame."""
    P = _pixel_from_normalized(width, height).to(A.dtype).to(A.device)
    return (P @ to_homogeneous(A) @ torch.linalg.inv(P))[..., :2, :]


def pixel_to_normalized(A: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Express a pixel-coordinate affine (..., 2, 3) of a W x H frame in normalized coordinates."""
    P = _pixel_from_normalized(width, height).to(A.dtype).to(A.device)
    return (torch.linalg.inv(P) @ to_homogeneous(A) @ P)[..., :2, :]


def from_params(
    tx: torch.Tensor, ty: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor, shear: torch.Tensor | None = None
) -> torch.Tensor:
    """Build normalized affines from motion parameters, all shaped (...,) -> (..., 2, 3).

    Rotation `angle` is in radians, counter-clockwise as seen on screen (y points down, so this is
    a negative angle in the matrix). The linear part is rotation @ shear @ uniform scale, then the
    translation (tx, ty) moves the origin (frame centre).
    """
    shear = torch.zeros_like(tx) if shear is None else shear
    c, s = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2)
    one, zero = torch.ones_like(tx), torch.zeros_like(tx)
    shr = torch.stack([torch.stack([one, shear], -1), torch.stack([zero, one], -1)], -2)
    linear = rot @ shr * scale[..., None, None]
    return torch.cat([linear, torch.stack([tx, ty], -1)[..., None]], dim=-1)


def warp(image: torch.Tensor, A: torch.Tensor, padding_mode: str = "zeros", mode: str = "bilinear") -> torch.Tensor:
    """Move the content of `image` by the normalized affine A: `out(p) = image(A^-1 p)`.

    image: (B, C, H, W) (every channel warped alike); A: (B, 2, 3) or (2, 3). Returns (B, C, H, W).
    Uses `affine_grid`/`grid_sample` with `align_corners=False`; outside the source is `padding_mode`.
    """
    if image.dim() != 4:
        raise ValueError(f"warp expects a (B, C, H, W) tensor, got shape {tuple(image.shape)}")
    if A.dim() == 2:
        A = A.expand(image.shape[0], 2, 3)
    if A.shape[-2:] != (2, 3) or A.shape[0] != image.shape[0]:
        raise ValueError(f"warp expects affines of shape ({image.shape[0]}, 2, 3), got {tuple(A.shape)}")
    grid = F.affine_grid(invert(A).to(image.dtype), list(image.shape), align_corners=False)
    return F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=False)


def corner_error(A: torch.Tensor, B: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Mean displacement in pixels of the frame's four corners mapped by A versus by B.

    A, B: normalized affines (..., 2, 3); returns (...,). The affine-error metric of docs/design.md section 5.
    """
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=A.dtype, device=A.device)
    diff = apply(A, corners) - apply(B, corners)
    scale = torch.tensor([width / 2, height / 2], dtype=A.dtype, device=A.device)
    return (diff * scale).norm(dim=-1).mean(dim=-1)


def check_affines(values, what: str) -> torch.Tensor:
    """Validate user-supplied affines (nested lists, N x 2 x 3, finite) -> float64 tensor (N, 2, 3)."""
    try:
        A = torch.as_tensor(values, dtype=torch.float64)
    except (TypeError, ValueError) as err:
        raise UserError(f"{what}: affines must be a list of 2x3 number matrices ({err})") from None
    if A.dim() != 3 or A.shape[1:] != (2, 3) or A.shape[0] == 0:
        raise UserError(f"{what}: expected a non-empty list of 2x3 matrices, got shape {tuple(A.shape)}")
    if not torch.isfinite(A).all():
        raise UserError(f"{what}: affines contain NaN or infinite values")
    det = A[:, 0, 0] * A[:, 1, 1] - A[:, 0, 1] * A[:, 1, 0]
    if (det.abs() < 1e-8).any():
        bad = int(torch.nonzero(det.abs() < 1e-8)[0])
        raise UserError(f"{what}: affine of frame {bad} is singular (determinant 0)")
    return A


# --- cameras: 3x3 maps from a frame to a plate (docs/formats.md, "camera.json") ---------------------------

CAMERA_CONVENTION = (
    "Each 3x3 matrix maps frame-t normalized coordinates (align_corners=False: -1 and 1 are the outer edges "
    "of the frame, x right, y down) to normalized coordinates of the plate (background.png; world_plate.png "
    "for a moving camera): [u, v, w] = H @ [x, y, 1]."
)


def project(H: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Map points by 3x3 matrices (homographies or affines), with the perspective division.

    H (..., 3, 3), points (..., N, 2) -> (..., N, 2).
    """
    mapped = points @ H[..., :2, :2].transpose(-1, -2) + H[..., :2, 2].unsqueeze(-2)
    w = points @ H[..., 2:, :2].transpose(-1, -2) + H[..., 2:, 2:].transpose(-1, -2)
    return mapped / w


def camera_to_pixel(H: torch.Tensor, frame: tuple[int, int], plate: tuple[int, int]) -> torch.Tensor:
    """Cameras (..., 3, 3) in normalized coordinates (frame -> plate, `CAMERA_CONVENTION`) expressed in pixel
    coordinates (origin at the top-left corner, pixel centres at +0.5); `frame` and `plate` are (W, H)."""
    to_pixel = _pixel_from_normalized(*plate).to(H.dtype).to(H.device)
    from_pixel = torch.linalg.inv(_pixel_from_normalized(*frame)).to(H.dtype).to(H.device)
    return to_pixel @ H @ from_pixel


def camera_to_normalized(C: torch.Tensor, frame: tuple[int, int], plate: tuple[int, int]) -> torch.Tensor:
    """Pixel-coordinate cameras (..., 3, 3) (frame pixels -> plate pixels) in normalized coordinates, the
    inverse of `camera_to_pixel`; `frame` and `plate` are (W, H)."""
    from_pixel = torch.linalg.inv(_pixel_from_normalized(*plate)).to(C.dtype).to(C.device)
    to_pixel = _pixel_from_normalized(*frame).to(C.dtype).to(C.device)
    return from_pixel @ C @ to_pixel


def camera_grid(cameras: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The sampling grid (T, H, W, 2) of cameras (T, 3, 3) (frame -> plate, normalized, `CAMERA_CONVENTION`):
    where each pixel centre of an H x W frame lands on the plate, normalized (align_corners=False), for
    `grid_sample`. In the cameras' dtype and device, differentiable in them."""
    height, width = size
    ys = (2 * torch.arange(height, dtype=cameras.dtype, device=cameras.device) + 1) / height - 1
    xs = (2 * torch.arange(width, dtype=cameras.dtype, device=cameras.device) + 1) / width - 1
    centres = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)
    return project(cameras, centres.expand(len(cameras), -1, -1)).reshape(len(cameras), height, width, 2)


def camera_view(plate: torch.Tensor, cameras: torch.Tensor, size: tuple[int, int], padding_mode: str = "zeros",
                chunk: int = 32) -> torch.Tensor:
    """What each camera sees of `plate`: out_t(p) = plate(H_t p), bilinear.

    plate: (C, Hp, Wp) or (1, C, Hp, Wp), or (T, C, Hp, Wp) for one image per camera; cameras: (T, 3, 3)
    normalized, frame t -> plate (`CAMERA_CONVENTION`; projective ones too); size: (H, W) of the frames.
    Returns (T, C, H, W) in the plate's dtype. The plate is sampled once, at its own resolution, straight
    into each frame's pixel grid (align_corners=False); outside the plate is `padding_mode`. Frames are
    done `chunk` at a time to bound the sampling grid's memory.
    """
    plate = plate if plate.dim() == 4 else plate[None]
    views = []
    for start in range(0, len(cameras), chunk):
        grid = camera_grid(cameras[start : start + chunk].to(torch.float64).cpu(), size)
        source = plate if len(plate) == 1 else plate[start : start + len(grid)]
        views.append(F.grid_sample(source.expand(len(grid), -1, -1, -1), grid.to(plate.dtype).to(plate.device),
                                   mode="bilinear", padding_mode=padding_mode, align_corners=False))
    return torch.cat(views)


def camera_corner_distance(A: torch.Tensor, B: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Mean distance in pixels of the frame's four corners (the outer edges, -1 and 1) mapped by the 3x3
    normalized cameras A versus B, measured in a W x H pixel grid of their common target. (..., 3, 3) ->
    (...,). The camera-error metric's per-frame term (`vidrender.metrics.camera_corner_error_px`)."""
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=A.dtype, device=A.device)
    diff = project(A, corners) - project(B, corners)
    scale = torch.tensor([width / 2, height / 2], dtype=A.dtype, device=A.device)
    return (diff * scale).norm(dim=-1).mean(dim=-1)
