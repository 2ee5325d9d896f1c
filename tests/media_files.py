"""Small media files that tests write on the fly (no binary fixtures in the repository)."""

from pathlib import Path

import av
import numpy as np


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
