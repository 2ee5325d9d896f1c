"""Bench section `video`: decode and encode frames/s of the framework's video I/O on a generated clip.

The clip is a camera pan over a procedural plate (`vidrender.synth` textures) with sensor-like noise,
RGB, 24 fps, at 128 and 256 px square: motion and noise give the codecs real work, unlike a still or
a flat clip. Decode reads its H.264 file (CRF 18, yuv420p, as `.mp4` output is written) through
`vidrender.io.video.iter_frames`, next to PyAV's own loop (FFmpeg's default slice threading, and frame
threading) and the `ffmpeg` command line decoding to RGB and discarding it (when installed), all to
(H, W, 3) RGB. The `ffmpeg` figure includes starting the process (several milliseconds, a large share of
a short clip's decode), so it also comes without: the time of the same command stopped after the first
frame is taken off. Encode writes the same frames with `vidrender.io.video_write.write_video` in every
output format. Rates are frames per wall-clock second of the fastest run, file opening included.
"""

from __future__ import annotations

import functools
import math
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from vidrender.bench.measure import peak_memory, time_interleaved, time_it
from vidrender.bench.registry import bench_section
from vidrender.io.video import iter_frames
from vidrender.io.video_write import write_video
from vidrender.synth.textures import background_plate

SIZES = (128, 256)
FPS = 24
NOISE_STD = 2.0  # grey levels of per-pixel noise, like a clean camera
# Pillow's per-frame palette search makes GIF the slowest format by far; GIFs are short previews, so it
# is timed on at most this many frames (frames/s do not depend on the count)
GIF_FRAMES = 32
ENCODE_FORMATS = {"mp4": ".mp4", "webm": ".webm", "mov": ".mov", "gif": ".gif", "png_folder": ""}
FFMPEG_MISSING = "ffmpeg not installed"


@dataclass(frozen=True)
class Plan:
    """How long to measure: clip length, timed runs, untimed warm-up runs, time cap per measurement."""

    frames: int
    repeats: int
    warmup: int
    max_seconds: float


# Short runs are easily disturbed (a time slice lost to another process costs tens of milliseconds, and
# a 96-frame decode takes 20-100), so every measurement repeats until the time cap and keeps the fastest
FULL = Plan(frames=96, repeats=30, warmup=1, max_seconds=4.0)
QUICK = Plan(frames=12, repeats=10, warmup=0, max_seconds=0.4)


@bench_section("video")
def video_section(quick: bool) -> dict:
    """Decode frames/s (ours, PyAV, ffmpeg), decode peak memory, and encode frames/s per format, per size."""
    plan = QUICK if quick else FULL
    decode, decode_memory, encode = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="vidrender-bench-") as scratch:
        for size in SIZES:
            frames = panning_clip(size, plan.frames)
            source = Path(scratch) / f"source-{size}.mp4"
            write_video(source, frames, FPS)
            key = f"{size}px"
            decode[key], decode_memory[key] = decode_rates(source, len(frames), plan)
            encode[key] = {
                name: encode_rate(
                    frames[:GIF_FRAMES] if name == "gif" else frames, Path(scratch) / f"out{suffix}", plan
                )
                for name, suffix in ENCODE_FORMATS.items()
            }
    return {
        "clip": "camera pan + noise, RGB; decode: H.264 CRF 18",
        "frames": plan.frames,
        "gif_frames": min(plan.frames, GIF_FRAMES),
        "decode_fps": decode,
        "decode_peak_rss_increase_mib": decode_memory,
        "encode_fps": encode,
    }


def panning_clip(size: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` (size, size, 3) uint8 RGB frames: a window panning diagonally across a 2x larger plate.

    The window travels `size` pixels right and down over the clip, easing in and out, with Gaussian
    noise of NOISE_STD grey levels on every frame. Deterministic for a given seed.
    """
    rng = np.random.default_rng(seed)
    plate = background_plate(rng, 2 * size, 2 * size, "shapes") * 255
    frames = []
    for index in range(count):
        progress = 0.5 - 0.5 * math.cos(math.pi * index / max(count - 1, 1))
        offset = round(progress * size)
        window = plate[offset : offset + size, offset : offset + size]
        noisy = window + rng.standard_normal(window.shape, dtype=np.float32) * NOISE_STD
        frames.append(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))
    return frames


def decode_rates(path: Path, count: int, plan: Plan) -> tuple[dict, float]:
    """Frames/s decoding `path` (holding `count` frames) to RGB in the ways the module docstring lists,
    timed in turn so they share the machine's load alike; and the peak RSS increase (MiB) of the first
    `iter_frames` pass over the file.
    """
    decoders = {
        "iter_frames": functools.partial(_decode_with_iter_frames, path),
        "pyav": functools.partial(_decode_with_pyav, path, threading="SLICE"),
        "pyav_frame_threads": functools.partial(_decode_with_pyav, path, threading="AUTO"),
    }
    first_pass_mib = 0.0
    for name, decode in decoders.items():
        first_pass = peak_memory(decode)
        if first_pass.result != count:  # a rate over the wrong number of frames would be meaningless
            raise RuntimeError(f"{name} decoded {first_pass.result} frames of {path}, expected {count}")
        if name == "iter_frames":
            first_pass_mib = first_pass.increase_mib
    ffmpeg = ffmpeg_decoder(path)
    first_frame = ffmpeg_decoder(path, frames=1) if callable(ffmpeg) else ffmpeg
    if callable(ffmpeg):
        decoders["ffmpeg_cli"] = ffmpeg
    if callable(first_frame):
        decoders["ffmpeg_cli_first_frame"] = first_frame
    timings = time_interleaved(decoders, plan.repeats, plan.warmup, plan.max_seconds)
    rates = {name: timing.rate(count) for name, timing in timings.items() if name != "ffmpeg_cli_first_frame"}
    if not callable(ffmpeg):
        rates["ffmpeg_cli"] = ffmpeg
    if callable(first_frame):
        # the frames after the first, without process start, probing and the first frame's decode
        rest = timings["ffmpeg_cli"].min - timings["ffmpeg_cli_first_frame"].min
        rates["ffmpeg_cli_after_startup"] = (count - 1) / rest if count > 1 and rest > 0 else None
    else:
        rates["ffmpeg_cli_after_startup"] = first_frame
    return rates, first_pass_mib


def ffmpeg_decoder(path: Path, frames: int | None = None) -> Callable[[], object] | str:
    """A function running the `ffmpeg` binary to decode `path` (its first `frames` frames; all if None) to
    RGB and discard it (process start included in its time), checked by one run; or a note:
    FFMPEG_MISSING without `ffmpeg` on PATH, or why it failed.
    """
    binary = shutil.which("ffmpeg")
    if binary is None:
        return FFMPEG_MISSING
    limit = [] if frames is None else ["-frames:v", str(frames)]
    command = [binary, "-nostdin", "-v", "error", "-i", str(path), *limit, "-pix_fmt", "rgb24", "-f", "null", "-"]
    decode = functools.partial(subprocess.run, command, check=True, capture_output=True)
    try:
        decode()
    except (OSError, subprocess.CalledProcessError) as err:
        return f"ffmpeg failed: {err}"
    return decode


def encode_rate(frames: list[np.ndarray], destination: Path, plan: Plan) -> float:
    """Frames/s of `write_video` writing `frames` to `destination` (format by suffix; none = PNG folder).

    The previous run's output is deleted before each run, untimed, so no run times replacing a file.
    """

    def remove_output() -> None:
        if destination.is_dir():
            shutil.rmtree(destination)
        destination.unlink(missing_ok=True)

    timing = time_it(
        functools.partial(write_video, destination, frames, FPS),
        repeats=plan.repeats,
        warmup=plan.warmup,
        max_seconds=plan.max_seconds,
        setup=remove_output,
    )
    remove_output()
    return timing.rate(len(frames))


def _decode_with_iter_frames(path: Path) -> int:
    count = 0
    for _ in iter_frames(path):
        count += 1
    return count


def _decode_with_pyav(path: Path, threading: str) -> int:
    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = threading
        for frame in container.decode(stream):
            frame.to_ndarray(format="rgb24")
            count += 1
    return count
