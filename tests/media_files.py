"""Small media files that tests write on the fly (no binary fixtures in the repository)."""

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


def write_audio_only(path: Path) -> Path:
    """A container holding a short silent AAC stream and no video stream."""
    container = av.open(str(path), "w")
    stream = container.add_stream("aac", rate=44100)
    for index in range(5):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 44100, index * 1024
        container.mux(stream.encode(frame))
    container.mux(stream.encode())
    container.close()
    return path
