"""Property tests: the video reader and the trajectory parser give a result or a UserError, never another exception.

Inputs are random bytes, and real small files of several formats cut short or with bytes overwritten;
for trajectories, arbitrary JSON values, plausible files with hostile field values, and raw text.
Examples are few and tiny so that the file runs in seconds.
"""

import json

import av
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vidrender.errors import UserError
from vidrender.io.trajectory import read_trajectory
from vidrender.io.video import probe, read_video

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FORMATS = {  # suffix: (codec, pixel format, frames)
    ".mp4": ("libx264", "yuv420p", 8),
    ".webm": ("libvpx-vp9", "yuv420p", 8),
    ".avi": ("mjpeg", "yuvj420p", 8),
    ".mov": ("prores_ks", "yuv444p10le", 4),
    ".mkv": ("ffv1", "yuv420p", 8),
    ".gif": ("gif", "rgb8", 8),
}
READ_OPTIONS = [{}, {"alpha": True}, {"size": 12, "fit": "pad"}, {"fps": 7.0}, {"start": 0.3, "step": 2}]


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """The bytes of one small valid file per format (24 x 32 noise, so every codec has work to do)."""
    root = tmp_path_factory.mktemp("samples")
    noise = np.random.default_rng(0).integers(0, 256, (8, 24, 32, 3), dtype=np.uint8)
    encoded = {}
    for suffix, (codec, pix_fmt, frames) in FORMATS.items():
        path = root / f"clip{suffix}"
        container = av.open(str(path), "w")
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, pix_fmt
        for pixels in noise[:frames]:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
        container.close()
        encoded[suffix] = path.read_bytes()
    return encoded


def _read_or_refuse(path, options) -> None:
    """The property: frames of the promised layout, or UserError naming the file."""
    try:
        probe(path)
        video, _ = read_video(path, **options)
    except UserError as err:
        assert path.name in str(err) and "\n" not in str(err)
        return
    assert video.dim() == 4 and video.shape[0] >= 1 and video.shape[1] == (4 if options.get("alpha") else 3)
    assert video.dtype == torch.float32 and 0 <= video.min() and video.max() <= 1


@FUZZ
@given(data=st.binary(max_size=3000), suffix=st.sampled_from([*FORMATS, ".png", ".jpg"]))
def test_random_bytes_never_crash_the_reader(tmp_path, data, suffix):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(data)
    _read_or_refuse(path, {})


@FUZZ
@given(
    suffix=st.sampled_from(list(FORMATS)),
    cut=st.floats(0, 1),
    damage=st.lists(st.tuples(st.floats(0, 1), st.binary(min_size=1, max_size=64)), max_size=4),
    options=st.sampled_from(READ_OPTIONS),
)
def test_cut_or_damaged_videos_never_crash_the_reader(tmp_path, samples, suffix, cut, damage, options):
    data = bytearray(samples[suffix])
    for where, junk in damage:
        start = int(where * (len(data) - 1))
        data[start : start + len(junk)] = junk
    path = tmp_path / f"damaged{suffix}"
    path.write_bytes(bytes(data[: max(1, int(cut * len(data)))] if cut < 1 else data))
    _read_or_refuse(path, options)


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.floats(), st.integers(-(10**30), 10**30), st.text(max_size=5))
ANY_JSON = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=20)
NUMBER_ISH = st.one_of(st.floats(), st.integers(-(10**400), 10**400), st.booleans(), st.none(), st.text(max_size=3))
MATRIX_ISH = st.lists(st.lists(NUMBER_ISH, min_size=2, max_size=4), min_size=1, max_size=3)
PLAUSIBLE = st.fixed_dictionaries(
    {"frames": st.lists(MATRIX_ISH, max_size=4)},
    optional={"width": NUMBER_ISH, "height": NUMBER_ISH, "fps": NUMBER_ISH, "reference": NUMBER_ISH},
)


def _parse_or_refuse(path) -> None:
    try:
        affines, info = read_trajectory(path, width=32, height=24)
    except UserError as err:
        assert path.name in str(err) and "\n" not in str(err)
        return
    assert affines.dim() == 3 and affines.shape[1:] == (2, 3) and affines.shape[0] >= 1
    assert torch.isfinite(affines.float()).all()
    assert 0 <= info["reference"] < affines.shape[0]


@FUZZ
@given(value=st.one_of(ANY_JSON, PLAUSIBLE))
def test_arbitrary_json_never_crashes_the_trajectory_parser(tmp_path, value):
    path = tmp_path / "affine.json"
    path.write_text(json.dumps(value))  # json writes NaN and Infinity, which Python's reader accepts back
    _parse_or_refuse(path)


@FUZZ
@given(data=st.binary(max_size=300))
def test_raw_bytes_never_crash_the_trajectory_parser(tmp_path, data):
    path = tmp_path / "affine.json"
    path.write_bytes(data)
    _parse_or_refuse(path)
