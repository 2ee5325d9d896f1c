"""The classical baseline of docs/design.md section 5: median plate + difference matte + tracking + cut-and-paste.

`baseline_decompose` splits a static-camera clip into a plate (temporal median), a binary matte per
frame (difference to the plate, thresholded and cleaned with OpenCV morphology) and one affine per frame
from the reference frame (`tracking.track_affines`). `baseline_compose` cuts the character out of the
reference frame with its matte, moves it by the affines and pastes it onto another clip's plate.
Everything here is float32 RGB in [0, 1], (T, 3, H, W) for clips; affines are normalized (geometry.py).

`baseline_decompose_moving` is the same for a moving camera: the cameras are estimated
(`camera.estimate_cameras`), every frame is warped into the world plate (the reference frame's view,
extended: `camera.world_bounds`), which makes a static clip of the world, and the static recipe runs
there (median plate over the frames that see each pixel, difference matte, tracking); mattes and affines
are then carried back into each frame through its camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vidrender import geometry
from vidrender.compositing import over
from vidrender.pipelines.motion.background import masked_median_plate, median_plate
from vidrender.pipelines.motion.camera import (
    STATIC_TOLERANCE_PX,
    WorldBounds,
    estimate_cameras,
    is_static,
    world_bounds,
)
from vidrender.pipelines.motion.difference_matte import difference_matte, difference_threshold
from vidrender.pipelines.motion.tracking import track_affines


@dataclass
class BaselineLayers:
    """plate (3, H, W); alpha (T, 1, H, W) in {0, 1}; affines (T, 2, 3) float64 normalized, from the
    reference frame (index `reference`) to each frame."""

    plate: torch.Tensor
    alpha: torch.Tensor
    affines: torch.Tensor
    reference: int


def baseline_decompose(frames: torch.Tensor, reference: int = 0, threshold: float | None = None) -> BaselineLayers:
    """Plate, matte and motion of a static-camera clip `frames` (T, 3, H, W) float in [0, 1].

    threshold: difference above which a pixel is the character (max over RGB); None picks one from the
    clip's noise level (`difference_matte.difference_threshold`).
    """
    plate = median_plate(frames)
    alpha = difference_matte(frames, plate, threshold)
    affines = track_affines(frames, reference, mask=alpha)
    return BaselineLayers(plate=plate, alpha=alpha, affines=affines, reference=reference)


@dataclass
class MovingBaselineLayers(BaselineLayers):
    """The classical layers of a moving-camera clip. `plate` is the world plate (3, H_w, W_w), the
    reference frame's view extended (`bounds`: its box in reference-frame pixels); `cameras` (T, 3, 3),
    frame t -> plate, normalized (`geometry.CAMERA_CONVENTION`); `alpha` (T, 1, H, W) and `affines`
    (T, 2, 3) are in each frame, as for a static clip, and `world_affines` (T, 2, 3) is the character's
    motion in the plate's normalized coordinates (reference pose -> pose at t)."""

    cameras: torch.Tensor
    bounds: WorldBounds
    world_affines: torch.Tensor

    def backgrounds(self, size: tuple[int, int]) -> torch.Tensor:
        """(T, 3, H, W) each frame's background at `size` (H, W): the plate seen by its camera."""
        return geometry.camera_view(self.plate, self.cameras, size, padding_mode="border")


def baseline_decompose_moving(frames: torch.Tensor, reference: int = 0, threshold: float | None = None,
                              model: str = "homography") -> BaselineLayers:
    """Plate, matte and motion of a clip filmed by a moving camera, `frames` (T, 3, H, W) float in [0, 1].

    The cameras are estimated twice: over the whole frame, then again ignoring the first pass's mattes
    (the character moves otherwise than the background and, over a background of little texture, pulls
    the photometric refinement). A clip whose camera turns out static (`camera.is_static`, either time)
    gets `baseline_decompose`'s layers unchanged.
    threshold: as for `baseline_decompose`; model: the camera model of `estimate_cameras`.
    """
    size = tuple(frames.shape[-2:])
    cameras = estimate_cameras(frames, None, reference, model)
    if is_static(cameras, STATIC_TOLERANCE_PX, size):
        return baseline_decompose(frames, reference, threshold)
    layers = _world_layers(frames, cameras, reference, threshold, tracked=False)
    cameras = estimate_cameras(frames, layers.alpha, reference, model)
    if is_static(cameras, STATIC_TOLERANCE_PX, size):  # the character had pulled the first estimate
        return baseline_decompose(frames, reference, threshold)
    return _world_layers(frames, cameras, reference, threshold, tracked=True)


def _world_layers(frames: torch.Tensor, cameras: torch.Tensor, reference: int, threshold: float | None,
                  tracked: bool) -> MovingBaselineLayers:
    """The static recipe run in the world plate's coordinates, its mattes and affines carried back into
    the frames; `tracked=False` skips the tracking (affines are then the identity)."""
    size = tuple(frames.shape[-2:])
    bounds = world_bounds(cameras, size)
    plate_size = (bounds.height, bounds.width)
    to_frames = torch.linalg.inv(bounds.cameras)
    stable = geometry.camera_view(frames.float(), to_frames, plate_size)
    # a plate pixel is seen by frame t where the whole bilinear footprint lies inside the frame
    seen = geometry.camera_view(torch.ones(1, 1, *size), to_frames, plate_size) > 1 - 1e-4
    plate, _ = masked_median_plate(stable, ~seen, stable.mean(dim=0))
    # where a frame does not see the world, it shows the plate: the stabilised clip is then a static one
    stable = torch.where(seen, stable, plate)
    if threshold is None:
        threshold = difference_threshold((stable - plate).permute(1, 0, 2, 3)[:, seen[:, 0]].numpy())
    world_alpha = difference_matte(stable, plate, threshold)
    alpha = (geometry.camera_view(world_alpha, bounds.cameras, size) > 0.5).float()
    count = len(frames)
    world_affines = geometry.identity(count, torch.float64)
    if tracked:
        world_affines = track_affines(stable, reference, mask=world_alpha)
    affines = _in_frames(world_affines, bounds.cameras, reference)
    return MovingBaselineLayers(plate=plate, alpha=alpha, affines=affines, reference=reference,
                                cameras=bounds.cameras, bounds=bounds, world_affines=world_affines)


def _in_frames(world_affines: torch.Tensor, cameras: torch.Tensor, reference: int) -> torch.Tensor:
    """Affines (T, 2, 3) in the frames (reference frame -> frame t, normalized) from affines in the plate:
    H_t^-1 @ A_t @ H_reference, fitted by an affine (least squares on a 5 x 5 grid over the frame) where
    projective cameras make it a homography."""
    motion = torch.linalg.inv(cameras) @ geometry.to_homogeneous(world_affines) @ cameras[reference]
    steps = torch.linspace(-1, 1, 5, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(steps, steps, indexing="xy"), -1).reshape(-1, 2)
    moved = geometry.project(motion, grid.expand(len(motion), -1, -1))
    design = torch.cat([grid, torch.ones(len(grid), 1, dtype=torch.float64)], -1)
    return torch.linalg.lstsq(design.expand(len(motion), -1, -1), moved).solution.transpose(-1, -2)


def character_layer(frames: torch.Tensor, layers: BaselineLayers) -> tuple[torch.Tensor, torch.Tensor]:
    """The character cut out of the reference frame: (premultiplied RGB (3, H, W), alpha (1, H, W))."""
    alpha = layers.alpha[layers.reference]
    return frames[layers.reference].float() * alpha, alpha


def paste(premultiplied: torch.Tensor, alpha: torch.Tensor, affines: torch.Tensor, plate: torch.Tensor) -> torch.Tensor:
    """Move a character layer by each affine and paste it on `plate`.

    premultiplied (3, h, w) and alpha (1, h, w): the layer at its reference pose; affines (T, 2, 3)
    normalized; plate (3, H, W). The layer is resized to the plate's size first (the character keeps
    its place and size relative to the frame). Returns frames (T, 3, H, W).
    """
    height, width = plate.shape[-2:]
    layer = torch.cat([premultiplied, alpha])[None].float()
    if layer.shape[-2:] != (height, width):
        layer = F.interpolate(layer, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    moved = geometry.warp(layer.expand(len(affines), -1, -1, -1), affines.float())
    return over(moved, plate.float()).clamp(0, 1)


def baseline_compose(
    character_frames: torch.Tensor,
    background_frames: torch.Tensor,
    reference: int = 0,
    affines: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cut-and-paste compose: the character of one clip over the plate of another.

    character_frames (T, 3, H, W) and background_frames (T', 3, H', W') float in [0, 1]; the character
    is cut from frame `reference` of its clip and moved by `affines` (N, 2, 3) normalized (default:
    its own tracked motion). Returns (N, 3, H', W') at the background clip's size.
    """
    layers = baseline_decompose(character_frames, reference)
    premultiplied, alpha = character_layer(character_frames, layers)
    motion = layers.affines if affines is None else affines
    return paste(premultiplied, alpha, motion, median_plate(background_frames))
