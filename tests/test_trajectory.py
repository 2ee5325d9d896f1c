"""Trajectory files: round trip across resolutions and one-line errors for malformed files."""

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vidrender import geometry
from vidrender.errors import UserError
from vidrender.io.trajectory import read_trajectory, write_trajectory


def _affines(n=5):
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    return geometry.from_params(0.3 * t, -0.2 * t, math.pi / 4 * t, 1 + 0.5 * t, 0.1 * t)


def test_round_trip_and_pixel_units(tmp_path):
    A = _affines()
    path = write_trajectory(tmp_path / "affine.json", A, width=64, height=48, fps=24.0)
    back, info = read_trajectory(path)
    assert torch.allclose(back, A, atol=1e-5)
    assert info["width"] == 64 and info["fps"] == 24.0 and "pixel" in info["convention"]
    # the file holds pixels: a shift of 0.3 normalized on a 64-px-wide frame is 9.6 px
    shift = geometry.identity(1, dtype=torch.float64)
    shift[0, 0, 2] = 0.3
    write_trajectory(tmp_path / "shift.json", shift, width=64, height=48, fps=24.0)
    assert json.loads((tmp_path / "shift.json").read_text())["frames"][0][0][2] == pytest.approx(9.6)


def test_size_taken_from_clip_when_file_has_none(tmp_path):
    path = tmp_path / "path.json"
    path.write_text(json.dumps({"frames": [[[1, 0, 0], [0, 1, 0]], [[1, 0, 10], [0, 1, 0]]]}))
    affines, _ = read_trajectory(path, width=20, height=10)
    assert affines[1, 0, 2].item() == pytest.approx(1.0)  # 10 px of a 20-px frame = half its 2-unit width
    with pytest.raises(UserError, match="width"):
        read_trajectory(path)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('[1, 2]', '"frames"'),
        ('{"frames": [[1, 0, 0]]}', "2x3"),
        ('{"frames": [[[1, 0, NaN], [0, 1, 0]]], "width": 4, "height": 4}', "NaN"),
        ('{"frames": [[[1, 0, 0], [0, 1, 0]]], "width": -4, "height": 4}', "positive"),
        ('{"frames": [[[1, 0, 0], [0, 1, 0]]], "width": 4, "height": 4, "reference": 3}', "reference"),
    ],
)
def test_malformed_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as info:
        read_trajectory(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such trajectory"):
        read_trajectory(tmp_path / "absent.json")


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True), st.integers(), st.text()),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
                    max_leaves=20))
def test_arbitrary_json_never_crashes(tmp_path_factory, value):
    path = tmp_path_factory.mktemp("fuzz") / "t.json"
    path.write_text(json.dumps({"frames": value, "width": 8, "height": 8}))
    try:
        affines, _ = read_trajectory(path)
    except UserError:
        return
    assert affines.shape[1:] == (2, 3) and torch.isfinite(affines).all()
