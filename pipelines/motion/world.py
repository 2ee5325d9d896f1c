"""A moving-camera clip seen from its world: its cameras found, its frames stabilised into the world plate.

The layers of a clip filmed by a moving camera are learned in *world* coordinates: every frame is
warped into the world plate (the reference frame's view, extended to hold every pixel any frame sees:
`camera.world_bounds`), which turns the clip into a static-camera clip of the world, where the
background stays put and a character standing still has a constant affine. Character, background and
their motion are then found there exactly as for a static clip, and rendered back into each frame
through its camera (`stack.LayerStack`).

`find_cameras(frames, reference)` estimates the cameras in two passes: over the whole frame, then again
ignoring the first pass's difference matte (the character moves otherwise than the background and, over
a background of little texture, pulls the photometric refinement by pixels: 1.3-2.1 px mean corner
error on three synthetic 128 px clips, 0.02-0.03 px without it). A clip whose camera is static
(`camera.is_static`, either pass) gets None: the static path is then taken, unchanged.

`stabilise(frames, cameras)` warps the frames into the world plate. Where a frame does not see the
world, it shows the plate estimate (the temporal median over the frames that see each pixel), so the
stabilised clip is a static one and everything that works on static clips works on it; `seen` says
which pixels are real, for the fits that must not learn from the filled ones.

Cameras follow `vidrender.geometry.CAMERA_CONVENTION` (frame t normalized -> plate normalized).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vidrender import geometry
from vidrender.errors import UserError
from vidrender.pipelines.motion.background import masked_median_plate, median_plate
from vidrender.pipelines.motion.camera import STATIC_TOLERANCE_PX, estimate_cameras, is_static, world_bounds
from vidrender.pipelines.motion.difference_matte import MIN_THRESHOLD, difference_matte, difference_threshold

# a world pixel is seen by frame t where all of its bilinear footprint lies inside the frame
SEEN_LEVEL = 1 - 1e-4
# a clip whose camera cannot be estimated is static if no frame differs from its median on more than this
# share of its pixels (a character covers less; a cut or a blank frame changes nearly all of them)
STATIC_MOVING_SHARE = 0.5


@dataclass
class WorldClip:
    """A clip stabilised into its world plate.

    frames: (T, 3, H_w, W_w) each frame warped into the world plate, the plate estimate where unseen;
    seen: (T, 1, H_w, W_w) bool, where frame t sees the world; plate: (3, H_w, W_w) the temporal median
    of the seen pixels; cameras: (T, 3, 3) float64, frame t -> world plate, normalized; source: (T, 3, H, W)
    the clip's own frames.
    """

    frames: torch.Tensor
    seen: torch.Tensor
    plate: torch.Tensor
    cameras: torch.Tensor
    source: torch.Tensor

    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the clip's own frames."""
        return tuple(self.source.shape[-2:])

    def moving(self, threshold: float | None = None) -> torch.Tensor:
        """(T, 1, H_w, W_w) float in {0, 1}: the classical difference matte of the stabilised frames against
        the plate (`difference_matte`; threshold None: from the noise of the seen pixels)."""
        if threshold is None:
            seen = self.seen[:, 0]
            threshold = difference_threshold((self.frames - self.plate).permute(1, 0, 2, 3)[:, seen].numpy())
        return difference_matte(self.frames, self.plate, threshold)

    def in_frames(self, world: torch.Tensor) -> torch.Tensor:
        """World-plate images (T, C, H_w, W_w) as each frame sees them: (T, C, H, W)."""
        return geometry.camera_view(world, self.cameras, self.frame_size)


def stabilise(frames: torch.Tensor, cameras: torch.Tensor) -> WorldClip:
    """Frames (T, 3, H, W) in [0, 1] warped into the world plate of `cameras` (T, 3, 3), frame t -> the
    reference frame, normalized (`estimate_cameras`), which `camera.world_bounds` sizes and re-expresses
    for the plate."""
    size = tuple(frames.shape[-2:])
    bounds = world_bounds(cameras, size)
    plate_size = (bounds.height, bounds.width)
    to_frames = torch.linalg.inv(bounds.cameras)
    stable = geometry.camera_view(frames.float(), to_frames, plate_size)
    seen = geometry.camera_view(torch.ones(1, 1, *size), to_frames, plate_size) > SEEN_LEVEL
    plate, _ = masked_median_plate(stable, ~seen, stable.mean(dim=0))
    return WorldClip(torch.where(seen, stable, plate), seen, plate, bounds.cameras, frames)


def find_cameras(frames: torch.Tensor, reference: int, model: str = "homography") -> torch.Tensor | None:
    """The cameras (T, 3, 3) float64 of frames (T, 3, H, W) in [0, 1], frame t -> frame `reference`,
    normalized (`estimate_cameras`), or None for a static camera (module doc: two passes).

    Where no camera can be estimated (frames without texture to register, too small for features), a
    clip whose every frame agrees with its temporal median over most of its pixels (`looks_static`) is
    static: nothing there could show a camera's move, and the static path is what it always was. Any
    other clip (a cut, a blank frame) raises the estimation's one-line `UserError` naming the frames.
    """
    size = tuple(frames.shape[-2:])
    try:
        cameras = estimate_cameras(frames, None, reference, model)
    except UserError:
        if looks_static(frames):
            return None
        raise
    if is_static(cameras, STATIC_TOLERANCE_PX, size):
        return None
    first = stabilise(frames, cameras)
    exclude = first.in_frames(first.moving()) > 0.5
    cameras = estimate_cameras(frames, exclude, reference, model)
    if is_static(cameras, STATIC_TOLERANCE_PX, size):  # the character had pulled the first estimate
        return None
    return cameras


def looks_static(frames: torch.Tensor) -> bool:
    """Whether every frame of frames (T, 3, H, W) in [0, 1] differs from the clip's temporal median plate on
    at most STATIC_MOVING_SHARE of its pixels (`difference_matte` at its lowest threshold: the threshold it
    picks from the clip's own differences would take a cut's for noise): only a character moves."""
    moving = difference_matte(frames.float(), median_plate(frames), MIN_THRESHOLD)
    return bool((moving.mean(dim=(1, 2, 3)) <= STATIC_MOVING_SHARE).all())


def frame_affines(world_affines: torch.Tensor, cameras: torch.Tensor, reference: int) -> torch.Tensor:
    """A character's motion in the frames from its motion in the world plate.

    world_affines: (T, 2, 3) normalized plate coordinates, the reference pose -> the pose at t; cameras
    (T, 3, 3) frame t -> plate. Returns (T, 2, 3) float64, reference frame -> frame t, normalized:
    H_t^-1 @ A_t @ H_reference (`nearest_affine` where projective cameras make it a homography).
    """
    cameras = cameras.double()
    return nearest_affine(torch.linalg.inv(cameras) @ geometry.to_homogeneous(world_affines.double())
                          @ cameras[reference])


def world_affines(frame_affines: torch.Tensor, cameras: torch.Tensor, reference: int) -> torch.Tensor:
    """The inverse of `frame_affines`: a character's motion in the frames (T, 2, 3), reference frame ->
    frame t, as motion in the world plate of `cameras` (T, 3, 3), H_t @ A_t @ H_reference^-1, (T, 2, 3)
    float64."""
    cameras = cameras.double()
    return nearest_affine(cameras @ geometry.to_homogeneous(frame_affines.double())
                          @ torch.linalg.inv(cameras[reference]))


def nearest_affine(matrices: torch.Tensor) -> torch.Tensor:
    """(T, 2, 3) float64: the affine nearest to each 3x3 map (T, 3, 3), normalized, in the least squares
    of the points of a 5 x 5 grid over the frame ([-1, 1]^2); exact for an affine map."""
    steps = torch.linspace(-1, 1, 5, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(steps, steps, indexing="xy"), -1).reshape(-1, 2)
    moved = geometry.project(matrices.double(), grid.expand(len(matrices), -1, -1))
    design = torch.cat([grid, torch.ones(len(grid), 1, dtype=torch.float64)], -1)
    return torch.linalg.lstsq(design.expand(len(matrices), -1, -1), moved).solution.transpose(-1, -2)
