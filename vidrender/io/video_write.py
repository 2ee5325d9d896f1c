"""Write frames as a video file or a PNG sequence, frame by frame and atomically.

The output format follows the destination path:
- `.mp4`  H.264 (libx264, yuv420p, CRF `quality`, default 18). H.264 4:2:0 needs even sizes, so an
          odd width or height gets one extra column/row copied from the edge (the file is up to 1 px
          larger than the frames). No alpha: a 4th channel is dropped. `quality=0` writes lossless
          H.264 in RGB (libx264rgb), bit-exact, for data sets and ground truth (fewer players show it).
- `.webm` VP9 (libvpx-vp9). With 4-channel frames: yuva420p, alpha kept. Lossless by default, so a
          matte read back is exactly the one written; `quality` (CRF 0-63) makes it lossy and small.
- `.mov`  ProRes 4444 (prores_ks, yuva444p10le with alpha, yuv444p10le without): near-lossless
          (colour within 1/255 in our tests), alpha exact.
- `.gif`  animated GIF via Pillow (adaptive 256-colour palette per frame, 1-bit transparency).
          GIF delays are whole hundredths of a second (at least 2), so the delays alternate to keep
          the average rate (30 fps: 3, 3, 4 cs...). Identical consecutive frames are merged.
- no suffix, or a path ending in `/`: a folder of PNGs `00000.png, 00001.png, ...` (RGBA when the
  frames have 4 channels), numbered from 0 like frame indices.

Frames are numpy (H, W, 3|4) uint8 arrays or torch (C, H, W) tensors, float in [0, 1] or uint8
(see `images.to_uint8_image`). The first frame fixes size and channel count. Everything is built under
a temporary name and renamed into place at the end (`atomic_path`), so a failed or interrupted write
leaves no file behind. Colour: RGB -> YUV uses FFmpeg's default BT.601 matrix, limited range.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from vidrender.errors import UserError
from vidrender.io.atomic import atomic_path
from vidrender.io.images import to_uint8_image

ACCEPTED_OUTPUTS = ".mp4, .webm, .mov, .gif, or a folder for PNGs (no suffix, or a trailing /)"
PNG_FOLDER = "png-folder"
_FILE_FORMATS = (".mp4", ".webm", ".mov", ".gif")
_CRF_RANGES = {".mp4": (0, 51), ".webm": (0, 63)}
# the frames of a PNG-folder output; a folder holding anything else is never replaced
SEQUENCE_NAME = re.compile(r"\d{5}\.png")


def output_format(path: str | os.PathLike) -> str:
    """The format a destination path asks for: '.mp4', '.webm', '.mov', '.gif' or PNG_FOLDER.

    Raises UserError listing the accepted ones for any other suffix.
    """
    text = os.fspath(path)
    if text.endswith(("/", os.sep)) or not Path(text).suffix:
        return PNG_FOLDER
    suffix = Path(text).suffix.lower()
    if suffix not in _FILE_FORMATS:
        raise UserError(f"{text}: cannot write '{suffix}' files; use {ACCEPTED_OUTPUTS}")
    return suffix


class VideoWriter:
    """Context manager that encodes frames one at a time into `path`; see the module docstring.

    with VideoWriter("out.webm", fps=29.97) as writer:
        for frame in frames:
            writer.write(frame)

    fps: frames per second, may be fractional (29.97 is stored as 2997/100). quality: CRF for .mp4
    (0-51, lower is better, default 18) and .webm (0-63; default lossless); ignored by .mov, .gif and
    PNG folders, whose quality is fixed. The file appears at `path` only when the block ends without
    error and at least one frame was written; otherwise nothing is left behind.
    """

    def __init__(self, path: str | os.PathLike, fps: float, *, quality: int | None = None):
        self.path = Path(path)
        self.format = output_format(path)
        if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)) or not 0 < fps < math.inf:
            raise UserError(f"{self.path}: fps must be a positive number, got {fps!r}")
        self.fps = Fraction(fps).limit_denominator(100_000)
        self.quality = _check_quality(self.path, self.format, quality)
        _check_destination(self.path, self.format)
        self.frames_written = 0
        self._atomic = None
        self._encoder = None

    def __enter__(self) -> VideoWriter:
        self._atomic = atomic_path(self.path, is_dir=self.format == PNG_FOLDER)
        self._tmp = self._atomic.__enter__()
        return self

    def write(self, frame: np.ndarray | torch.Tensor) -> None:
        """Encode one frame: (H, W, 3|4) uint8 numpy array or (C, H, W) float [0, 1] / uint8 tensor."""
        if self._atomic is None:
            raise RuntimeError("VideoWriter.write must be called inside its `with` block")
        pixels = to_uint8_image(frame)
        if self._encoder is None:
            self._encoder = _ENCODERS[self.format](self._tmp, self.fps, self.quality, pixels.shape)
        elif pixels.shape != self._encoder.shape:
            raise ValueError(
                f"{self.path}: frame {self.frames_written} is {pixels.shape}, the first frame was "
                f"{self._encoder.shape}; every frame of a video must have the same size and channels"
            )
        self._encoder.write(pixels)
        self.frames_written += 1

    def __exit__(self, exc_type, exc, traceback) -> bool:
        if exc_type is None:
            try:
                if self._encoder is None:
                    raise UserError(f"{self.path}: no frames to write")
                self._encoder.close()
            except BaseException as err:
                self._abandon(type(err), err, err.__traceback__)
                raise
            self._atomic.__exit__(None, None, None)
        else:
            self._abandon(exc_type, exc, traceback)
        return False

    def _abandon(self, exc_type, exc, traceback) -> None:
        """Stop the encoder and let atomic_path delete the temporary output."""
        if self._encoder is not None:
            self._encoder.abort()
        self._atomic.__exit__(exc_type, exc, traceback)


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray | torch.Tensor],
    fps: float,
    *,
    quality: int | None = None,
) -> int:
    """Write all `frames` to `path` (format by suffix, see the module docstring); returns the frame count."""
    with VideoWriter(path, fps, quality=quality) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.frames_written


def _check_quality(path: Path, kind: str, quality: int | None) -> int | None:
    if quality is None or kind not in _CRF_RANGES:
        return None
    low, high = _CRF_RANGES[kind]
    if isinstance(quality, bool) or not isinstance(quality, int) or not low <= quality <= high:
        raise UserError(f"{path}: quality for {kind} is a CRF from {low} to {high} (lower is better), got {quality!r}")
    return quality


def _check_destination(path: Path, kind: str) -> None:
    """Refuse to replace something that is not an earlier output of the same kind."""
    if not path.exists():
        return
    if kind != PNG_FOLDER:
        if path.is_dir():
            raise UserError(f"{path}: is a folder; choose a file name for the video")
        return
    if not path.is_dir():
        raise UserError(f"{path}: exists and is not a folder; choose another name for the PNG sequence")
    strangers = [entry.name for entry in path.iterdir() if not SEQUENCE_NAME.fullmatch(entry.name)]
    if strangers:
        raise UserError(
            f"{path}: folder holds other files ({', '.join(sorted(strangers)[:3])}...); "
            "writing a PNG sequence would replace them, so choose a new or empty folder"
        )


class _PyAVEncoder:
    """H.264 / VP9 / ProRes through PyAV; the stream is set up from the first frame's shape."""

    def __init__(self, tmp: Path, fps: Fraction, quality: int | None, shape: tuple[int, int, int]):
        self.shape = shape
        height, width, channels = shape
        suffix = tmp.suffix.lower()
        self.alpha = channels == 4 and suffix != ".mp4"
        codec, pix_fmt, options, container_options = _codec_settings(suffix, self.alpha, quality)
        self.pad = (height % 2, width % 2) if suffix == ".mp4" and pix_fmt == "yuv420p" else (0, 0)
        self.container = av.open(str(tmp), mode="w", format=suffix[1:], container_options=container_options)
        try:
            self.stream = self.container.add_stream(codec, rate=fps, options=options)
            self.stream.width, self.stream.height = width + self.pad[1], height + self.pad[0]
            self.stream.pix_fmt = pix_fmt
        except BaseException:
            self.container.close()
            raise
        self.time_base = 1 / fps
        self.index = 0

    def write(self, pixels: np.ndarray) -> None:
        frame = self._to_frame(pixels)
        frame.pts = self.index
        frame.time_base = self.time_base
        self.index += 1
        self.container.mux(self.stream.encode(frame))

    def _to_frame(self, pixels: np.ndarray) -> av.VideoFrame:
        pix_fmt = self.stream.pix_fmt
        if pix_fmt == "yuv420p" and self.pad != (0, 0):
            pixels = np.pad(pixels[..., :3], ((0, self.pad[0]), (0, self.pad[1]), (0, 0)), mode="edge")
        if pix_fmt.endswith("10le"):
            # feed ProRes 16-bit RGB: an 8-bit input path rounds alpha off by one on the way to 10 bits
            wide = pixels.astype(np.uint16) * 257
            return av.VideoFrame.from_ndarray(wide, format="rgba64le" if self.alpha else "rgb48le")
        if self.alpha:
            frame = av.VideoFrame.from_ndarray(pixels, format="rgba").reformat(format=pix_fmt)
            # swscale can move alpha by 1/255 on the way to yuva420p; the plane is the matte, so copy it
            _fill_plane(frame.planes[3], pixels[..., 3])
            return frame
        rgb = np.ascontiguousarray(pixels[..., :3])
        return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()

    def abort(self) -> None:
        self.container.close()


def _codec_settings(suffix: str, alpha: bool, quality: int | None):
    """(codec, pix_fmt, codec options, container options) for one output suffix."""
    if suffix == ".mp4":
        if quality == 0:
            # CRF 0 asks for lossless: H.264 in RGB, bit-exact (4:2:0 YUV alone costs ~30 dB on fine colour)
            return "libx264rgb", "rgb24", {"crf": "0", "preset": "fast"}, {"movflags": "+faststart"}
        crf = 18 if quality is None else quality
        return "libx264", "yuv420p", {"crf": str(crf)}, {"movflags": "+faststart"}
    if suffix == ".webm":
        if quality is None:
            # lossless VP9 at its realtime speed: same size as the slow presets here, ~10x faster
            options = {"lossless": "1", "deadline": "realtime", "cpu-used": "8"}
        else:
            options = {"crf": str(quality), "b:v": "0", "cpu-used": "4", "row-mt": "1"}
        return "libvpx-vp9", "yuva420p" if alpha else "yuv420p", options, {}
    pix_fmt = "yuva444p10le" if alpha else "yuv444p10le"
    return "prores_ks", pix_fmt, {"profile": "4444"}, {"movflags": "+faststart"}


def _fill_plane(plane, values: np.ndarray) -> None:
    """Overwrite an 8-bit image plane (rows padded to plane.line_size) with an (H, W) uint8 array."""
    rows = np.zeros((plane.height, plane.line_size), np.uint8)
    rows[:, : plane.width] = values
    plane.update(rows)


class _GifEncoder:
    """Gathers frames (GIFs are short) and hands them to Pillow at the end."""

    def __init__(self, tmp: Path, fps: Fraction, quality: int | None, shape: tuple[int, int, int]):
        self.tmp, self.fps, self.shape = tmp, fps, shape
        self.images: list[Image.Image] = []

    def write(self, pixels: np.ndarray) -> None:
        self.images.append(Image.fromarray(pixels))

    def close(self) -> None:
        # delays in whole centiseconds that add up to the true timeline, never below 2 cs
        # (browsers slow down shorter delays to 10 cs)
        ends = [round(100 * (index + 1) / self.fps) for index in range(len(self.images))]
        delays = [max(2, end - begin) * 10 for begin, end in zip([0, *ends[:-1]], ends, strict=True)]
        first, *rest = self.images
        first.save(
            self.tmp,
            format="GIF",
            save_all=True,
            append_images=rest,
            duration=delays,
            loop=0,
            # with alpha, clear each frame before drawing the next so transparent parts stay transparent
            disposal=2 if self.shape[2] == 4 else 0,
        )

    def abort(self) -> None:
        self.images.clear()


class _PngFolderEncoder:
    """One PNG per frame, 00000.png upwards, inside the temporary folder."""

    def __init__(self, tmp: Path, fps: Fraction, quality: int | None, shape: tuple[int, int, int]):
        self.folder, self.shape = tmp, shape
        self.index = 0

    def write(self, pixels: np.ndarray) -> None:
        # fast compression: sequences are working files, and level 1 is several times quicker than 6
        Image.fromarray(pixels).save(self.folder / f"{self.index:05d}.png", compress_level=1)
        self.index += 1

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


_ENCODERS = {".mp4": _PyAVEncoder, ".webm": _PyAVEncoder, ".mov": _PyAVEncoder, ".gif": _GifEncoder}
_ENCODERS[PNG_FOLDER] = _PngFolderEncoder
