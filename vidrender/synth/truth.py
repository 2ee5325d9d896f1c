"""The ground-truth folder of a synthetic clip: write it (atomically), read it back, write sample sets.

Layout of a truth folder (frame files are numbered from 00000 = frame 0):

    clip.mp4            the frames a model sees (H.264)
    frames/%05d.png     the clean frames (optional: re-rendered from the files below when absent)
    background.png      the true plate, RGB
    alpha/%05d.png      the character's matte per frame, 8-bit
    character.png       the character sprite, RGBA (straight alpha)
    affine.json         one 2x3 affine per frame from the reference frame, in pixel coordinates of the
                        clip size, convention written in (format: `vidrender/io/trajectory.py`)
    meta.json           how the clip was made (seed, settings) and the sprite's reference placement
    camera.json         only for a moving camera: {"frames": [3x3 per frame], "convention": ..., "width": W,
                        "height": H}, the layout of an export folder's camera.json; each matrix maps frame-t
                        normalized coordinates to normalized coordinates of background.png, which is then
                        the world plate (larger than the W x H frames); `SynthClip.backgrounds()` renders
                        each frame's true background from the two

A static clip's folder is the same as before cameras existed (format version 1); a folder with
camera.json is version 2, so that an older vidrender refuses it by its version instead of misreading it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vidrender import geometry
from vidrender.compositing import over
from vidrender.errors import UserError
from vidrender.io.atomic import atomic_path
from vidrender.io.images import read_image
from vidrender.io.json_file import read_json_object
from vidrender.io.trajectory import read_trajectory, write_trajectory
from vidrender.io.video import read_video
from vidrender.io.video_write import write_video
from vidrender.synth.camera import check_kind
from vidrender.synth.clips import SynthClip, make_clip
from vidrender.synth.render import render_sprite_layers, render_views

TRUTH_FORMAT = "vidrender-synth-truth"
TRUTH_VERSION = 2
# the version of a folder without camera.json: unchanged since version 1, so older readers keep reading it
STATIC_TRUTH_VERSION = 1
# every name `write_truth` writes in a truth folder (`samples --overwrite` replaces only such a folder)
TRUTH_NAMES = re.compile(
    r"clip\.mp4|frames|alpha|background\.png|character\.png|affine\.json|meta\.json|camera\.json")
_REQUIRED = ("affine.json", "meta.json", "background.png", "character.png")


def _save_png(array: np.ndarray, path: Path) -> None:
    """Save a float array in [0, 1], (H, W) or (H, W, 3|4), as an 8-bit PNG."""
    Image.fromarray(np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)).save(path)


def _channels_last(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) tensor -> (H, W, C) numpy, or (H, W) for one channel."""
    array = image.detach().cpu().float().numpy().transpose(1, 2, 0)
    return array[..., 0] if array.shape[-1] == 1 else array


def _load_png(path: Path, channels: int) -> torch.Tensor:
    """An 8-bit image file as a float tensor (channels, H, W) in [0, 1]; channels 1 (grey), 3 (RGB) or 4."""
    image = read_image(path)
    if channels == 4 and image.shape[2] != 4:
        raise UserError(f"{path}: expected an RGBA image (with alpha)")
    image = image[..., :1] if channels == 1 else image[..., :channels]
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / 255


def write_truth(clip: SynthClip, directory: str | os.PathLike, clean_frames: bool = True, video: bool = True) -> Path:
    """Write `clip` as a truth folder at `directory` (replacing it only once complete); returns the path.

    clean_frames=False leaves out frames/ (the largest part; `read_truth` re-renders it exactly);
    video=False leaves out clip.mp4.
    """
    directory = Path(directory)
    with atomic_path(directory, is_dir=True) as tmp:
        if video:
            # lossless, so that metrics against the truth measure the model and not H.264's 4:2:0 colour
            write_video(tmp / "clip.mp4", clip.frames, clip.fps, quality=0)
        for name, layers in (("frames", clip.clean if clean_frames else None), ("alpha", clip.alpha)):
            if layers is None:
                continue
            (tmp / name).mkdir()
            for index, layer in enumerate(layers):
                _save_png(_channels_last(layer), tmp / name / f"{index:05d}.png")
        _save_png(_channels_last(clip.background), tmp / "background.png")
        _save_png(_channels_last(clip.sprite), tmp / "character.png")
        write_trajectory(tmp / "affine.json", clip.affines, clip.width, clip.height, clip.fps, clip.reference)
        if clip.camera is not None:
            (tmp / "camera.json").write_text(json.dumps(
                {"frames": clip.camera.tolist(), "convention": geometry.CAMERA_CONVENTION,
                 "width": clip.width, "height": clip.height}, indent=1))
        meta = {
            "format": TRUTH_FORMAT,
            "version": STATIC_TRUTH_VERSION if clip.camera is None else TRUTH_VERSION,
            "frames": clip.num_frames,
            "settings": clip.settings,
            "placement": clip.placement.tolist(),
            "placement_convention": "maps character.png pixel coords to reference-frame pixel coords",
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    return directory


def _load_sequence(folder: Path, count: int, channels: int) -> torch.Tensor | None:
    """Frames 00000..count-1 of a PNG folder as (T, C, H, W), or None if the folder is absent."""
    if not folder.is_dir():
        return None
    missing = [f"{i:05d}.png" for i in range(count) if not (folder / f"{i:05d}.png").is_file()]
    if missing:
        raise UserError(f"{folder}: missing {len(missing)} of {count} frames (first: {missing[0]})")
    return torch.stack([_load_png(folder / f"{i:05d}.png", channels) for i in range(count)])


def read_truth(directory: str | os.PathLike) -> SynthClip:
    """Read a truth folder written by `write_truth` back into a `SynthClip` (affines normalized again).

    Absent frames/ or alpha/ are re-rendered from character.png, background.png and the affines; an
    absent clip.mp4 makes `frames` the clean frames.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: truth folder not found")
    missing = [name for name in _REQUIRED if not (directory / name).is_file()]
    if missing:
        raise UserError(f"{directory} is not a vidrender truth folder (missing {', '.join(missing)})")
    meta = read_json_object(directory / "meta.json")
    if meta.get("format") != TRUTH_FORMAT or not isinstance(meta.get("version"), int):
        raise UserError(f"{directory / 'meta.json'}: not a vidrender truth description")
    if meta["version"] > TRUTH_VERSION:
        raise UserError(f"{directory}: truth format version {meta['version']} is newer than this vidrender reads")
    affines, info = read_trajectory(directory / "affine.json")
    if not isinstance(info["width"], int) or not isinstance(info["height"], int) or "fps" not in info:
        raise UserError(f"{directory / 'affine.json'}: a truth trajectory needs integer width, height and fps")
    width, height, reference, fps = info["width"], info["height"], info["reference"], float(info["fps"])
    try:
        placement = torch.tensor(meta["placement"], dtype=torch.float64).reshape(2, 3)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise UserError(f"{directory / 'meta.json'}: no valid sprite placement ({err!r})") from None
    count = len(affines)

    background = _load_png(directory / "background.png", 3)
    sprite = _load_png(directory / "character.png", 4)
    camera = _read_camera(directory / "camera.json", count, width, height)
    if camera is None and meta["version"] >= 2:
        raise UserError(f"{directory}: a truth folder of version {meta['version']} needs its camera.json")
    if camera is None and background.shape[-2:] != (height, width):
        raise UserError(
            f"{directory / 'background.png'}: size {tuple(background.shape[-2:][::-1])} "
            f"differs from affine.json's {width}x{height}"
        )
    placements = geometry.compose(geometry.normalized_to_pixel(affines, width, height), placement.expand(count, 2, 3))
    alpha = _load_sequence(directory / "alpha", count, 1)
    clean = _load_sequence(directory / "frames", count, 3)
    if alpha is None or clean is None:
        layers = render_sprite_layers(sprite, placements, width, height)
        alpha = layers[:, 3:] if alpha is None else alpha
        backgrounds = background if camera is None else render_views(background, camera, (height, width))
        clean = over(layers, backgrounds).clamp(0, 1) if clean is None else clean
    frames = clean
    if (directory / "clip.mp4").is_file():
        frames, _ = read_video(directory / "clip.mp4")
        if frames.shape != clean.shape:
            raise UserError(
                f"{directory / 'clip.mp4'}: {tuple(frames.shape)} frames do not match the truth's {tuple(clean.shape)}"
            )
    return SynthClip(
        frames=frames,
        clean=clean,
        background=background,
        alpha=alpha,
        sprite=sprite,
        affines=affines,
        placement=placement,
        reference=reference,
        fps=fps,
        settings=meta.get("settings", {}),
        camera=camera,
    )


def _read_camera(path: Path, count: int, width: int, height: int) -> torch.Tensor | None:
    """The cameras (count, 3, 3) float64 of a truth folder's camera.json, or None where there is none (a
    static camera); checked to be finite, one per frame, and stated for the clip's W x H frames."""
    if not path.is_file():
        return None
    description = read_json_object(path)
    try:
        camera = torch.as_tensor(description.get("frames"), dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise UserError(f"{path}: \"frames\" must be a list of 3x3 number matrices") from None
    if camera.shape != (count, 3, 3) or not torch.isfinite(camera).all():
        raise UserError(f"{path}: expected {count} finite 3x3 matrices, got shape {tuple(camera.shape)}")
    if (description.get("width"), description.get("height")) != (width, height):
        raise UserError(f"{path}: cameras of {description.get('width')}x{description.get('height')} frames, "
                        f"but affine.json's frames are {width}x{height}")
    return camera


def sample_folders(directory: str | os.PathLike, n: int) -> list[Path]:
    """Where `write_samples` writes its `n` truth folders: DIR/clip0, DIR/clip1, ..."""
    return [Path(directory) / f"clip{index}" for index in range(n)]


def write_samples(
    directory: str | os.PathLike, n: int = 3, size: int | tuple[int, int] = 128, frames: int = 64, seed: int = 0,
    coverage: float | None = None, camera: str | None = None,
) -> list[Path]:
    """Write `n` truth folders DIR/clip0, DIR/clip1, ... from seeds seed, seed+1, ...; returns their paths.

    size: a side, or (W, H) for a non-square clip; coverage: the share of the frame the character covers
    (None: random, 7-15 %); camera: None (static) or a camera move of every clip ("pan", "zoom",
    "handheld", "pan-zoom"; `make_clip`). Every third clip (clip2, clip5, ...) has its character leave the
    frame and come back.
    """
    if n < 1:
        raise UserError(f"number of sample clips must be at least 1, got {n}")
    check_kind(camera)
    paths = []
    for index, folder in enumerate(sample_folders(directory, n)):
        clip = make_clip(seed=seed + index, size=size, frames=frames, leave_frame=index % 3 == 2, coverage=coverage,
                         camera=camera)
        paths.append(write_truth(clip, folder))
    return paths
