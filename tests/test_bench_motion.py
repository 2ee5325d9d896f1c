"""`vidrender bench --quick` through the real CLI (as CI runs it), and the motion section's figures."""

import json
import math
import subprocess
import sys

import pytest

from pipelines.motion import bench
from pipelines.motion.config import VARIANTS
from vidrender.io.video import probe

RATE_KEYS = {"per_s", "batch", "ms_per_item", "gflop_per_item", "achieved_gflops", "fraction_of_peak",
             "peak_rss_increase_mib"}


@pytest.fixture(scope="module")
def quick_bench():
    """The JSON object of one `vidrender bench --quick` run, every registered section."""
    result = subprocess.run([sys.executable, "-m", "vidrender", "bench", "--quick", "--threads", "1"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_real_cli_runs_every_section_and_ends_with_json(quick_bench):
    sections = quick_bench["bench"]["sections"]
    assert {"machine", "video", "motion"} <= set(sections)
    assert list(quick_bench) == ["bench", *sections]
    assert quick_bench["bench"]["quick"] is True and quick_bench["machine"]["torch_threads"] == 1


def _rates(figures: dict) -> None:
    assert set(figures) == RATE_KEYS
    assert all(value > 0 for key, value in figures.items() if key != "peak_rss_increase_mib")
    assert figures["peak_rss_increase_mib"] >= 0


def test_motion_training_figures_per_variant_and_size(quick_bench):
    training = quick_bench["motion"]["training_pairs"]
    assert set(training) == set(VARIANTS)
    for variant in VARIANTS:
        assert set(training[variant]) == {f"{size}px" for size in bench.TRAIN_SIZES}
        for figures in training[variant].values():
            _rates(figures)
            assert figures["batch"] == bench.QUICK.train_batch
        # the model is convolutional: twice the side, four times the work per pair
        ratio = training[variant]["128px"]["gflop_per_item"] / training[variant]["64px"]["gflop_per_item"]
        assert 3.5 < ratio < 4.5


def test_motion_inference_figures_per_size(quick_bench):
    inference = quick_bench["motion"]["inference_frames"]
    assert set(inference) == {f"{size}px" for size in bench.INFER_SIZES}
    for size in bench.INFER_SIZES:
        _rates(inference[f"{size}px"])
        assert inference[f"{size}px"]["batch"] == min(bench.inference_batch(size), bench.QUICK.infer_frames)
    assert inference["256px"]["gflop_per_item"] / inference["64px"]["gflop_per_item"] == pytest.approx(16, rel=0.05)


def test_motion_compose_baseline_and_options(quick_bench):
    motion = quick_bench["motion"]
    compose = motion["compose"]
    assert compose["frames"] == bench.QUICK.compose_frames and compose["size_px"] == bench.COMPOSE_SIZE
    assert set(compose["stages_ms"]) == {"load_checkpoints", "composite", "encode_mp4"}
    assert compose["fps"] > 0 and compose["encode_fps"] > 0 and all(v > 0 for v in compose["stages_ms"].values())
    assert motion["classical_baseline"]["fps"] > 0
    options = motion[f"options_{bench.OPTIONS_SIZE}px"]
    for kind in ("training_pairs_per_s", "inference_frames_per_s"):
        assert set(options[kind]) == set(bench.OPTIONS) and all(v > 0 for v in options[kind].values())
    # bf16 keeps about 3 significant digits: the rendered frames move by a fraction of a grey level
    assert 0 < options["bf16_render_change_mean"] < 2


def test_compose_is_timed_on_the_real_command(tmp_path):
    character = bench.untrained_checkpoint(tmp_path / "a.pt", 32, 4, seed=1)
    background = bench.untrained_checkpoint(tmp_path / "b.pt", 48, 4, seed=2)
    output = tmp_path / "out.mp4"
    bench.compose_command(character, background, output, frames=6)()
    info = probe(output)
    assert info.frame_count == 6 and (info.width, info.height) == (48, 48)


def test_training_step_learns_and_inference_renders():
    step, pairs = bench.training_step("frame-pair", 32, batch_size=2, clip_frames=4)
    assert pairs == 2
    losses = [step() for _ in range(3)]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] != losses[0]  # the weights moved
    run, frames = bench.inference_pass(32, 3)
    rendered = run()
    assert frames == 3 and rendered.shape == (3, 3, 32, 32) and 0 <= rendered.min() and rendered.max() <= 1
