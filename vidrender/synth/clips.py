"""Synthetic motion clips with ground truth: a procedural character moving over a procedural plate.

`make_clip` renders a clip and returns everything a metric needs (`SynthClip`): the frames a model
sees, the clean frames, the true background plate, the per-frame matte, the RGBA character sprite,
and one affine per frame from the reference frame, in the conventions of `vidrender/geometry.py`.
`recompose` renders the true result of putting one clip's character (and motion) on another plate.

With `camera=` (`vidrender/synth/camera.py`) the camera moves: the plate is a world plate larger than
the frame, the character is placed and moves in the world, and frame t is the camera's view of the
world (`render_views`, `geometry.camera_view`) with the character laid `over` it where the camera sees
it. The clip then carries its cameras (T, 3, 3), frame t -> world plate in normalized coordinates
(`geometry.CAMERA_CONVENTION`), and its affines stay what they are for every clip: the character's
motion in the frames, reference frame -> frame t (`SynthClip.world_affines` gives it in the world).
Without `camera` a clip is made exactly as before the option existed, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from vidrender import geometry
from vidrender.compositing import over
from vidrender.errors import UserError
from vidrender.synth.camera import camera_path, check_kind, world_frame
from vidrender.synth.motion import MotionRanges, affines_from_placements, random_placements
from vidrender.synth.render import render_sprite_layers, render_views, retarget_placement
from vidrender.synth.sprites import fit_sprite, procedural_character
from vidrender.synth.textures import BACKGROUND_KINDS, background_plate

# The procedural sprite is stored at twice the resolution it is shown at (scale 1), so re-rendering it
# (also when a clip is scaled up) stays sharp.
SPRITE_OVERSAMPLING = 2.0
DEFAULT_COVERAGE = (0.07, 0.15)


@dataclass
class SynthClip:
    """A synthetic clip and its ground truth. T frames of H x W; float32 tensors in [0, 1] unless noted.

    frames:     (T, 3, H, W) what a model sees (noise and JPEG compression applied, if any).
    clean:      (T, 3, H, W) the frames before noise/compression.
    background: (3, H, W) the true plate; with a moving camera the world plate (3, H_w, W_w), larger than
                the frame (each frame's true background: `backgrounds()`).
    alpha:      (T, 1, H, W) the character's anti-aliased matte.
    sprite:     (4, h, w) the character, straight RGBA.
    affines:    (T, 2, 3) float64, normalized coordinates: maps reference-frame points to frame-t points,
                so `geometry.warp(alpha[reference], affines[t]) ~= alpha[t]`; `affines[reference]` = I.
    placement:  (2, 3) float64, pixel coordinates: maps sprite pixels to reference-frame pixels, so frame t
                shows the sprite by `normalized_to_pixel(affines[t]) @ placement`.
    reference:  index of the reference frame.  fps: frames per second.
    settings:   JSON-able description of how the clip was made (seed, sizes, motion ranges, ...).
    camera:     None for a static camera, else (T, 3, 3) float64 normalized cameras, frame t -> the world
                plate `background` (`geometry.CAMERA_CONVENTION`).
    """

    frames: torch.Tensor
    clean: torch.Tensor
    background: torch.Tensor
    alpha: torch.Tensor
    sprite: torch.Tensor
    affines: torch.Tensor
    placement: torch.Tensor
    reference: int = 0
    fps: float = 24.0
    settings: dict = field(default_factory=dict)
    camera: torch.Tensor | None = None

    @property
    def width(self) -> int:
        return int(self.frames.shape[-1])

    @property
    def height(self) -> int:
        return int(self.frames.shape[-2])

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def pixel_affines(self) -> torch.Tensor:
        """(T, 2, 3) float64 affines in pixel coordinates of this clip's size (same direction)."""
        return geometry.normalized_to_pixel(self.affines, self.width, self.height)

    def placements(self) -> torch.Tensor:
        """(T, 2, 3) float64 per-frame sprite placements in pixel coordinates (sprite -> frame t)."""
        return geometry.compose(self.pixel_affines(), self.placement.expand(self.num_frames, 2, 3))

    def backgrounds(self) -> torch.Tensor:
        """(T, 3, H, W) each frame's true background: the plate, or what the camera sees of the world plate."""
        if self.camera is None:
            return self.background.expand(self.num_frames, -1, -1, -1)
        return render_views(self.background, self.camera, (self.height, self.width))

    def world_affines(self) -> torch.Tensor:
        """(T, 3, 3) float64: the character's motion in the world plate's normalized coordinates, from its
        pose at the reference frame to its pose at frame t, H_t @ A_t @ H_ref^-1 (the identity for a
        character standing still, whatever the camera does). Without a camera, the affines themselves."""
        motion = geometry.to_homogeneous(self.affines)
        if self.camera is None:
            return motion
        return self.camera @ motion @ torch.linalg.inv(self.camera[self.reference])


def _size_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    """(W, H) from an int or a (W, H) pair, checked."""
    width, height = (size, size) if isinstance(size, int) else tuple(int(v) for v in size)
    if width < 16 or height < 16:
        raise UserError(f"clip size must be at least 16x16 pixels, got {width}x{height}")
    return width, height


def _image_array(image, channels: int, what: str) -> np.ndarray:
    """A user image (H, W, C) or (C, H, W), uint8 or float in [0, 1], numpy or torch -> float32 (H, W, C)."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] == channels and array.shape[-1] != channels:
        array = array.transpose(1, 2, 0)
    if array.ndim != 3 or array.shape[-1] != channels:
        raise UserError(f"{what} must be an image with {channels} channels, got shape {array.shape}")
    array = array.astype(np.float32) / 255 if array.dtype == np.uint8 else array.astype(np.float32)
    return np.clip(array, 0, 1)


def _quantize(array: np.ndarray) -> np.ndarray:
    """Round to 8-bit levels, so the truth survives a PNG round trip exactly."""
    return np.round(np.clip(array, 0, 1) * 255).astype(np.float32) / 255


def _check_settings(frames: int, fps: float, reference: int, noise: float, jpeg_quality, coverage) -> None:
    if frames < 2:
        raise UserError(f"a clip needs at least 2 frames, got {frames}")
    if fps <= 0:
        raise UserError(f"fps must be positive, got {fps}")
    if not 0 <= reference < frames:
        raise UserError(f"reference frame {reference} is outside the clip's {frames} frames")
    if noise < 0:
        raise UserError(f"noise must be >= 0, got {noise}")
    if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
        raise UserError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    if coverage is not None and not 0 < coverage < 0.5:
        raise UserError(f"coverage must be in (0, 0.5), got {coverage}")


def _degrade(clean: torch.Tensor, rng: np.random.Generator, noise: float, jpeg_quality: int | None) -> torch.Tensor:
    """Add Gaussian noise (std `noise`) and/or a JPEG round trip at `jpeg_quality` to (T, 3, H, W) frames."""
    frames = clean.numpy().transpose(0, 2, 3, 1)
    if noise > 0:
        frames = np.clip(frames + rng.normal(0, noise, frames.shape).astype(np.float32), 0, 1)
    if jpeg_quality is not None:
        degraded = []
        for frame in frames:
            bgr = cv2.cvtColor(np.round(frame * 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
            _, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
            degraded.append(cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) / 255.0)
        frames = np.stack(degraded)
    return torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))).float()


def make_clip(
    seed: int = 0,
    size: int | tuple[int, int] = 128,
    frames: int = 64,
    fps: float = 24.0,
    character=None,
    background=None,
    motion: MotionRanges | None = None,
    leave_frame: bool = False,
    noise: float = 0.0,
    jpeg_quality: int | None = None,
    reference: int = 0,
    coverage: float | None = None,
    camera: str | None = None,
) -> SynthClip:
    """Render a synthetic clip with ground truth; the same arguments always give the same clip.

    size: int or (W, H). character: None for a random procedural one, or an RGBA image ((h, w, 4) or
    (4, h, w), uint8 or float in [0, 1], straight alpha). background: None (random kind), one of
    `BACKGROUND_KINDS`, or an RGB image (resized to the clip size). coverage: fraction of the frame the
    character covers at motion scale 1 (None: random in 7-15%; motion scale then makes it ~5-25%).
    leave_frame: the character leaves the frame entirely and comes back (it is fully visible at the
    reference frame). noise: std of Gaussian noise added to `frames`; jpeg_quality: JPEG round trip.
    camera: None (static), or a camera move of `vidrender.synth.camera.CAMERA_KINDS` ("pan", "zoom",
    "handheld", "pan-zoom"): the background (procedural, or the image resized) is then the world plate,
    the character moves in the world within the reference frame's view (so it is planted in the world,
    and all of it shows in the reference frame), and `SynthClip.camera` holds the cameras (module
    docstring). A static clip is the same with or without this option's existence.
    """
    width, height = _size_pair(size)
    motion = motion or MotionRanges()
    motion.validate()
    _check_settings(frames, fps, reference, noise, jpeg_quality, coverage)
    check_kind(camera)
    # a sixth stream for the camera: the first five are the same as before it existed
    character_rng, background_rng, motion_rng, noise_rng, coverage_rng, camera_rng = (
        np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(6)
    )
    coverage = float(coverage_rng.uniform(*DEFAULT_COVERAGE)) if coverage is None else coverage
    target_area = coverage * width * height

    if character is None:
        canvas = procedural_character(character_rng)
        sprite_pixels_per_canvas_pixel = np.sqrt(target_area / canvas[..., 3].sum()) * SPRITE_OVERSAMPLING
        sprite = fit_sprite(canvas, float(sprite_pixels_per_canvas_pixel))
    else:
        sprite = _quantize(_image_array(character, 4, "character"))
    if sprite[..., 3].sum() < 1:
        raise UserError("character image is fully transparent")
    sprite_scale = float(np.sqrt(target_area / sprite[..., 3].sum()))

    views, offset, (plate_width, plate_height) = None, None, (width, height)
    if camera is not None:
        views = camera_path(camera_rng, camera, frames, width, height, reference)
        offset, (plate_width, plate_height) = world_frame(views, width, height)
    plate_tensor = torch.from_numpy(np.ascontiguousarray(
        _plate(background, background_rng, plate_width, plate_height).transpose(2, 0, 1)))

    placements = random_placements(
        motion_rng, frames, width, height, sprite[..., 3], sprite_scale, motion, leave_frame, reference
    )
    sprite_tensor = torch.from_numpy(np.ascontiguousarray(sprite.transpose(2, 0, 1)))
    cameras = None
    if views is None:
        backgrounds = plate_tensor
    else:
        # the placements are in the home view (the world); the frame sees them through its camera
        placements = (np.linalg.inv(views) @ geometry.to_homogeneous(torch.from_numpy(placements)).numpy())[:, :2]
        cameras = geometry.camera_to_normalized(torch.from_numpy(offset @ views), (width, height),
                                                (plate_width, plate_height))
        backgrounds = render_views(plate_tensor, cameras, (height, width))
    layers = render_sprite_layers(sprite_tensor, torch.from_numpy(placements), width, height)
    alpha = layers[:, 3:]
    clean = over(layers, backgrounds).clamp(0, 1)
    pixel_affines = torch.from_numpy(affines_from_placements(placements, reference))
    settings = {
        "seed": seed,
        "width": width,
        "height": height,
        "frames": frames,
        "fps": fps,
        "reference": reference,
        "coverage": coverage,
        "leave_frame": leave_frame,
        "noise": noise,
        "jpeg_quality": jpeg_quality,
        "motion": motion.to_dict(),
        "background": background if isinstance(background, str) or background is None else "custom",
        "character": "procedural" if character is None else "custom",
    }
    if camera is not None:  # static clips keep the settings they always had
        settings["camera"] = camera
    return SynthClip(
        frames=_degrade(clean, noise_rng, noise, jpeg_quality),
        clean=clean,
        background=plate_tensor,
        alpha=alpha,
        sprite=sprite_tensor,
        affines=geometry.pixel_to_normalized(pixel_affines, width, height),
        placement=torch.from_numpy(placements[reference]),
        reference=reference,
        fps=fps,
        settings=settings,
        camera=cameras,
    )


def _plate(background, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """The plate (H, W, 3) float32 at 8-bit levels: procedural of a kind (None: random), or an image resized."""
    if background is None or isinstance(background, str):
        if isinstance(background, str) and background not in BACKGROUND_KINDS:
            raise UserError(f"unknown background kind {background!r}; choose from {', '.join(BACKGROUND_KINDS)}")
        plate = background_plate(rng, height, width, background)
    else:
        plate = _image_array(background, 3, "background")
        if plate.shape[:2] != (height, width):
            plate = cv2.resize(plate, (width, height), interpolation=cv2.INTER_AREA)
    return _quantize(plate)


def recompose(character_clip: SynthClip, background: torch.Tensor, affines: torch.Tensor | None = None) -> torch.Tensor:
    """The true frames (T, 3, H, W) of `character_clip`'s character over the plate `background` (3, H, W).

    The character moves by `affines` (T, 2, 3) normalized, from its reference-frame pose (default: its
    own motion). A plate of another size gets the character at the same place and size relative to
    the frame (through normalized coordinates), like every compose in vidrender.
    """
    affines = character_clip.affines if affines is None else affines.to(torch.float64)
    height, width = background.shape[-2:]
    placement = retarget_placement(
        character_clip.placement, (character_clip.width, character_clip.height), (width, height)
    )
    placements = geometry.compose(
        geometry.normalized_to_pixel(affines, width, height), placement.expand(len(affines), 2, 3)
    )
    return over(render_sprite_layers(character_clip.sprite, placements, width, height), background).clamp(0, 1)
