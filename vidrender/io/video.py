"""Read videos and image sequences as upright uint8 RGB(A) frames, or as one float tensor (PyAV).

Inputs: any file FFmpeg decodes (mp4, mov, mkv, webm, avi, animated gif, animated png, ...), an
animated WebP (decoded with Pillow: FFmpeg's WebP decoder reads stills only), a folder of images
(naturally sorted: 2.png before 10.png), a glob pattern (`frames/*.png`) or a printf pattern
(`frames/%05d.png`), or a single still image (a one-frame clip). A container's cover pictures
(attached pictures, as in music files) are not its video: the first other video stream is read.

Conventions:
- A frame is a numpy array (H, W, 3) RGB or (H, W, 4) RGBA, uint8, straight (not premultiplied) alpha.
- The display matrix (rotation metadata, mirrors included) is applied exactly as the ffmpeg command
  line's autorotate applies it (`autorotate_filters`), so frames come out the way players show them;
  width and height in `VideoInfo` are after it.
- Times are seconds from the clip's first frame. Image sequences have no timing: they play at
  IMAGE_SEQUENCE_FPS (FFmpeg's default for image sequences).
- Every consumer wants evenly spaced frames, so a clip whose timestamps are uneven (variable frame
  rate) is resampled by timestamps to a constant rate, like `ffmpeg -fps_mode cfr`; an evenly timed
  clip is read frame by frame, unchanged.
- Alpha in VP8/VP9 (webm) is a side channel that only libvpx's decoders read (FFmpeg's native
  decoders drop it), so those streams are decoded with libvpx when they carry alpha.

Every problem a user can fix (missing file, not a video, no video stream, zero frames, a truncated or
corrupt file, an unreadable image, frames too large to hold) raises UserError naming the file.

Memory bound: frames over `max_pixels` (default DEFAULT_MAX_PIXELS = 8192 x 8192, 67 Mpixel) are refused
from the container header, before any frame is converted, and every decoded frame is checked again (a
damaged header can lie), so a 10000 x 10000 clip is one line of error, never an out-of-memory kill. Reads
with a `size` instead shrink each frame as it is decoded and hold only one native frame at a time.
"""

from __future__ import annotations

import glob
import math
import os
import re
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import accumulate, islice
from pathlib import Path

import av
import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vidrender.errors import UserError
from vidrender.io.images import IMAGE_SUFFIXES, image_size, list_images, natural_key, read_image
from vidrender.io.paths import file_problem

IMAGE_SEQUENCE_FPS = 25.0
DEFAULT_MAX_PIXELS = 8192 * 8192
FITS = ("short", "crop", "pad", "stretch")

_ALPHA_DECODERS = {"vp9": "libvpx-vp9", "vp8": "libvpx"}
_PRINTF_FIELD = re.compile(r"%(0?)(\d*)d")
# Automatic resampling of a variable frame rate clip makes at most this many frames per stored frame on
# average: timestamps further apart than that are damage (a corrupt file), not timing, and are not trusted
MAX_AVERAGE_REPEAT = 1000
# What each filter of FFmpeg's autorotate does, as (counter-clockwise quarter turns, then a left-right
# mirror); transpose's *_flip modes are the diagonal transposes, vflip is a half turn then a mirror
_FILTER_ORIENTATION = {
    "transpose=cclock": (1, False),
    "transpose=clock": (3, False),
    "transpose=cclock_flip": (3, True),
    "transpose=clock_flip": (1, True),
    "hflip": (0, True),
    "vflip": (2, True),
}


@dataclass(frozen=True)
class VideoInfo:
    """What a clip is, as read by default (before any resizing or resampling asked of the reader).

    width, height: pixels after the display matrix. fps: the frame rate frames are read at: the
    nominal rate of an evenly timed clip; for variable frame rate (`variable_frame_rate`), the rate
    it is resampled to (the stream's guessed rate, else its average). frame_count: exact when
    `frame_count_exact`, else duration * fps rounded. duration: seconds. rotation: counter-clockwise
    degrees the stored frames are turned to show them upright (0, 90, 180 or -90), after which they
    are mirrored left-right if `mirrored`. has_alpha: the pixel format carries an alpha channel.
    """

    path: Path
    fps: float
    width: int
    height: int
    frame_count: int
    duration: float
    rotation: int
    has_alpha: bool
    frame_count_exact: bool
    mirrored: bool = False
    variable_frame_rate: bool = False


@dataclass
class _SourceFrame:
    """One decoded frame; its pixels are converted only if the frame is selected."""

    time: Fraction  # seconds from the first frame
    duration: Fraction  # how long it is shown
    pixels: Callable[[bool], np.ndarray]  # alpha -> upright (H, W, 3|4) uint8


def probe(path: str | os.PathLike) -> VideoInfo:
    """Describe a clip (video file, image folder or pattern) without reading all of it.

    Decodes the first frame only (for its display matrix), and reads the frames' timestamps without
    decoding them (to tell a variable frame rate: from the index of an MP4 or MOV, else one pass over
    the packets). Raises UserError on any unreadable input.
    """
    with _open_source(path) as source:
        return source.info


def iter_frames(
    path: str | os.PathLike,
    *,
    size: int | None = None,
    fit: str = "short",
    step: int = 1,
    fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
    max_frames: int | None = None,
    alpha: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[np.ndarray]:
    """Yield the clip's frames one at a time as upright (H, W, 3) RGB, or (H, W, 4) RGBA if `alpha`, uint8.

    size: target size in pixels, applied per `fit`: "short" keeps the aspect ratio with the short
        side = size; "crop" scales the short side to size and centre-crops size x size; "pad" scales
        the long side to size and letterboxes to size x size with black (transparent if alpha);
        "stretch" resizes to size x size. None keeps the native size.
    fps: resample to this frame rate by timestamps (the frame on screen at each tick of the new
        rate is taken). None keeps every frame of an evenly timed clip, and resamples a variable
        frame rate clip (uneven timestamps) to `probe(path).fps`, duplicating and dropping frames
        like `ffmpeg -fps_mode cfr`, so frames always come out evenly spaced.
    step: keep every step-th frame (after resampling).
    start, end: seconds from the first frame; frames with timestamps in [start, end) are read
        (with `fps`, the ticks of the new rate run from start to end).
    max_frames: stop after this many frames.
    alpha: add an alpha channel (opaque if the source has none); without it alpha is dropped.
    max_pixels: frames larger than this (width * height) are refused unless `size` is given, in which
        case each frame is downscaled as soon as it is decoded.

    Frames are decoded lazily; nothing holds the whole clip. Raises UserError on bad input, on a
    decode error (saying how many frames were read), and if no frame is selected.
    """
    _check_read_options(size, fit, step, fps, start, end, max_frames)
    with _open_source(path, max_pixels=max_pixels, downscaling=size is not None) as source:
        start_time = None if start is None else _exact(start)
        end_time = None if end is None else _exact(end)
        frames = source.frames(start_time or Fraction(0))
        if fps is not None:
            selected = _resample(frames, _exact(fps), start_time, end_time, source.period)
        elif source.resample_rate is not None:  # uneven timestamps: resample to the rate probe reports
            timeline_end = source.timeline_end if end_time is None else min(end_time, source.timeline_end)
            selected = _resample(frames, source.resample_rate, start_time, timeline_end, source.period)
        else:
            selected = _within(frames, start_time, end_time)
        selected = islice(selected, 0, (max_frames - 1) * step + 1 if max_frames else None, step)
        count = 0
        last_frame, last_pixels = None, None
        for frame in selected:
            if frame is last_frame:  # resampling repeats frames: convert once, hand out copies
                yield last_pixels.copy()
            else:
                last_frame, last_pixels = frame, fit_frame(frame.pixels(alpha), size, fit)
                yield last_pixels
            count += 1
        if count == 0:
            raise UserError(f"{source.info.path}: no frames to read{_range_note(start, end)}")


def read_video(path: str | os.PathLike, **options) -> tuple[torch.Tensor, VideoInfo]:
    """Read a clip as one (T, C, H, W) float32 tensor in [0, 1], C = 3 (or 4 with alpha=True).

    Takes the same keyword options as `iter_frames`. The VideoInfo describes the clip as read by
    default (native size; fps the rate frames come out at, which for variable frame rate is the rate
    it is resampled to), not the returned tensor. When the number of frames is known beforehand the
    tensor is allocated once and filled frame by frame; otherwise the uint8 frames are gathered and
    converted once at the end.
    """
    frames = iter_frames(path, **options)
    first = next(frames)  # checks the options and the file before anything else
    info = probe(path)
    expected = _expected_count(info, **options)
    if expected is None:
        return _stack([first, *frames]), info
    video = torch.empty((expected, first.shape[2], first.shape[0], first.shape[1]), dtype=torch.float32)
    filled, overflow = 0, []
    for frame in _prepend(first, frames):
        if filled < expected:
            video[filled] = _to_float(frame)
            filled += 1
        else:  # the header undercounted; rare, so holding the overflow twice is acceptable
            overflow.append(frame)
    video = video[:filled]
    if overflow:
        video = torch.cat([video, _stack(overflow)])
    return video, info


def fit_frame(frame: np.ndarray, size: int | None, fit: str = "short") -> np.ndarray:
    """Resize one (H, W, C) uint8 frame per `fit` (see `iter_frames`); area averaging when shrinking."""
    if size is None:
        return frame
    height, width = frame.shape[:2]
    if fit == "stretch":
        return _resize(frame, size, size)
    scale = size / (min(height, width) if fit in ("short", "crop") else max(height, width))
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    if fit == "short":
        # the short side must be exactly `size` even where rounding of the scale says otherwise
        new_w, new_h = (size, new_h) if width <= height else (new_w, size)
        return _resize(frame, new_w, new_h)
    if fit == "crop":
        new_w, new_h = max(new_w, size), max(new_h, size)
        scaled = _resize(frame, new_w, new_h)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        return np.ascontiguousarray(scaled[top : top + size, left : left + size])
    new_w, new_h = min(new_w, size), min(new_h, size)
    scaled = _resize(frame, new_w, new_h)
    padded = np.zeros((size, size, frame.shape[2]), np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    padded[top : top + new_h, left : left + new_w] = scaled
    return padded


def _resize(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    if (width, height) == (frame.shape[1], frame.shape[0]):
        return frame
    shrinking = width * height < frame.shape[0] * frame.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    resized = cv2.resize(frame, (width, height), interpolation=interpolation)
    return resized.reshape(height, width, frame.shape[2])  # cv2 drops a trailing axis of size 1


def _check_read_options(size, fit, step, fps, start, end, max_frames) -> None:
    if size is not None and size < 1:
        raise UserError(f"size must be a positive number of pixels, got {size}")
    if fit not in FITS:
        raise UserError(f"fit must be one of {', '.join(FITS)}; got {fit!r}")
    if step < 1:
        raise UserError(f"step must be 1 or more, got {step}")
    if fps is not None and not fps > 0:
        raise UserError(f"fps must be positive, got {fps}")
    if start is not None and start < 0:
        raise UserError(f"start must be 0 or more seconds, got {start}")
    if end is not None and end <= (start or 0):
        raise UserError(f"end ({end} s) must come after start ({start or 0} s)")
    if max_frames is not None and max_frames < 1:
        raise UserError(f"max_frames must be 1 or more, got {max_frames}")


def _range_note(start, end) -> str:
    if start is None and end is None:
        return ""
    return f" between {start or 0} s and {'the end' if end is None else f'{end} s'}"


def _exact(value: float) -> Fraction:
    """A user's decimal number as the fraction it was meant to be (0.1 -> 1/10, 29.97 -> 2997/100)."""
    return Fraction(value).limit_denominator(100_000)


def _within(frames: Iterator[_SourceFrame], start: Fraction | None, end: Fraction | None):
    """The frames whose time lies in [start, end); stops decoding at `end`."""
    for frame in frames:
        if end is not None and frame.time >= end:
            return
        if start is None or frame.time >= start:
            yield frame


def _resample(
    frames: Iterator[_SourceFrame],
    fps: Fraction,
    start: Fraction | None,
    end: Fraction | None,
    source_period: Fraction,
):
    """The frame on screen at each tick start, start + 1/fps, ... before the clip's (or `end`'s) end.

    A frame is on screen from its timestamp until the next frame's; the last until its own duration
    runs out; ticks before the first frame show the first frame. Timestamps are taken as up to half a
    frame early, because containers round them (webm to milliseconds: a 30 fps frame at 0.067 s is
    meant for 2/30 s, and without the slack would be dropped and its predecessor shown twice).
    """
    period = 1 / fps
    slack = min(period, source_period) / 2
    tick = start
    showing = None
    for frame in frames:
        if tick is None:
            tick = frame.time
        while showing is not None and frame.time > tick + slack:
            if end is not None and tick >= end:
                return
            yield showing
            tick += period
        showing = frame
    if showing is None:
        return
    clip_end = showing.time + showing.duration
    while tick + slack < clip_end and (end is None or tick < end):
        yield showing
        tick += period


def _expected_count(info: VideoInfo, **options) -> int | None:
    """How many frames `iter_frames` will yield, when that follows from the header alone."""
    if not info.frame_count_exact or any(options.get(key) is not None for key in ("fps", "start", "end")):
        return None
    count = math.ceil(info.frame_count / options.get("step", 1))
    return min(count, options.get("max_frames") or count)


def _to_float(frame: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frame).permute(2, 0, 1).float().div_(255)


def _stack(frames: list[np.ndarray]) -> torch.Tensor:
    """(T, C, H, W) float32 from uint8 frames, each freed as soon as it is copied."""
    first = frames[0]
    video = torch.empty((len(frames), first.shape[2], first.shape[0], first.shape[1]), dtype=torch.float32)
    for index in range(len(frames)):
        video[index] = _to_float(frames[index])
        frames[index] = None
    return video


def _prepend(first, rest):
    yield first
    yield from rest


def _open_source(path, max_pixels: int = DEFAULT_MAX_PIXELS, downscaling: bool = False):
    """The right reader for `path`: a video file, an image folder, a pattern or a single image."""
    text = os.fspath(path)
    path = Path(text)
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise UserError(f"{path}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return _ImageSequence(path, files, max_pixels, downscaling)
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            animation = _animation_format(path)
            if animation == "PNG":  # FFmpeg's apng demuxer reads every frame, with its timing
                return _VideoFile(path, max_pixels, downscaling)
            if animation == "WEBP":
                return _AnimatedWebP(path, max_pixels, downscaling)
            return _ImageSequence(path, [path], max_pixels, downscaling)
        return _VideoFile(path, max_pixels, downscaling)
    if _PRINTF_FIELD.search(text) or glob.has_magic(text):
        files = _match_pattern(text)
        if not files:
            raise UserError(f"{text}: no files match this pattern")
        return _ImageSequence(path, files, max_pixels, downscaling)
    raise UserError(f"{path}: {file_problem(path, 'video or image file') or 'file not found'}")


def _match_pattern(pattern: str) -> list[Path]:
    """Files matching a printf pattern (frames/%05d.png, in numeric order) or a glob (natural order)."""
    if _PRINTF_FIELD.search(pattern):
        folder, name = os.path.split(pattern)
        parts = _PRINTF_FIELD.split(name)
        # split gives literal, zero-flag, width, literal, ...: rebuild as a regex with one group per field
        regex = ""
        for index in range(0, len(parts), 3):
            regex += re.escape(parts[index])
            if index + 2 < len(parts):
                zero, width = parts[index + 1], parts[index + 2]
                regex += rf"(\d{{{width}}})" if zero and width else r"(\d+)"
        matcher = re.compile(regex)
        folder_path = Path(folder or ".")
        if not folder_path.is_dir():
            return []
        matches = []
        for entry in folder_path.iterdir():
            found = matcher.fullmatch(entry.name)
            if found and entry.is_file():
                matches.append((tuple(int(group) for group in found.groups()), entry))
        return [entry for _, entry in sorted(matches)]
    files = [Path(match) for match in glob.glob(pattern) if Path(match).is_file()]
    return sorted(files, key=lambda entry: natural_key(str(entry)))


def _check_pixels(path: Path, width: int, height: int, max_pixels: int, downscaling: bool) -> None:
    """Refuse frames over `max_pixels` before any is converted (a read with a `size` shrinks them instead)."""
    if width * height > max_pixels and not downscaling:
        raise UserError(
            f"{path}: frames are {width}x{height} ({width * height / 1e6:.0f} Mpixel), over the limit of "
            f"{max_pixels / 1e6:.0f} Mpixel; downscale the video first (e.g. ffmpeg -i IN -vf scale=-2:2160 OUT.mp4)"
        )


class _ImageSequence:
    """Numbered stills played at IMAGE_SEQUENCE_FPS; every image must have the first one's size."""

    def __init__(self, path: Path, files: list[Path], max_pixels: int, downscaling: bool):
        self.files = files
        width, height, has_alpha = image_size(files[0])
        _check_pixels(files[0], width, height, max_pixels, downscaling)
        self.size = (width, height)
        self.period = 1 / Fraction(IMAGE_SEQUENCE_FPS)
        self.resample_rate = None  # stills are evenly timed by definition
        count = len(files)
        self.info = VideoInfo(
            path=path,
            fps=IMAGE_SEQUENCE_FPS,
            width=width,
            height=height,
            frame_count=count,
            duration=count / IMAGE_SEQUENCE_FPS,
            rotation=0,
            has_alpha=has_alpha,
            frame_count_exact=True,
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def frames(self, start: Fraction) -> Iterator[_SourceFrame]:
        first = min(len(self.files), int(start / self.period))  # stills before `start` need not be opened
        for index in range(first, len(self.files)):
            yield _SourceFrame(index * self.period, self.period, self._loader(self.files[index]))

    def _loader(self, file: Path) -> Callable[[bool], np.ndarray]:
        def pixels(alpha: bool) -> np.ndarray:
            image = read_image(file)
            if (image.shape[1], image.shape[0]) != self.size:
                raise UserError(
                    f"{file}: image is {image.shape[1]}x{image.shape[0]}, "
                    f"but the sequence's first image is {self.size[0]}x{self.size[1]}"
                )
            return _set_alpha(image, alpha)

        return pixels


def _animation_format(path: Path) -> str | None:
    """"PNG" or "WEBP" for an animated PNG or WebP (more than one frame, from the header), else None.

    A file Pillow cannot open is left to the still-image reader, which reports it.
    """
    try:
        with Image.open(path) as image:
            if image.format in ("PNG", "WEBP") and getattr(image, "n_frames", 1) > 1:
                return image.format
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        pass
    return None


def _webp_durations(data: bytes) -> list[int]:
    """Each frame's duration in milliseconds, from an animated WebP's ANMF chunks (RIFF layout: a chunk
    is a four-letter kind, a little-endian size and a payload padded to even length; an ANMF payload
    holds its duration as 24 bits at byte 12)."""
    durations, position = [], 12  # after "RIFF", the file size and "WEBP"
    while position + 8 <= len(data):
        kind, size = data[position : position + 4], int.from_bytes(data[position + 4 : position + 8], "little")
        if kind == b"ANMF" and size >= 16:
            durations.append(int.from_bytes(data[position + 20 : position + 23], "little"))
        position += 8 + size + (size & 1)
    return durations


class _AnimatedWebP:
    """An animated WebP, decoded with Pillow (FFmpeg's WebP decoder reads stills only).

    Each frame is shown for the duration the file gives it; uneven durations are resampled like a
    variable frame rate video, to the rate of the shortest frame, so that no frame is dropped.
    """

    def __init__(self, path: Path, max_pixels: int, downscaling: bool):
        self.path = path
        try:
            self.image = Image.open(path)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
            raise UserError(f"{path}: cannot read animated WebP ({err})") from err
        try:
            self._describe(max_pixels, downscaling)
        except BaseException:
            self.image.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.image.close()
        return False

    def _describe(self, max_pixels: int, downscaling: bool) -> None:
        width, height = self.image.size
        _check_pixels(self.path, width, height, max_pixels, downscaling)
        durations = _webp_durations(self.path.read_bytes())
        if len(durations) != self.image.n_frames:
            raise UserError(
                f"{self.path}: animated WebP lists {len(durations)} frame durations for "
                f"{self.image.n_frames} frames; the file is damaged"
            )
        self.times = [Fraction(total, 1000) for total in accumulate(durations, initial=0)]
        total = self.times[-1]
        shortest = min((duration for duration in durations if duration > 0), default=0)
        self.period = Fraction(shortest, 1000) if shortest else 1 / Fraction(IMAGE_SEQUENCE_FPS)
        starts = self.times[:-1]
        # judged by when frames start, as a video's timestamps are (the last frame's length is not timing)
        self.resample_rate = None if _evenly_spaced([int(time * 1000) for time in starts]) else 1 / self.period
        self.timeline_end = total
        count = len(durations)
        if self.resample_rate is not None:
            fps, count = self.resample_rate, max(1, round(total * self.resample_rate))
        elif count > 1 and starts[-1] > 0:
            fps = (count - 1) / starts[-1]  # the spacing of the frames
        else:
            fps = 1 / self.period
        self.info = VideoInfo(
            path=self.path,
            fps=float(fps),
            width=width,
            height=height,
            frame_count=count,
            duration=float(total),
            rotation=0,
            has_alpha=self.image.mode in ("RGBA", "LA", "PA"),
            frame_count_exact=self.resample_rate is None,
            variable_frame_rate=self.resample_rate is not None,
        )

    def frames(self, start: Fraction) -> Iterator[_SourceFrame]:
        """Frames from the one on screen at `start`, each decoded as it is reached (Pillow decodes in
        order, so a frame is converted now rather than when it is picked)."""
        for index in range(self.image.n_frames):
            time, duration = self.times[index], self.times[index + 1] - self.times[index]
            if time + duration <= start and index + 1 < self.image.n_frames:
                continue
            try:
                self.image.seek(index)
                pixels = np.asarray(self.image.convert("RGBA")).copy()
            except (OSError, EOFError, ValueError) as err:
                raise UserError(f"{self.path}: decode error at frame {index} ({err}); the file is damaged") from err
            yield _SourceFrame(time, duration or self.period, lambda alpha, pixels=pixels: _set_alpha(pixels, alpha))


class _VideoFile:
    """One video stream of a container file, decoded with PyAV (libvpx when VP8/VP9 carry alpha)."""

    def __init__(self, path: Path, max_pixels: int, downscaling: bool):
        self.path = path
        self.max_pixels, self.downscaling = max_pixels, downscaling
        self.frame_size: tuple[int, int] | None = None  # (width, height) of the first decoded frame
        self._open()
        try:
            self._describe(max_pixels, downscaling)
        except BaseException:
            self.container.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.container.close()
        return False

    def _open(self) -> None:
        try:
            self.container = av.open(str(self.path))
        except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
            raise UserError(f"{self.path}: not a video file FFmpeg can read ({err})") from err
        self.stream = self._video_stream()
        context = self.stream.codec_context
        if context is None:
            self.container.close()
            raise UserError(f"{self.path}: its video stream has a codec FFmpeg does not know; cannot decode it")
        self.vpx_alpha = self.stream.metadata.get("alpha_mode") == "1" and context.name in _ALPHA_DECODERS
        if self.vpx_alpha:
            self.decoder = av.codec.CodecContext.create(_ALPHA_DECODERS[context.name], "r")
        else:
            self.decoder = context

    def _video_stream(self) -> av.video.stream.VideoStream:
        """The first video stream that is not a cover picture (an attached picture is one still image,
        however early in the file it comes; FFmpeg ranks it last when it picks a video stream too)."""
        streams = self.container.streams.video
        videos = [stream for stream in streams if not stream.disposition & av.stream.Disposition.attached_pic]
        if videos:
            return videos[0]
        self.container.close()
        if streams:
            raise UserError(f"{self.path}: holds only a cover picture (attached picture), no video stream to read")
        raise UserError(f"{self.path}: has no video stream (audio-only or data file?)")

    def _describe(self, max_pixels: int, downscaling: bool) -> None:
        stream, context = self.stream, self.stream.codec_context
        _check_pixels(self.path, context.width, context.height, max_pixels, downscaling)
        self.time_base = stream.time_base or Fraction(1, 90_000)
        self.start_pts = stream.start_time or 0
        declared = self._declared_duration()
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate and declared and stream.frames:
            rate = Fraction(stream.frames) / declared
        self.period = 1 / Fraction(rate) if rate else 1 / Fraction(IMAGE_SEQUENCE_FPS)
        # the display matrix reaches us on decoded frames only, so decode the first one now and
        # hand it to frames() later instead of decoding it twice
        decoded = self._decoded()
        first = next(decoded, None)
        if first is None:
            raise UserError(f"{self.path}: holds no video frames")
        self._head = (first, decoded)
        turns, mirrored = _orientation(autorotate_filters(_display_matrix(first)))
        width, height = (context.height, context.width) if turns % 2 else (context.width, context.height)
        ticks = self._timestamps()
        duration, frame_count = self._length(declared, ticks)
        self.resample_rate = self._resample_rate(declared, ticks)
        if self.resample_rate is not None:  # read at the rate it is resampled to, for as long as it lasts
            duration = self.timeline_end
            frame_count = max(1, round(duration * self.resample_rate))
        self.info = VideoInfo(
            path=self.path,
            fps=float(self.resample_rate or 1 / self.period),
            width=width,
            height=height,
            frame_count=frame_count,
            duration=float(duration),
            rotation=(0, 90, 180, -90)[turns],
            has_alpha=self.vpx_alpha or _format_has_alpha(context.pix_fmt),
            frame_count_exact=stream.frames > 0 and self.resample_rate is None,
            mirrored=mirrored,
            variable_frame_rate=self.resample_rate is not None,
        )

    def _length(self, declared: Fraction | None, ticks: list[int]) -> tuple[Fraction, int]:
        """(duration, frame count) of the stream as stored: from the header, else from the timestamps
        (an animated PNG's header gives neither)."""
        frames = self.stream.frames
        duration = declared
        if duration is None and frames:
            duration = frames * self.period
        if duration is None and ticks:
            duration = (ticks[-1] - ticks[0]) * self.time_base + self.period
        duration = duration or Fraction(0)
        return duration, frames or round(duration / self.period)

    def _resample_rate(self, declared: Fraction | None, ticks: list[int]) -> Fraction | None:
        """The constant rate to resample to if the stored timestamps are uneven, else None.

        The rate is the stream's guessed rate (FFmpeg's `av_guess_frame_rate`, the rate `ffmpeg -fps_mode
        cfr` gives its output when no `-r` says otherwise), else its average. Also sets `timeline_end`,
        where resampling stops: the declared length or the last timestamp plus a frame, whichever is
        later. Timestamps spread so far that resampling would repeat each stored frame over
        MAX_AVERAGE_REPEAT times on average are damage, not timing: such a clip is read frame by frame.
        """
        if _evenly_spaced(ticks):
            return None
        rate = Fraction(self.stream.guessed_rate or 0) or 1 / self.period
        self.timeline_end = max(declared or 0, (ticks[-1] - ticks[0]) * self.time_base + 1 / rate)
        if self.timeline_end * rate > MAX_AVERAGE_REPEAT * len(ticks):
            return None
        return rate

    def _timestamps(self) -> list[int]:
        """The stream's presentation timestamps in time-base ticks, sorted, without decoding a frame.

        MP4 and MOV index every frame when the file is opened, as decode times: a muxer spaces those
        evenly when the frames are shown evenly, so an even index settles it without reading the file.
        Otherwise the packets are read once (not decoded), in a second handle so the decoding position
        is untouched. A damaged file gives the timestamps read before the damage; decoding reports it.
        """
        stream = self.stream
        entries = stream.index_entries
        if stream.frames > 0 and len(entries) >= stream.frames:
            decode_times = sorted(entry.timestamp for entry in entries if not entry.is_discard)
            if _evenly_spaced(decode_times):
                return decode_times
        ticks = []
        try:
            with av.open(str(self.path)) as scan:
                for packet in scan.demux(scan.streams[stream.index]):
                    if packet.pts is not None and packet.size:
                        ticks.append(packet.pts)
        except (av.FFmpegError, OSError, UnicodeDecodeError):
            pass  # keep what was read: judging the timing by it is as good as it gets
        return sorted(ticks)

    def _declared_duration(self) -> Fraction | None:
        """The video stream's length from the header: stream duration, a DURATION tag (Matroska),
        or the file's duration if the video is its only stream."""
        if self.stream.duration:
            return self.stream.duration * self.time_base
        tag = self.stream.metadata.get("DURATION")
        if tag:
            try:
                hours, minutes, seconds = tag.split(":")
                return Fraction(int(hours) * 3600 + int(minutes) * 60) + Fraction(seconds)
            except ValueError:
                pass  # a damaged tag says nothing about the length: fall back to the container's
        if len(self.container.streams) == 1 and self.container.duration:
            return Fraction(self.container.duration, av.time_base)
        return None

    def _decoded(self) -> Iterator[av.VideoFrame]:
        """Every decoded frame from the demuxer's position on; decode errors become UserError."""
        count = 0
        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets, None)
                if packet is None:
                    return
                frames = self.decoder.decode(packet)
            except av.FFmpegError as err:
                raise UserError(
                    f"{self.path}: decode error after {count} frames ({err}); the file is truncated or corrupt"
                ) from err
            for frame in frames:
                if frame.is_corrupt:
                    raise UserError(f"{self.path}: frame {count} is corrupt; the file is damaged")
                self._check_frame_size(frame, count)
                count += 1
                yield frame

    def _check_frame_size(self, frame: av.VideoFrame, index: int) -> None:
        """Every frame must have the first one's size, and that within the pixel limit (headers can lie).

        Damaged files decode to frames of random sizes; streams that legitimately change resolution are
        rare and refused too, since every consumer wants one frame size.
        """
        size = (frame.width, frame.height)
        if self.frame_size is None:
            _check_pixels(self.path, *size, self.max_pixels, self.downscaling)
            self.frame_size = size
        elif size != self.frame_size:
            raise UserError(
                f"{self.path}: frame {index} is {size[0]}x{size[1]} but the first is "
                f"{self.frame_size[0]}x{self.frame_size[1]}; the file is corrupt or changes size mid-stream"
            )

    def _time(self, decoded: av.VideoFrame) -> Fraction | None:
        return None if decoded.pts is None else (decoded.pts - self.start_pts) * self.time_base

    def _decoded_from(self, start: Fraction) -> Iterator[av.VideoFrame]:
        """Decoded frames from the last key frame at or before `start` (from the top if start is 0)."""
        if start <= 0:
            first, rest = self._head
            return _prepend(first, rest)
        try:
            target = self.start_pts + math.floor(start / self.time_base)
            self.container.seek(target, stream=self.stream, backward=True)
        except av.FFmpegError:
            pass  # not seekable: decode from the beginning below
        else:
            self.decoder.flush_buffers()
            decoded = self._decoded()
            first = next(decoded, None)
            if first is None:
                return iter(())
            first_time = self._time(first)
            if first_time is not None and first_time <= start:
                return _prepend(first, decoded)
        # the seek failed or landed past `start` (a sparse index): start over from the top
        self.container.close()
        self._open()
        return self._decoded()

    def frames(self, start: Fraction) -> Iterator[_SourceFrame]:
        """Source frames from the last key frame at or before `start` to the end of the stream."""
        previous = None
        for decoded in self._decoded_from(start):
            time = self._time(decoded)
            if time is None:  # no timestamp: assume the nominal rate
                time = Fraction(0) if previous is None else previous.time + previous.duration
            duration = decoded.duration * self.time_base if decoded.duration else self.period
            previous = _SourceFrame(time, duration, _frame_converter(decoded))
            yield previous
        self._check_complete(previous)

    def _check_complete(self, last: _SourceFrame | None) -> None:
        """Raise if the stream stopped well short of the length its header declares (a truncated file)."""
        declared = self._declared_duration()
        if last is None or declared is None:
            return
        covered = last.time + last.duration
        if covered < declared - max(3 * self.period, Fraction(1, 4)):
            raise UserError(
                f"{self.path}: video ends at {float(covered):.2f} s but its header says "
                f"{float(declared):.2f} s; the file is truncated or corrupt"
            )


def _frame_converter(decoded: av.VideoFrame) -> Callable[[bool], np.ndarray]:
    """Upright pixels of one decoded frame, converted through 16 bits when the format has more than 8."""
    turns, mirrored = _orientation(autorotate_filters(_display_matrix(decoded)))

    def pixels(alpha: bool) -> np.ndarray:
        deep = any(component.bits > 8 for component in decoded.format.components)
        if deep:
            wide = decoded.to_ndarray(format="rgba64le" if alpha else "rgb48le")
            array = ((wide.astype(np.uint32) + 128) // 257).astype(np.uint8)
        else:
            array = decoded.to_ndarray(format="rgba" if alpha else "rgb24")
        return _orient(array, turns, mirrored)

    return pixels


def _display_matrix(decoded: av.VideoFrame) -> tuple[int, ...] | None:
    """The frame's display matrix (nine int32, FFmpeg's layout), or None; decoders copy the stream's
    matrix onto every frame."""
    side_data = decoded.side_data.get("DISPLAYMATRIX")
    if side_data is None or side_data.buffer_size < 36:
        return None
    return struct.unpack("=9i", bytes(side_data)[:36])


def autorotate_filters(matrix: Sequence[int] | None) -> tuple[str, ...]:
    """The filters the ffmpeg command line inserts to show a frame with this display matrix upright.

    A transcription of FFmpeg's autorotate (fftools: `get_rotation` in cmdutils.c, the branch on it in
    ffmpeg_filter.c): the angle is `av_display_rotation_get`'s, rounded, turned clockwise and taken
    modulo 360; a quarter turn is one `transpose` whose mode (a plain turn, or a turn and a flip) follows
    the sign of the matrix's third entry; a half turn is `hflip` and/or `vflip` by the signs of the
    diagonal (a mirror comes out as a half turn and one flip); no turn is `vflip` if the matrix flips
    vertically, else nothing. Other angles give `rotate=<degrees>*PI/180`; a degenerate matrix, nothing.
    matrix: nine int32 in FFmpeg's layout (16.16 fixed point), or None for none.
    """
    if matrix is None:
        return ()
    a, b, c, d = (value / 65536 for value in (matrix[0], matrix[1], matrix[3], matrix[4]))
    scale_x, scale_y = math.hypot(a, c), math.hypot(b, d)
    if scale_x == 0 or scale_y == 0:  # av_display_rotation_get gives NaN, which matches no branch
        return ()
    counter_clockwise = -math.degrees(math.atan2(b / scale_y, a / scale_x))
    theta = -_c_round(counter_clockwise)
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return ("transpose=cclock_flip" if matrix[3] > 0 else "transpose=clock",)
    if abs(theta - 180) < 1:
        return ("hflip",) * (matrix[0] < 0) + ("vflip",) * (matrix[4] < 0)
    if abs(theta - 270) < 1:
        return ("transpose=clock_flip" if matrix[3] < 0 else "transpose=cclock",)
    if abs(theta) > 1:
        return (f"rotate={theta:f}*PI/180",)
    return ("vflip",) if abs(theta) < 1 and matrix[4] < 0 else ()


def _c_round(value: float) -> float:
    """C's round(): halves away from zero (Python's round() takes them to even)."""
    return math.copysign(math.floor(abs(value) + 0.5), value)


def _orientation(filters: Sequence[str]) -> tuple[int, bool]:
    """What a chain of autorotate filters does, as (counter-clockwise quarter turns 0-3, then mirror).

    A `rotate` by an angle that is not a right angle (FFmpeg turns the picture inside the same frame
    size) is rounded to the nearest quarter turn, so every frame keeps its full picture.
    """
    turns, mirrored = 0, False
    for name in filters:
        if name.startswith("rotate="):
            clockwise = float(name.removeprefix("rotate=").removesuffix("*PI/180"))
            return round(-clockwise / 90) % 4, False
        step, mirror = _FILTER_ORIENTATION[name]
        # a mirror reverses the sense of any turn that comes after it
        turns = (turns - step if mirrored else turns + step) % 4
        mirrored ^= mirror
    return turns, mirrored


def _orient(array: np.ndarray, turns: int, mirrored: bool) -> np.ndarray:
    """Turn (H, W, C) pixels counter-clockwise by quarter turns, then mirror them left-right."""
    if turns:
        array = np.rot90(array, turns)
    if mirrored:
        array = array[:, ::-1]
    return np.ascontiguousarray(array) if turns or mirrored else array


def _evenly_spaced(ticks: list[int]) -> bool:
    """Whether sorted integer timestamps lie on one evenly spaced grid, each within a quarter step.

    The grid runs from the first timestamp to the last in equal steps. Containers round timestamps
    (webm to whole milliseconds: 30 fps is 33, 67, 100 ms, ...), which moves them by under a tick,
    far less than a quarter step; a frame held one step too long moves its neighbours by a third of a
    step or more. Fewer than three timestamps are even; a repeated timestamp is not.
    """
    if len(set(ticks)) < len(ticks):  # two frames for one instant: one of them is never shown
        return False
    ticks = sorted(ticks)
    steps = len(ticks) - 1
    if steps < 2:
        return True
    first, span = ticks[0], ticks[-1] - ticks[0]
    # |(t - first) - i * span / steps| <= span / steps / 4, multiplied through by 4 * steps
    return all(4 * abs((tick - first) * steps - index * span) <= span for index, tick in enumerate(ticks))


def _format_has_alpha(pix_fmt: str | None) -> bool:
    if not pix_fmt:
        return False
    return any(component.is_alpha for component in av.VideoFormat(pix_fmt).components)


def _set_alpha(image: np.ndarray, alpha: bool) -> np.ndarray:
    """Add an opaque alpha channel or drop the alpha channel so the image has 4 or 3 channels."""
    if alpha and image.shape[2] == 3:
        return np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=2)
    if not alpha and image.shape[2] == 4:
        return np.ascontiguousarray(image[..., :3])
    return image
