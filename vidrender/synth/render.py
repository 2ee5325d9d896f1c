"""Render an RGBA sprite into video frames by per-frame affine placements, anti-aliased by supersampling;
and render what a moving camera sees of a world plate.

The sprite is sampled with `grid_sample` (bilinear, premultiplied colour, zeros outside) on a grid
`supersample` times finer than the frame, then box-filtered down, so edges get fractional alpha.
Placements are pixel-coordinate affines (sprite pixel coords -> frame pixel coords, both with the
origin at the top-left corner of the top-left pixel); see `vidrender/synth/motion.py`.
A camera's view of the world plate is sampled the same way (`render_views`), through the cameras of
`vidrender.geometry.camera_view` (normalized, frame -> plate).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vidrender import geometry


def _pixel_from_normalized(width: int, height: int) -> torch.Tensor:
    """(3, 3) float64: normalized (align_corners=False) -> pixel coordinates of a W x H image."""
    return torch.tensor([[width / 2, 0, width / 2], [0, height / 2, height / 2], [0, 0, 1]], dtype=torch.float64)


def render_sprite_layers(
    sprite: torch.Tensor,
    placements: torch.Tensor,
    width: int,
    height: int,
    supersample: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Character layers of every frame.

    sprite: (4, h, w) straight RGBA in [0, 1]; placements: (T, 2, 3) pixel affines sprite -> frame.
    Returns premultiplied RGBA (T, 4, H, W), float32 in [0, 1], to lay `over` a plate
    (`vidrender/compositing.py`).
    """
    h, w = sprite.shape[-2:]
    premultiplied = torch.cat([sprite[:3] * sprite[3:], sprite[3:]]).float()[None]
    frame_from_normalized = _pixel_from_normalized(width, height)
    sprite_normalized_from_pixel = torch.linalg.inv(_pixel_from_normalized(w, h))
    sprite_from_frame = torch.linalg.inv(geometry.to_homogeneous(placements.to(torch.float64)))
    # affine_grid wants, for every output location, where to read: frame-normalized -> sprite-normalized
    theta = (sprite_normalized_from_pixel @ sprite_from_frame @ frame_from_normalized)[:, :2, :].float()
    # frames per batch: the supersampled grid of a batch stays under ~64 MB whatever the frame size
    chunk = max(1, 2**24 // (4 * height * width * supersample**2))
    layers = []
    for start in range(0, len(theta), chunk):
        batch = theta[start : start + chunk]
        grid = F.affine_grid(batch, [len(batch), 4, height * supersample, width * supersample], align_corners=False)
        fine = F.grid_sample(
            premultiplied.expand(len(batch), -1, -1, -1),
            grid,
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )
        layers.append(F.avg_pool2d(fine, supersample))
    return torch.cat(layers).clamp(0, 1)


def retarget_placement(
    placement: torch.Tensor, source_size: tuple[int, int], target_size: tuple[int, int]
) -> torch.Tensor:
    """A placement (2, 3) for a (W, H) `source_size` frame, re-expressed for `target_size` through
    normalized coordinates (the character keeps its place and size relative to the frame)."""
    source = _pixel_from_normalized(*source_size)
    target = _pixel_from_normalized(*target_size)
    return (target @ torch.linalg.inv(source) @ geometry.to_homogeneous(placement.to(torch.float64)))[:2]


def render_views(plate: torch.Tensor, cameras: torch.Tensor, size: tuple[int, int], supersample: int = 2
                 ) -> torch.Tensor:
    """What each camera sees of the world plate, as a camera records it: (T, 3, H, W) float32.

    plate (3, H_w, W_w) in [0, 1]; cameras (T, 3, 3) normalized frame -> plate (`geometry.CAMERA_CONVENTION`);
    size (H, W). Each frame pixel averages `supersample`^2 bilinear samples of the plate (a box filter, as
    a sensor pixel integrates light), so the blur of bilinear sampling does not change with each frame's
    sub-pixel offset. The same cameras always give the same pixels: the truth's per-frame backgrounds.
    """
    height, width = size
    # frames per batch: the supersampled views of a batch stay under ~64 MB whatever the frame size
    chunk = max(1, 2**24 // (3 * height * width * supersample**2))
    views = []
    for start in range(0, len(cameras), chunk):
        fine = geometry.camera_view(plate.float(), cameras[start : start + chunk],
                                    (height * supersample, width * supersample), padding_mode="border")
        views.append(F.avg_pool2d(fine, supersample))
    return torch.cat(views).clamp(0, 1)
