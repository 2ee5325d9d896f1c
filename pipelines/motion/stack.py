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
from vidrender.pipelines.motion.world import frame_affines

EXPORT_FORMAT = "vidrender-layers"
# version 3: a moving camera's world plate, views and world affines; a static camera's folder stays version 2
EXPORT_VERSION = 3
STATIC_EXPORT_VERSION = 2
# every name `LayerStack.export` writes in its folder (`export --overwrite` replaces only such a folder)
EXPORT_NAMES = re.compile(r"stack\.json|background\.png|world_plate\.png|background|camera\.json|"
                          r"(character|alpha)(_\d+)?|affine(_world)?(_\d+)?\.json")
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
        """(H, W) of the layers: the plate and the character layers (for a moving camera, the world plate)."""
        return tuple(self.background.plate.shape[-2:])

    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the clip's frames: the layers' for a static camera, the native size for a moving one."""
        return self.size if self.native_size is None else (self.native_size[1], self.native_size[0])

    @property
    def frame_count(self) -> int:
        return len(self.background.camera)

    def character_frames(self, number: int = 0, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Premultiplied RGBA (T, 4, H, W) of character `number` (from 0, back to front) as each frame shows
        it, at `size` (H, W), default `frame_size`: the layer moved by its affines, seen through the camera
        if it moves."""
        character = self.characters[number]
        if self.background.is_static:
            return character.moved(size=size)
        chunks = []
        for start in range(0, self.frame_count, CHUNK):
            stop = min(self.frame_count, start + CHUNK)
            moved = character.moved(character.affines[start:stop])
            chunks.append(geometry.camera_view(moved, self.background.camera[start:stop], size or self.frame_size))
        return torch.cat(chunks).clamp(0, 1)

    def frame_affines(self, number: int = 0) -> torch.Tensor:
        """(T, 2, 3) float32 normalized affines of character `number` in the frames, its reference frame ->
        frame t: its own for a static camera, else its world motion seen through the cameras
        (`world.frame_affines`: the nearest affine where a projective camera makes it a homography)."""
        character = self.characters[number]
        if self.background.is_static:
            return character.affines.float()
        return frame_affines(character.affines, self.background.camera, character.reference).float()

    @property
    def reference(self) -> int:
        """The reference frame: the pose of the (first) character layer, the frame the world plate extends."""
        return self.characters[0].reference if self.characters else 0

    def relative_cameras(self) -> torch.Tensor:
        """(T, 3, 3) float64: frame t -> the reference frame, normalized, H_reference^-1 @ H_t (the camera's
        move, whatever plate it looks at; identities for a static camera)."""
        camera = self.background.camera.double()
        return torch.linalg.solve(camera[self.reference], camera)

    def reference_layer(self, number: int = 0) -> CharacterLayer:
        """Character `number` in the frame coordinates of the reference frame: straight RGBA (4, H, W) at
        `frame_size` as the reference frame shows it, and its motion there (T, 2, 3), reference pose -> pose
        at t without the camera's move, H_reference^-1 @ A_t @ H_reference (nearest affine). For a static
        camera, the layer itself. What `compose` moves: a character planted in its world stays planted."""
        character = self.characters[number]
        if self.background.is_static:
            return character
        camera = self.background.camera[character.reference].double()
        rgba = straight(geometry.camera_view(premultiply(character.rgba.float())[None], camera[None],
                                             self.frame_size)[0])
        motion = frame_affines(character.affines, camera.expand(len(character.affines), 3, 3), character.reference)
        return CharacterLayer(rgba, motion.float(), character.reference)

    def render(self) -> torch.Tensor:
        """The clip re-rendered from its layers, (T, 3, H, W) at `frame_size`."""
        layers = [self.character_frames(number) for number in range(len(self.characters))]
        views = self.background.views(self.frame_count, None if self.background.is_static else self.frame_size)
        return composite(views, layers).expand(self.frame_count, -1, -1, -1)

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
        _check_frame_size(width, height, where, "the plate")
        native = _native_size(entry.get("native_size"), where)
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
        background = BackgroundLayer(plate, camera)
        if native is None or background.is_static and native != (width, height):
            if native is not None:
                raise UserError(f"{where}: damaged motion checkpoint, the plate is {width}x{height} but native_size "
                                f"is {native[0]}x{native[1]} (a static camera's plate is the frame)")
            native = (width, height)
        name = entry.get("name", "clip")
        return cls(background, layers, _fps(entry.get("fps"), where), native,
                   name if isinstance(name, str) else _short(name, 60))

    def export(self, folder: str | Path) -> Path:
        """Write the stack as an export folder (docs/formats.md), atomically: `stack.json`, `camera.json`,
        and per character `character/%05d.png` (RGBA as each frame shows it), `alpha/%05d.png` and
        `affine.json` (its motion in the frames; the second character's folders and file end in `_2`, and so
        on); for a static camera the plate `background.png`, for a moving one the world plate
        `world_plate.png`, each frame's view of it `background/%05d.png` and each character's motion in the
        world plate `affine_world.json`."""
        height, width = self.frame_size
        moving = not self.background.is_static
        plate_name = "world_plate.png" if moving else "background.png"
        manifest = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION if moving else STATIC_EXPORT_VERSION,
                    "width": width, "height": height, "fps": float(self.fps), "frames": self.frame_count,
                    "name": self.name, "background": {"plate": plate_name, "camera": "camera.json"}, "characters": []}
        with atomic_path(Path(folder), is_dir=True) as tmp:
            write_image(tmp / plate_name, self.background.plate)
            camera = {"frames": self.background.camera.tolist(), "convention": CAMERA_CONVENTION,
                      "width": width, "height": height}
            if moving:
                plate_height, plate_width = self.size
                manifest["background"] |= {"views": "background", "plate_width": plate_width,
                                           "plate_height": plate_height}
                camera |= {"plate": plate_name, "plate_width": plate_width, "plate_height": plate_height}
                write_views(tmp / "background", self.background, self.frame_size)
            (tmp / "camera.json").write_text(json.dumps(camera, indent=1))
            for number, character in enumerate(self.characters, start=1):
                names = {**character_file_names(number, moving), "reference": character.reference}
                write_layer_frames(tmp / names["layer"], tmp / names["alpha"], self.character_frames(number - 1))
                write_trajectory(tmp / names["affines"], self.frame_affines(number - 1), width, height, self.fps,
                                 character.reference)
                if moving:
                    write_trajectory(tmp / names["world_affines"], character.affines, *self.size[::-1], self.fps,
                                     character.reference)
                manifest["characters"].append(names)
            (tmp / "stack.json").write_text(json.dumps(manifest, indent=1))
        return Path(folder)


def character_file_names(number: int, moving: bool = False) -> dict[str, str]:
    """Where character `number` (from 1, back to front) lives in an export folder: its `layer` and `alpha`
    folders and its `affines` file (`character`, `alpha`, `affine.json`; then `character_2`, ...), and for
    a `moving` camera its `world_affines` file (`affine_world.json`, `affine_world_2.json`, ...)."""
    suffix = "" if number == 1 else f"_{number}"
    names = {"layer": f"character{suffix}", "alpha": f"alpha{suffix}", "affines": f"affine{suffix}.json"}
    return names | {"world_affines": f"affine_world{suffix}.json"} if moving else names


def write_views(folder: Path, background: BackgroundLayer, size: tuple[int, int]) -> None:
    """Create `folder` and write each frame's view of the background at `size` (H, W) as `%05d.png`, a chunk
    of frames at a time."""
    folder.mkdir()
    for start in range(0, len(background.camera), CHUNK):
        views = BackgroundLayer(background.plate, background.camera[start : start + CHUNK]).views(size=size)
        for offset, view in enumerate(views):
            write_image(folder / f"{start + offset:05d}.png", view.clamp(0, 1))


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
    where its affine is the identity; for a moving camera (version 3, `affine_world.json`) that frame is
    carried into the world plate through the reference frame's camera (an exact copy where that camera
    is a shift by whole pixels, as `train` makes it). The export folder holds the stack, at 8 bits per
    channel.
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
    background = manifest.get("background", {})
    plate = _read_rgb(folder / background.get("plate", "background.png"))
    plate_size = tuple(plate.shape[-2:])
    moving = all("world_affines" in entry for entry in entries) and bool(entries)
    frame_size = _manifest_frame_size(manifest, manifest_path) if moving else plate_size
    camera_path = folder / background.get("camera", "camera.json")
    camera = _read_camera(camera_path, _manifest_frames(manifest, manifest_path)) if moving else None
    characters, fps = [], manifest.get("fps")
    for entry in entries:
        affines, info = read_trajectory(folder / str(entry.get("world_affines" if moving else "affines")),
                                        width=plate_size[1], height=plate_size[0])
        reference = info["reference"]
        layer_folder = folder / str(entry.get("layer"))
        rgba = torch.from_numpy(read_image(layer_folder / f"{reference:05d}.png")).float() / 255
        if rgba.shape != (*frame_size, 4):
            raise UserError(f"{layer_folder}: layers must be RGBA of the frames' size {frame_size[1]}x{frame_size[0]}, "
                            f"got {tuple(rgba.shape)}")
        rgba = rgba.permute(2, 0, 1).contiguous()
        if moving:
            if not 0 <= reference < len(camera):
                raise UserError(f"{folder / str(entry.get('world_affines'))}: reference frame {reference} is outside "
                                f"the {len(camera)} frames")
            into_world = torch.linalg.inv(camera[reference].double())[None]
            rgba = straight(geometry.camera_view(premultiply(rgba)[None], into_world, plate_size)[0])
        characters.append(CharacterLayer(rgba, affines.float(), reference))
        fps = fps or info.get("fps")
    count = len(characters[0].affines) if characters else int(manifest.get("frames", 1))
    if camera is None:
        camera = _read_camera(camera_path, count) if camera_path.is_file() else torch.eye(3).expand(count, 3, 3).clone()
    if any(len(character.affines) != count for character in characters):
        raise UserError(f"{folder}: the layers' affine files disagree on the number of frames")
    return LayerStack(BackgroundLayer(plate, camera), characters, float(fps or 25.0), frame_size[::-1],
                      str(manifest.get("name", folder.name)))


def _manifest_frame_size(manifest: dict, path: Path) -> tuple[int, int]:
    """(H, W) of the frames a moving camera's export states in `stack.json`, checked."""
    width, height = manifest.get("width"), manifest.get("height")
    if not all(isinstance(side, int) and not isinstance(side, bool) and 2 <= side for side in (width, height)) \
            or width * height > DEFAULT_MAX_PIXELS:
        raise UserError(f"{path}: \"width\" and \"height\" must be the frames' size in pixels, got "
                        f"{_short(width, 20)}x{_short(height, 20)}")
    return height, width


def _manifest_frames(manifest: dict, path: Path) -> int:
    """The frame count a moving camera's export states in `stack.json`, checked."""
    frames = manifest.get("frames")
    if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
        raise UserError(f"{path}: \"frames\" must be the number of frames, got {_short(frames, 20)}")
    return frames


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


def _check_frame_size(width: int, height: int, where: str, what: str) -> None:
    """`what` (the plate, the frames) of `width` x `height` must be a frame the video reader accepts: at
    least 2 x 2, at most DEFAULT_MAX_PIXELS."""
    if min(height, width) < 2:
        raise UserError(f"{where}: damaged motion checkpoint, {what} is {_short(width, 20)}x{_short(height, 20)}")
    if width * height > DEFAULT_MAX_PIXELS:
        raise UserError(f"{where}: damaged motion checkpoint, {what} is {width}x{height} "
                        f"({width * height / 1e6:.0f} Mpixel), over the limit of {DEFAULT_MAX_PIXELS / 1e6:.0f} Mpixel")


def _native_size(native, where: str) -> tuple[int, int] | None:
    """The entry's `native_size` [W, H] (the frames' size), checked; None where it states none (files written
    before it existed). A static camera's must be the plate's (`from_dict`)."""
    if native is None:
        return None
    if not (isinstance(native, (list, tuple)) and len(native) == 2
            and all(isinstance(side, int) and not isinstance(side, bool) for side in native)):
        raise UserError(f"{where}: damaged motion checkpoint, native_size is {_short(native, 40)!r}, "
                        f"not [width, height]")
    _check_frame_size(*native, where, "native_size")
    return tuple(native)


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

