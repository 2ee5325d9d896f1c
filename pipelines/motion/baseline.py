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
from vidrender.pipelines.motion.background import median_plate
from vidrender.pipelines.motion.difference_matte import difference_matte
from vidrender.pipelines.motion.tracking import track_affines
from vidrender.pipelines.motion.world import find_cameras, frame_affines, stabilise


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
    reference frame's view extended (`camera.world_bounds`); `cameras` (T, 3, 3),
    frame t -> plate, normalized (`geometry.CAMERA_CONVENTION`); `alpha` (T, 1, H, W) and `affines`
    (T, 2, 3) are in each frame, as for a static clip, and `world_affines` (T, 2, 3) is the character's
    motion in the plate's normalized coordinates (reference pose -> pose at t)."""

    cameras: torch.Tensor
    world_affines: torch.Tensor

    def backgrounds(self, size: tuple[int, int]) -> torch.Tensor:
        """(T, 3, H, W) each frame's background at `size` (H, W): the plate seen by its camera."""
        return geometry.camera_view(self.plate, self.cameras, size, padding_mode="border")


def baseline_decompose_moving(frames: torch.Tensor, reference: int = 0, threshold: float | None = None,
                              model: str = "homography") -> BaselineLayers:
    """Plate, matte and motion of a clip filmed by a moving camera, `frames` (T, 3, H, W) float in [0, 1].

    The cameras are found as for the model (`world.find_cameras`: twice, the second time ignoring the
    first pass's mattes); a clip whose camera turns out static gets `baseline_decompose`'s layers
    unchanged. threshold: as for `baseline_decompose`; model: the camera model of `estimate_cameras`.
    """
    cameras = find_cameras(frames, reference, model)
    if cameras is None:
        return baseline_decompose(frames, reference, threshold)
    world = stabilise(frames, cameras)
    world_alpha = world.moving(threshold)
    alpha = (world.in_frames(world_alpha) > 0.5).float()
    world_affines = track_affines(world.frames, reference, mask=world_alpha)
    affines = frame_affines(world_affines, world.cameras, reference)
    return MovingBaselineLayers(plate=world.plate, alpha=alpha, affines=affines, reference=reference,
                                cameras=world.cameras, world_affines=world_affines)


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
