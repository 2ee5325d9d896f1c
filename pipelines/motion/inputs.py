"""Turn the `vidrender train CLIP...` arguments into `Clip`s: frames, fps, native size and affines.

A CLIP is a video file, an image folder or pattern (anything `vidrender.io.video` reads), or a
synthetic truth folder (`vidrender samples`), whose `clip.mp4` is read and whose `affine.json` is the
known motion.

Where the `known` variant's affines come from, per clip (`--affines`, given once for all clips or once
per clip, in order):
  * `PATH.json`  a trajectory file (`vidrender/io/trajectory.py`), one affine per frame;
  * `truth`      the truth folder's `affine.json` (the default for truth folders);
  * `track`      estimated with OpenCV (`tracking.py`; the default for plain videos).
The label-free variants (`frame-pair`, `feature-pair`) never see truth or trajectory affines: using
them would be training on labels. They may get tracked affines as a warm start (the model's config
says whether), which need no labels.
"""

from __future__ import annotations

import os
from pathlib import Path

from vidrender.errors import UserError
from vidrender.io.paths import file_problem
from vidrender.io.trajectory import read_trajectory
from vidrender.io.video import read_video
from vidrender.pipelines.motion.data import Clip, check_frame_size

TRUTH_FILES = ("clip.mp4", "affine.json", "meta.json")
# Frames are held as float32 at native size for inference at full resolution; refuse clips that
# would not fit comfortably in memory rather than being killed halfway through training.
MAX_CLIP_BYTES = 6 * 1024**3


def is_truth_folder(path: Path) -> bool:
    """A synthetic truth folder (written by `vidrender samples` / `vidrender.synth.write_truth`)."""
    return path.is_dir() and all((path / name).is_file() for name in TRUTH_FILES)


def video_of(path: Path) -> Path:
    """The video to read for a CLIP argument: a truth folder's clip.mp4, else the path itself."""
    return path / "clip.mp4" if is_truth_folder(path) else path


def _check_size(path: Path, max_frames: int | None) -> None:
    """Refuse, from the header and before any frame is decoded, a clip thinner than MIN_CLIP_SIDE or too
    large for memory."""
    from vidrender.io.video import probe

    info = probe(path)
    check_frame_size(str(path), info.width, info.height)
    frames = min(info.frame_count, max_frames) if max_frames else info.frame_count
    needed = frames * 3 * info.width * info.height * 4
    if needed > MAX_CLIP_BYTES:
        raise UserError(
            f"{path}: {frames} frames of {info.width}x{info.height} need {needed / 1024**3:.1f} GB in memory; "
            f"use --max-frames or a shorter or smaller clip (limit {MAX_CLIP_BYTES / 1024**3:.0f} GB)"
        )


def affine_sources(clips: list[Path], affines: list[str]) -> list[str | None]:
    """One affine source per clip from the `--affines` values (none, one for all, or one per clip)."""
    if not affines:
        return [None] * len(clips)
    if len(affines) == 1:
        return affines * len(clips)
    if len(affines) != len(clips):
        raise UserError(f"--affines given {len(affines)} times for {len(clips)} clips; give it once or once per clip")
    return list(affines)


def load_clip(path: Path, needs_affines: bool, affines: str | None = None, max_frames: int | None = None) -> Clip:
    """Read one CLIP at native resolution, with its known affines if `needs_affines` (the predictor of the
    `known` variant; see module doc)."""
    path = Path(path)
    if not any(ch in str(path) for ch in "*%"):
        _check_clip_path(path)
    video = video_of(path)
    _check_size(video, max_frames)
    frames, info = read_video(video, max_frames=max_frames)
    if frames.shape[0] < 2:
        raise UserError(f"{path}: has {frames.shape[0]} frame; learning motion needs at least 2")
    clip = Clip(frames=frames, fps=info.fps, native_size=(info.width, info.height), name=str(path))
    if not needs_affines:
        return clip
    source = affines or ("truth" if is_truth_folder(path) else "track")
    if source == "truth":
        if not is_truth_folder(path):
            raise UserError(f"{path}: --affines truth needs a truth folder (vidrender samples), this is not one")
        source = str(path / "affine.json")
    if source == "track":
        from vidrender.pipelines.motion.tracking import track_affines

        clip.affines = track_affines(frames).float()
    else:
        table, _ = read_trajectory(source, width=info.width, height=info.height)
        if table.shape[0] < frames.shape[0]:
            raise UserError(f"{source}: {table.shape[0]} affines for the {frames.shape[0]} frames of {path}")
        clip.affines = table[: frames.shape[0]].float()
    return clip


def _check_clip_path(path: Path) -> None:
    """A CLIP that is not a pattern must be a folder or a regular file: a FIFO or a device is named as
    such (the reader would say "file not found", or block on a FIFO)."""
    if os.path.isdir(path):  # os.path answers False where Path.is_dir raises (a name too long)
        return
    problem = file_problem(path, "file or folder")
    if problem is not None:
        raise UserError(f"{path}: {problem}")


def load_clips(paths: list[Path], needs_affines: bool, affines: list[str] = (), max_frames: int | None = None
               ) -> list[Clip]:
    """Every CLIP argument as a `Clip` (see `load_clip`)."""
    sources = affine_sources(paths, list(affines))
    return [load_clip(Path(path), needs_affines, source, max_frames)
            for path, source in zip(paths, sources, strict=True)]

