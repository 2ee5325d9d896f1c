"""`vidrender scene dataset -> train -> render -> eval` end to end at tiny sizes, and refusals."""

import json
import subprocess
import sys

import pytest

from vidrender.io.images import read_image
from vidrender.io.video import probe


def _run(*args):
    return subprocess.run([sys.executable, "-m", "vidrender", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene")
    made = _run("scene", "dataset", str(root / "bend"), "--views", "6", "--timesteps", "8", "--size", "32")
    assert made.returncode == 0, made.stderr
    result = _run("scene", "train", str(root / "bend"), "-o", str(root / "m.pt"), "--config",
                  "configs/scene3d/temporal.yaml", "--steps", "3", "--set", "temporal.timesteps=7",
                  "--set", "temporal.max_gap=3")
    assert result.returncode == 0, result.stderr
    image = sorted((root / "bend-test" / "bend").glob("*.png"))[0]
    return root, image


@pytest.mark.slow
def test_render_one_view_and_animations(trained):
    root, image = trained
    assert _run("scene", "render", str(root / "m.pt"), "--image", str(image), "-o", str(root / "v.png"),
                "--azimuth", "90").returncode == 0
    assert read_image(root / "v.png").shape == (32, 32, 3)
    assert _run("scene", "render", str(root / "m.pt"), "--image", str(image), "-o", str(root / "o.gif"),
                "--orbit", "--frames", "6").returncode == 0
    assert probe(root / "o.gif").frame_count == 6
    assert _run("scene", "render", str(root / "m.pt"), "--image", str(image), "-o", str(root / "t.gif"),
                "--timelapse").returncode == 0
    assert probe(root / "t.gif").frame_count == 7  # one frame per time slice, offsets -3..3
    assert _run("scene", "render", str(root / "m.pt"), "--image", str(image), "-o", str(root / "ot.gif"),
                "--orbit", "--timelapse", "--frames", "5").returncode == 0
    assert probe(root / "ot.gif").frame_count == 5


def test_eval_prints_json_with_baselines(trained):
    root, _ = trained
    result = _run("scene", "eval", str(root / "m.pt"), str(root / "bend"), "--pairs", "4")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    assert scores["pairs"] > 0
    assert {"model", "copy_source", "mean_image", "mean_train_image"} <= set(scores)
    assert all(0 < scores[k]["psnr"] < 100 for k in ("model", "copy_source", "mean_image", "mean_train_image"))


def test_refusals(trained, tmp_path):
    root, image = trained
    from vidrender.io.checkpoint import save_checkpoint

    motion = save_checkpoint(tmp_path / "motion.pt", "motion", {}, {}, {})
    cases = [
        (["scene", "render", str(motion), "--image", str(image), "-o", "x.png"], "'motion' checkpoint"),
        (["scene", "render", str(root / "m.pt"), "--image", str(image), "-o", str(tmp_path / "x.mp4")], ".png"),
        (["scene", "train", str(tmp_path), "-o", str(tmp_path / "m.pt")], str(tmp_path)),
    ]
    for args, message in cases:
        result = _run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
