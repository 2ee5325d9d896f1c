"""The layer stack: a clip taken apart, as `train` produces it, `export` writes it and `compose` reads it.

    frame_t       = over(character_K,t, ... over(character_1,t, view_t))       back to front
    character_k,t = rgba_k moved by A_t^k                                      (straight RGBA at the
                                                                                reference pose)
    view_t        = plate moved by H_t^-1                                      (the camera; identity for
                                                                                a static camera)

Conventions (`vidrender/geometry.py`): affines A_t (T, 2, 3) are normalized (align_corners=False,
[-1, 1] across the frame) and map points of the reference frame to where they are in frame t; the
camera H_t (T, 3, 3) maps points of frame t to points of the plate, normalized too. Normalized
coordinates make a layer mean the same at any resolution, so a character lands at the same relative
place and size on a background of another size. All images are float32 in [0, 1].

Two serialisations, both read back into a `LayerStack`:
* in a checkpoint's artifact (`to_dict` / `from_dict`): plain tensors and numbers, one dict per clip;
* an export folder (`export` / `read_export`): PNGs and JSON at the clip's native size (docs/formats.md).
The forms written before the stack existed still load: checkpoint entries of format version 1 and export
folders without `stack.json` (one character, a static camera).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from vidrender import geometry
from vidrender.compositing import over, premultiply
from vidrender.errors import UserError
from vidrender.geometry import invert
from vidrender.io.atomic import atomic_path
from vidrender.io.images import read_image, write_image
from vidrender.io.json_file import read_json_object
from vidrender.io.trajectory import read_trajectory, write_trajectory
from vidrender.io.video import DEFAULT_MAX_PIXELS
from vidrender.pipelines.motion.inputs import MAX_CLIP_BYTES

EXPORT_FORMAT = "vidrender-layers"
EXPORT_VERSION = 2
# every name `LayerStack.export` writes in its folder (`export --overwrite` replaces only such a folder)
EXPORT_NAMES = re.compile(r"stack\.json|background\.png|camera\.json|(character|alpha)(_\d+)?|affine(_\d+)?\.json")
# the one camera convention of vidrender (truth folders, camera estimation and metrics use it too)
CAMERA_CONVENTION = geometry.CAMERA_CONVENTION
# frames moved at once: bounds the sampling grid's memory on long clips at large sizes
CHUNK = 32


@dataclass
class BackgroundLayer:
    """What stays: `plate` (3, H, W) and the camera `camera` (T, 3, 3), frame t -> plate, normalized."""

    plate: torch.Tensor
    camera: torch.Tensor

    @classmethod
    def static(cls, plate: torch.Tensor, frames: int) -> BackgroundLayer:
        """A plate seen by a camera that does not move over `frames` frames (H_t = identity)."""
        return cls(plate, torch.eye(3).expand(frames, 3, 3).clone())

    @property
    def is_static(self) -> bool:
        return bool(torch.equal(self.camera, torch.eye(3).expand_as(self.camera)))

    def views(self, count: int | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Each frame's view of the plate, (T, 3, H, W) (or (1, 3, H, W) for a static camera, which
        broadcasts), at `size` (H, W), default the plate's. `count` frames of a static camera.

        A moving camera (affine or projective) samples the plate at its own resolution straight into each
        frame's grid (`geometry.camera_view`), so a world plate larger than the frame keeps its detail."""
        plate = self.plate.float()[None]
        if self.is_static:
            if size is not None and tuple(size) != tuple(plate.shape[-2:]):
                plate = F.interpolate(plate, size=size, mode="bilinear", align_corners=False, antialias=True)
            return plate
        frames = len(self.camera) if count is None else count
        return geometry.camera_view(plate, self.camera[:frames], plate.shape[-2:] if size is None else size)


@dataclass
class CharacterLayer:
    """What moves: straight RGBA `rgba` (4, H, W) at the pose of frame `reference`, and per-frame affines
    `affines` (T, 2, 3), normalized, reference -> frame t (entry `reference` is the identity)."""

    rgba: torch.Tensor
    affines: torch.Tensor
    reference: int = 0

    def moved(self, affines: torch.Tensor | None = None, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Premultiplied RGBA per frame, (T, 4, H, W): the layer moved by `affines` (T, 2, 3) normalized
        (default: its own motion), sampled at `size` (H, W) (default: the layer's own).

        The layer is sampled once, straight into the output grid (resizing first and then warping blurs
        it twice), and premultiplied, so the colour stored outside the matte (the clip's own background)
        cannot bleed into the edge.
        """
        affines = (self.affines if affines is None else affines).float()
        layer = premultiply(self.rgba.float())[None]
        height, width = layer.shape[-2:] if size is None else size
        if height * 2 < layer.shape[-2] or width * 2 < layer.shape[-1]:
            # bilinear sampling aliases when shrinking by more than 2x: shrink with a proper filter first
            layer = F.interpolate(layer, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        chunks = []
        for chunk in affines.split(CHUNK):
            grid = F.affine_grid(invert(chunk), [len(chunk), 4, height, width], align_corners=False)
            chunks.append(F.grid_sample(layer.expand(len(chunk), -1, -1, -1), grid, mode="bilinear",
                                        padding_mode="zeros", align_corners=False))
        return torch.cat(chunks).clamp(0, 1)


def straight(premultiplied: torch.Tensor) -> torch.Tensor:
    """Premultiplied RGBA (..., 4, H, W) -> straight RGBA, colour 0 where alpha is 0 (what PNG files hold)."""
    alpha = premultiplied[..., 3:, :, :]
    colour = torch.where(alpha > 1e-4, premultiplied[..., :3, :, :] / alpha.clamp_min(1e-4), 0.0)
    return torch.cat([colour.clamp(0, 1), alpha], dim=-3)


def composite(views: torch.Tensor, layers: list[torch.Tensor]) -> torch.Tensor:
    """Frames (T, 3, H, W): premultiplied RGBA layers (T, 4, H, W), listed back to front, each laid `over`
    the background views (T or 1, 3, H, W)."""
    frames = views
    for layer in layers:
        frames = over(layer, frames)
    return frames.clamp(0, 1)


@dataclass
class LayerStack:
    """One clip taken apart: a background layer and character layers (back to front), plus the clip's
    frame rate, native size (W, H) and name. Its frames are `render()`."""

    background: BackgroundLayer
    characters: list[CharacterLayer] = field(default_factory=list)
    fps: float = 25.0
    native_size: tuple[int, int] | None = None
    name: str = "clip"

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the layers."""
        return tuple(self.background.plate.shape[-2:])

    @property
    def frame_count(self) -> int:
        return len(self.background.camera)

    def render(self) -> torch.Tensor:
        """The clip re-rendered from its layers, (T, 3, H, W)."""
        layers = [character.moved() for character in self.characters]
        return composite(self.background.views(self.frame_count), layers).expand(self.frame_count, -1, -1, -1)

    def to_dict(self) -> dict:
        """The checkpoint form (format version 2): plain tensors and numbers."""
        return {
            "name": self.name,
            "fps": float(self.fps),
            "native_size": list(self.native_size or self.size[::-1]),
            "background": {"plate": self.background.plate, "camera": self.background.camera},
            "characters": [{"rgba": c.rgba, "affines": c.affines, "reference": c.reference} for c in self.characters],
        }

    @classmethod
    def from_dict(cls, entry: dict, where: str, version: int) -> LayerStack:
        """Read and check a checkpoint's clip entry (`version` 1 entries are converted); a damaged or
        hand-edited entry is one `UserError` naming what is wrong, never a traceback later.

        Sizes are checked against the entry's own, before any value is read: the plate (3, H, W) is at
        the stated native size (W, H) and within the video reader's frame limit, every character layer is
        (4, H, W) with one affine per frame, the camera has one matrix per frame, the frames are no more
        than `train` holds of a clip of that size (MAX_CLIP_BYTES), and fps is finite and positive.
        """
        if not isinstance(entry, dict):
            raise UserError(f"{where}: damaged motion checkpoint, the clip entry is not a dict")
        if version == 1:
            entry = _from_version_1(entry, where)
        background, characters = entry.get("background"), entry.get("characters")
        if not isinstance(background, dict) or not isinstance(characters, list) or not characters:
            raise UserError(f"{where}: damaged motion checkpoint, no background or no character layers")
        plate = _shaped(background.get("plate"), where, "plate", (3, None, None))
        height, width = plate.shape[-2:]
        _check_frame_size(entry.get("native_size"), width, height, where)
        plate = _finite(plate, where, "plate")
        layers = [_character_from_dict(character, height, width, where) for character in characters]
        count = len(layers[0].affines)
        if count == 0 or any(len(layer.affines) != count for layer in layers):
            raise UserError(f"{where}: damaged motion checkpoint, the character layers have "
                            f"{', '.join(str(len(layer.affines)) for layer in layers)} affines")
        if version == 1:  # a static camera, made only now that the frame count is known to be sane
            camera = torch.eye(3).expand(count, 3, 3).clone()
        else:
            camera = _tensor(background.get("camera"), where, "camera", (count, 3, 3))
        name = entry.get("name", "clip")
        return cls(BackgroundLayer(plate, camera), layers, _fps(entry.get("fps"), where), (width, height),
                   name if isinstance(name, str) else _short(name, 60))

    def export(self, folder: str | Path) -> Path:
        """Write the stack as an export folder (docs/formats.md), atomically: `stack.json`,
        `background.png`, `camera.json`, and per character `character/%05d.png` (RGBA), `alpha/%05d.png`
        and `affine.json` (the second character's folders and file end in `_2`, and so on)."""
        height, width = self.size
        manifest = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "width": width, "height": height,
                    "fps": float(self.fps), "frames": self.frame_count, "name": self.name,
                    "background": {"plate": "background.png", "camera": "camera.json"}, "characters": []}
        with atomic_path(Path(folder), is_dir=True) as tmp:
            write_image(tmp / "background.png", self.background.plate)
            (tmp / "camera.json").write_text(json.dumps(
                {"frames": self.background.camera.tolist(), "convention": CAMERA_CONVENTION,
                 "width": width, "height": height}, indent=1))
            for number, character in enumerate(self.characters, start=1):
                names = {**character_file_names(number), "reference": character.reference}
                write_layer_frames(tmp / names["layer"], tmp / names["alpha"], character.moved())
                write_trajectory(tmp / names["affines"], character.affines, width, height, self.fps,
                                 character.reference)
                manifest["characters"].append(names)
            (tmp / "stack.json").write_text(json.dumps(manifest, indent=1))
        return Path(folder)


def character_file_names(number: int) -> dict[str, str]:
    """Where character `number` (from 1, back to front) lives in an export folder: its `layer` and `alpha`
    folders and its `affines` file (`character`, `alpha`, `affine.json`; then `character_2`, ...)."""
    suffix = "" if number == 1 else f"_{number}"
    return {"layer": f"character{suffix}", "alpha": f"alpha{suffix}", "affines": f"affine{suffix}.json"}


def write_layer_frames(layer_folder: Path, alpha_folder: Path, moved: torch.Tensor) -> None:
    """Create both folders and write, per frame of `moved` (T, 4, H, W) premultiplied RGBA, the straight
    RGBA layer `layer_folder/%05d.png` and its 8-bit matte `alpha_folder/%05d.png`."""
    layer_folder.mkdir()
    alpha_folder.mkdir()
    for index, premultiplied in enumerate(moved):
        layer = straight(premultiplied)
        write_image(layer_folder / f"{index:05d}.png", layer)
        write_image(alpha_folder / f"{index:05d}.png", layer[3:])


def read_export(folder: str | Path) -> LayerStack:
    """A `LayerStack` from an export folder; one written before `stack.json` existed (background.png,
    character/, affine.json) loads as one character over a static camera.

    Each character's reference layer is its frame at the reference pose (`character/<reference>.png`),
    where its affine is the identity: the export folder holds the stack, at 8 bits per channel.
    """
    folder = Path(folder)
    manifest_path = folder / "stack.json"
    if manifest_path.is_file():
        manifest = read_json_object(manifest_path)
        if manifest.get("format") != EXPORT_FORMAT or not isinstance(manifest.get("version"), int):
            raise UserError(f"{manifest_path}: not a vidrender layer-stack manifest")
        if manifest["version"] > EXPORT_VERSION:
            raise UserError(f"{manifest_path}: layer-stack version {manifest['version']} is newer than this "
                            f"vidrender reads ({EXPORT_VERSION}); upgrade vidrender")
        entries = manifest.get("characters")
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            raise UserError(f"{manifest_path}: \"characters\" must be a list of layer entries")
    else:
        manifest, entries = {}, [{"layer": "character", "affines": "affine.json"}]
    plate = _read_rgb(folder / manifest.get("background", {}).get("plate", "background.png"))
    height, width = plate.shape[-2:]
    characters, fps = [], manifest.get("fps")
    for entry in entries:
        affines, info = read_trajectory(folder / str(entry.get("affines")), width=width, height=height)
        reference = info["reference"]
        rgba = torch.from_numpy(read_image(folder / str(entry.get("layer")) / f"{reference:05d}.png")).float() / 255
        if rgba.shape != (height, width, 4):
            raise UserError(f"{folder / str(entry.get('layer'))}: layers must be RGBA of the plate's size "
                            f"{width}x{height}, got {tuple(rgba.shape)}")
        characters.append(CharacterLayer(rgba.permute(2, 0, 1).contiguous(), affines.float(), reference))
        fps = fps or info.get("fps")
    count = len(characters[0].affines) if characters else int(manifest.get("frames", 1))
    camera_path = folder / manifest.get("background", {}).get("camera", "camera.json")
    camera = _read_camera(camera_path, count) if camera_path.is_file() else torch.eye(3).expand(count, 3, 3).clone()
    if any(len(character.affines) != count for character in characters):
        raise UserError(f"{folder}: the layers' affine files disagree on the number of frames")
    return LayerStack(BackgroundLayer(plate, camera), characters, float(fps or 25.0), (width, height),
                      str(manifest.get("name", folder.name)))


def _from_version_1(entry: dict, where: str) -> dict:
    """A format-version-1 clip entry (plate, character, affines, fps, native_size, reference, mattes) in
    the version-2 form: one character; its static camera is made by `from_dict` once the frame count is
    checked. The per-frame mattes are dropped (they were the reference alpha moved by the affines, which
    the stack recomputes)."""
    missing = [key for key in ("plate", "character", "affines", "fps", "reference") if key not in entry]
    if missing:
        raise UserError(f"{where}: damaged motion checkpoint, a clip lacks {', '.join(missing)}")
    return {
        "name": entry.get("name", "clip"), "fps": entry["fps"], "native_size": entry.get("native_size"),
        "background": {"plate": entry["plate"]},
        "characters": [{"rgba": entry["character"], "affines": entry["affines"], "reference": entry["reference"]}],
    }


def _character_from_dict(character, height: int, width: int, where: str) -> CharacterLayer:
    """A checkpoint's character entry, checked: rgba (4, H, W) and affines (T, 2, 3), T within the frames
    a clip of W x H may have (checked before the affines' values are read), reference below T."""
    if not isinstance(character, dict):
        raise UserError(f"{where}: damaged motion checkpoint, a character layer is not a dict")
    rgba = _tensor(character.get("rgba"), where, "character", (4, height, width))
    affines = _shaped(character.get("affines"), where, "affines", (None, 2, 3))
    _check_frame_count(len(affines), width, height, where)
    affines = _finite(affines, where, "affines")
    reference = _index(character.get("reference"), len(affines), where) if len(affines) else 0
    return CharacterLayer(rgba, affines, reference)


def _check_frame_size(native, width: int, height: int, where: str) -> None:
    """A plate of `width` x `height` must be a frame the video reader accepts (at least 2 x 2, at most
    DEFAULT_MAX_PIXELS) and match the entry's `native_size` [W, H] where it states one (files written
    before it existed load without)."""
    if min(height, width) < 2:
        raise UserError(f"{where}: damaged motion checkpoint, a {width}x{height} plate")
    if native is not None:
        if not (isinstance(native, (list, tuple)) and len(native) == 2
                and all(isinstance(side, int) and not isinstance(side, bool) for side in native)):
            raise UserError(f"{where}: damaged motion checkpoint, native_size is {_short(native, 40)!r}, "
                            f"not [width, height]")
        if tuple(native) != (width, height):
            raise UserError(f"{where}: damaged motion checkpoint, the plate is {width}x{height} but native_size is "
                            f"{_short(native[0], 20)}x{_short(native[1], 20)}")
    if width * height > DEFAULT_MAX_PIXELS:
        raise UserError(f"{where}: damaged motion checkpoint, the plate is {width}x{height} "
                        f"({width * height / 1e6:.0f} Mpixel), over the limit of {DEFAULT_MAX_PIXELS / 1e6:.0f} Mpixel")


def _check_frame_count(frames: int, width: int, height: int, where: str) -> None:
    """`frames` frames of `width` x `height` must fit the memory `train` allows a clip (float32 RGB), as
    every reader of the stack renders them at that size."""
    needed = frames * 3 * width * height * 4
    if needed > MAX_CLIP_BYTES:
        raise UserError(f"{where}: damaged motion checkpoint, affines has {frames} frames; {frames} frames of "
                        f"{width}x{height} need {needed / 1024**3:.1f} GB, over the limit of "
                        f"{MAX_CLIP_BYTES / 1024**3:.0f} GB for a clip")


def _fps(value, where: str) -> float:
    """The entry's frame rate: a finite positive number (an integer too large for a float is refused)."""
    try:
        fps = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:
        fps = math.inf
    if not 0 < fps < math.inf:
        raise UserError(f"{where}: damaged motion checkpoint, fps is {_short(value, 20)!r}")
    return fps


def _short(value, limit: int) -> str:
    """`str(value)` cut to `limit` characters; Python refuses to print integers of over 4300 digits."""
    try:
        return str(value)[:limit]
    except ValueError:
        return f"a {type(value).__name__} too long to show"


def _tensor(value, where: str, name: str, shape: tuple[int | None, ...]) -> torch.Tensor:
    """`value` checked to be a finite float tensor of `shape` (None: any size); float32 copy."""
    return _finite(_shaped(value, where, name, shape), where, name)


def _shaped(value, where: str, name: str, shape: tuple[int | None, ...]) -> torch.Tensor:
    """`value` checked to be a float tensor of `shape` (None: any size), without reading its values."""
    if not (isinstance(value, torch.Tensor) and value.is_floating_point()):
        raise UserError(f"{where}: damaged motion checkpoint, {name} is not a float tensor")
    wrong = value.dim() != len(shape) or any(
        want is not None and got != want for got, want in zip(value.shape, shape, strict=True))
    if wrong:
        expected = "x".join("N" if want is None else str(want) for want in shape)
        raise UserError(f"{where}: damaged motion checkpoint, {name} has shape {tuple(value.shape)}, not {expected}")
    return value


def _finite(value: torch.Tensor, where: str, name: str) -> torch.Tensor:
    """`value` checked to hold no NaN or infinity; float32 (a copy unless it is float32 already)."""
    if not torch.isfinite(value).all():
        raise UserError(f"{where}: damaged motion checkpoint, {name} holds NaN or infinite values")
    return value.float()


def _index(value, count: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
        raise UserError(f"{where}: damaged motion checkpoint, reference frame is {_short(value, 20)}, "
                        f"not a frame index below {count}")
    return value


def _read_rgb(path: Path) -> torch.Tensor:
    image = read_image(path)
    return torch.from_numpy(image[..., :3]).permute(2, 0, 1).float().contiguous() / 255


def _read_camera(path: Path, count: int) -> torch.Tensor:
    try:
        camera = torch.as_tensor(read_json_object(path).get("frames"), dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise UserError(f"{path}: \"frames\" must be a list of 3x3 number matrices") from None
    if camera.shape != (count, 3, 3) or not torch.isfinite(camera).all():
        raise UserError(f"{path}: expected {count} finite 3x3 matrices, got shape {tuple(camera.shape)}")
    return camera


def single_layer_stack(plate: torch.Tensor, rgba: torch.Tensor, affines: torch.Tensor, reference: int, fps: float,
                       native_size: tuple[int, int] | None = None, name: str = "clip") -> LayerStack:
    """The stack of a clip with one character over a static camera: plate (3, H, W), rgba (4, H, W)
    straight at the reference pose, affines (T, 2, 3) normalized reference -> t."""
    return LayerStack(BackgroundLayer.static(plate, len(affines)), [CharacterLayer(rgba, affines, reference)],
                      fps, native_size, name)

