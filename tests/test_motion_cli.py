"""`vidrender train` -> `export` -> `eval` end to end on a tiny synthetic clip, and their bad-input errors."""

import json
import subprocess
import sys

import pytest
import torch

from vidrender.io.images import read_image
from vidrender.io.trajectory import read_trajectory
from vidrender.synth import make_clip, write_truth

FAST_INFERENCE = ["--set", "infer.refine_steps=5", "--set", "infer.rounds=1", "--set", "train.batch_size=8"]


def _run(*args):
    return subprocess.run([sys.executable, "-m", "vidrender", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("motion")
    truth = write_truth(make_clip(seed=1, size=32, frames=8), root / "truth")
    result = _run("train", str(truth), "-o", str(root / "a.pt"), "--variant", "known", "--steps", "60", "--size", "32",
                  *FAST_INFERENCE)
    assert result.returncode == 0, result.stderr
    return root, truth


def test_train_writes_a_safe_checkpoint_with_what_inference_needs(trained):
    root, _ = trained
    payload = torch.load(root / "a.pt", weights_only=True)
    assert payload["pipeline"] == "motion"
    assert payload["format_version"] == 2
    entry = payload["artifact"]["clips"][0]
    (character,) = entry["characters"]
    assert entry["background"]["plate"].shape == (3, 32, 32) and character["rgba"].shape == (4, 32, 32)
    assert character["affines"].shape == (8, 2, 3) and entry["fps"] == 24.0
    assert (root / "a.run" / "checkpoints").is_dir()


def test_export_writes_the_documented_layout(trained):
    root, truth = trained
    result = _run("export", str(root / "a.pt"), "-o", str(root / "layers"))
    assert result.returncode == 0, result.stderr
    layers = root / "layers"
    assert read_image(layers / "background.png").shape == (32, 32, 3)
    assert sorted(p.name for p in (layers / "alpha").iterdir()) == [f"{i:05d}.png" for i in range(8)]
    assert read_image(layers / "character" / "00003.png").shape == (32, 32, 4)
    affines, info = read_trajectory(layers / "affine.json")
    true_affines, _ = read_trajectory(truth / "affine.json")
    assert info["width"] == 32 and "reference-frame" in info["convention"]
    # known variant: the exported motion is the truth it was given, in the same convention
    assert torch.allclose(affines, true_affines, atol=1e-3)


def test_eval_prints_json_and_beats_trivial_mattes(trained):
    root, truth = trained
    result = _run("eval", str(root / "a.pt"), "--truth", str(truth), "--baseline", "classical")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(scores) == {"model", "classical"}
    assert scores["model"]["affine_error_px"] < 0.05
    # an all-background matte scores 0 IoU; an all-character one scores the character's coverage (< 0.3)
    assert scores["model"]["matte_iou"] > 0.5


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "missing.mp4", "-o", "x.pt"], "missing.mp4: no such file"),
        (["train", "{notes}", "-o", "x.pt"], "not a video"),
        (["train", "{truth}", "-o", "x.pt", "--variant", "sideways"], "unknown affine variant"),
        (["train", "{truth}", "-o", "x.pt", "--variant", "known", "--affines", "{notes}"], "not valid JSON"),
        (["export", "{scene}", "-o", "out"], "'scene3d' checkpoint"),
        (["eval", "missing.pt", "--truth", "{truth}"], "no such checkpoint"),
    ],
)
def test_bad_inputs_are_one_line_errors(trained, tmp_path, args, message):
    root, truth = trained
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video")
    from vidrender.io.checkpoint import save_checkpoint

    scene = save_checkpoint(tmp_path / "scene.pt", "scene3d", {}, {}, {})
    filled = [a.format(truth=truth, notes=notes, scene=scene) for a in args]
    result = _run(*filled)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
