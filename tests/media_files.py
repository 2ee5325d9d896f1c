"""Small media files that tests write on the fly (no binary fixtures in the repository)."""

import struct
from pathlib import Path

import av
import numpy as np


def write_h264(path: Path, frames, container_options: dict | None = None) -> Path:
    """An H.264 video at 10 fps of frames, a sequence of (H, W, 3) uint8 arrays."""
    container = av.open(str(path), "w", container_options=container_options or {})
    stream = container.add_stream("libx264", rate=10)
    stream.height, stream.width = frames[0].shape[:2]
    stream.pix_fmt = "yuv420p"
    for pixels in frames:
        container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
    container.mux(stream.encode())
    container.close()
    return path


def mux_silence(container, stream) -> None:
    """Encode and mux five frames of silence (about 0.1 s) into the AAC `stream` of `container`, and flush it."""
    for index in range(5):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 44100, index * 1024
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


def write_audio_only(path: Path) -> Path:
    """A container holding a short silent AAC stream and no video stream."""
    container = av.open(str(path), "w")
    stream = container.add_stream("aac", rate=44100)
    mux_silence(container, stream)
    container.close()
    return path


def write_cover_first_mp4(path: Path, frames, cover) -> Path:
    """An MP4 whose first video stream is a PNG cover picture (attached picture), then H.264 `frames` at 10 fps.

    FFmpeg's MP4 muxer stores a cover in moov/udta after the tracks, and its demuxer makes streams in
    the order it meets them; moving udta before the first trak puts the cover first. The atoms only
    change order inside moov, so every byte offset into mdat stays valid.
    """
    container = av.open(str(path), "w")
    video = container.add_stream("libx264", rate=10)
    video.height, video.width = frames[0].shape[:2]
    video.pix_fmt = "yuv420p"
    _add_cover(container, cover)
    for pixels in frames:
        container.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
    container.mux(video.encode())
    container.close()
    _move_mp4_atom_before(path, b"udta", b"trak")
    return path


def write_audio_with_cover(path: Path, cover) -> Path:
    """An MP4 holding a short silent AAC stream and a PNG cover picture, like a music file with cover art."""
    container = av.open(str(path), "w")
    audio = container.add_stream("aac", rate=44100)
    _add_cover(container, cover)
    mux_silence(container, audio)
    container.close()
    return path


def _add_cover(container, cover) -> None:
    """Mux one PNG picture of `cover` ((H, W, 3) uint8) as an attached-picture stream."""
    stream = container.add_stream("png")
    stream.height, stream.width = cover.shape[:2]
    stream.pix_fmt = "rgb24"
    stream.disposition = av.stream.Disposition.attached_pic
    for packet in stream.encode(av.VideoFrame.from_ndarray(cover, format="rgb24")) + stream.encode():
        container.mux(packet)


def _move_mp4_atom_before(path: Path, kind: bytes, before: bytes) -> None:
    """Move moov's child atom `kind` in front of its first `before` atom, in place."""
    data = path.read_bytes()
    moov_start, moov_size = next((start, size) for name, start, size in _atoms(data, 0, len(data)) if name == b"moov")
    children = [(name, data[start : start + size]) for name, start, size in _atoms(data, moov_start + 8,
                                                                                  moov_start + moov_size)]
    moved = [atom for name, atom in children if name == kind]
    rest = [(name, atom) for name, atom in children if name != kind]
    at = next(index for index, (name, _) in enumerate(rest) if name == before)
    body = b"".join(atom for _, atom in rest[:at]) + b"".join(moved) + b"".join(atom for _, atom in rest[at:])
    path.write_bytes(data[: moov_start + 8] + body + data[moov_start + moov_size :])


def _atoms(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(kind, offset, size) of the MP4 atoms laid end to end in data[start:end] (32-bit sizes only)."""
    atoms = []
    while start < end:
        size, kind = struct.unpack(">I4s", data[start : start + 8])
        atoms.append((kind, start, size))
        start += size
    return atoms
