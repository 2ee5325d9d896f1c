"""A lost character is never silent: `diagnostics.layer_report` on clips whose truth is known, and what
`train` and `export` say about it through the real command line."""

from __future__ import annotations

import pytest
import torch

from vidrender.cli import main
from vidrender.io.checkpoint import save_checkpoint
from vidrender.pipelines.motion.diagnostics import MIN_EXPLAINED, empty_layers, layer_report
from vidrender.pipelines.motion.stack import single_layer_stack
from vidrender.synth import make_clip, write_truth


@pytest.fixture(scope="module")
def clip():
    return make_clip(seed=3, size=(80, 48), frames=10)


def _true_stack(clip, alpha_scale: float = 1.0):
    """The clip's true layers: the true plate, the character at frame 0 (clean pixels, true matte)."""
    rgba = torch.cat([clip.clean[0], clip.alpha[0] * alpha_scale])
    return single_layer_stack(clip.background, rgba, clip.affines.float(), 0, clip.fps)


def test_true_layers_explain_what_moves(clip):
    report = layer_report(_true_stack(clip), clip.frames)
    assert report.explained > 0.9 and not report.failed
    assert report.moving > 0.01 and report.coverage > 0.01


def test_an_empty_character_layer_is_reported(clip):
    stack = _true_stack(clip, alpha_scale=0.0)
    report = layer_report(stack, clip.frames)
    assert report.explained < MIN_EXPLAINED and report.failed
    assert "0% of what moves" in report.describe("clip")
    assert empty_layers(stack) == [1] and empty_layers(_true_stack(clip)) == []


def test_a_clip_where_nothing_moves_has_nothing_to_explain(clip):
    still = clip.background.expand(len(clip.frames), -1, -1, -1)
    report = layer_report(_true_stack(clip, alpha_scale=0.0), still)
    assert report.moving < 1e-3 and not report.failed


def _run(capsys, *args):
    try:
        main([str(arg) for arg in args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_says_when_the_matte_emptied_and_strict_fails(tmp_path, capsys):
    truth = write_truth(make_clip(seed=1, size=32, frames=8), tmp_path / "truth")
    # a sparsity weight this strong empties the matte within a few steps: the collapse, forced
    collapse = ["--variant", "known", "--steps", "30", "--size", "32", "--set", "loss.alpha_sparsity=200",
                "--set", "loss.regulariser_warmup=0", "--set", "infer.refine_steps=5", "--set", "infer.rounds=1",
                "--set", "train.batch_size=8", "--set", "train.save_every=0", "--set", "train.preview_every=0"]
    code, out, err = _run(capsys, "train", truth, "-o", tmp_path / "a.pt", *collapse)
    assert code == 0 and (tmp_path / "a.pt").is_file()
    assert "warning:" in err and "of what moves in the clip" in err, err
    code, out, err = _run(capsys, "train", truth, "-o", tmp_path / "b.pt", *collapse, "--strict")
    assert code == 2 and "--strict" in err and (tmp_path / "b.pt").is_file()


def test_export_says_when_it_writes_an_empty_layer(clip, tmp_path, capsys):
    empty = save_checkpoint(tmp_path / "empty.pt", "motion", {}, {}, {"clips": [_true_stack(clip, 0.0).to_dict()]})
    code, _, err = _run(capsys, "export", empty, "-o", tmp_path / "layers")
    assert code == 0 and "character layer 1 is empty" in err
    good = save_checkpoint(tmp_path / "good.pt", "motion", {}, {}, {"clips": [_true_stack(clip).to_dict()]})
    code, _, err = _run(capsys, "export", good, "-o", tmp_path / "good")
    assert code == 0 and "warning" not in err
