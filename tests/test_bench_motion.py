"""`vidrender bench --quick` through the real CLI (as CI runs it), and the motion section's figures."""

import json
import math
import subprocess
import sys

import pytest

from vidrender.io.video import probe
from vidrender.pipelines.motion import bench
from vidrender.pipelines.motion.config import VARIANTS
from vidrender.pipelines.motion.stack import read_export

RATE_KEYS = {"per_s", "batch", "ms_per_item", "gflop_per_item", "achieved_gflops", "fraction_of_peak",
             "peak_rss_increase_mib"}


@pytest.fixture(scope="module")
def quick_bench():
    """The JSON object of one `vidrender bench --quick` run, every registered section."""
    result = subprocess.run([sys.executable, "-m", "vidrender", "bench", "--quick", "--threads", "1"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_real_cli_runs_every_section_and_ends_with_json(quick_bench):
    sections = quick_bench["bench"]["sections"]
    assert {"machine", "video", "motion"} <= set(sections)
    assert list(quick_bench) == ["bench", *sections]
    assert quick_bench["bench"]["quick"] is True and quick_bench["machine"]["torch_threads"] == 1


def _rates(figures: dict) -> None:
    assert set(figures) == RATE_KEYS
    assert all(value > 0 for key, value in figures.items() if key != "peak_rss_increase_mib")
    assert figures["peak_rss_increase_mib"] >= 0


@pytest.mark.slow
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


@pytest.mark.slow
def test_motion_export_figures_per_size(quick_bench):
    export = quick_bench["motion"]["export"]
    assert set(export) == {f"{size}px" for size in bench.EXPORT_SIZES}
    for size in bench.EXPORT_SIZES:
        figures = export[f"{size}px"]
        assert figures["frames"] == bench.QUICK.export_frames and figures["size_px"] == size
        # one run of the command wrote every frame: background.png, then character/ and alpha/ per frame
        assert figures["png_files"] == 2 * figures["frames"] + 1
        assert set(figures["stages_ms"]) == {"load_checkpoint", "move_layers", "write_pngs"}
        assert figures["fps"] > 0 and all(v > 0 for v in figures["stages_ms"].values())
        assert figures["peak_rss_increase_mib"] >= 0


@pytest.mark.slow
def test_motion_compose_and_baseline(quick_bench):
    motion = quick_bench["motion"]
    assert set(motion) == {"threads", "training_pairs", "export", "compose", "classical_baseline"}
    compose = motion["compose"]
    assert compose["frames"] == bench.QUICK.compose_frames and compose["size_px"] == bench.COMPOSE_SIZE
    assert set(compose["stages_ms"]) == {"load_checkpoints", "composite", "encode_mp4"}
    assert compose["fps"] > 0 and compose["encode_fps"] > 0 and all(v > 0 for v in compose["stages_ms"].values())
    assert motion["classical_baseline"]["fps"] > 0


def test_compose_is_timed_on_the_real_command(tmp_path):
    character = bench.untrained_checkpoint(tmp_path / "a.pt", 32, 4, seed=1)
    background = bench.untrained_checkpoint(tmp_path / "b.pt", 48, 4, seed=2)
    output = tmp_path / "out.mp4"
    bench.compose_command(character, background, output, frames=6)()
    info = probe(output)
    assert info.frame_count == 6 and (info.width, info.height) == (48, 48)


def test_export_is_timed_on_the_real_command_into_fresh_folders(tmp_path):
    checkpoint = bench.untrained_checkpoint(tmp_path / "a.pt", 40, 5, seed=1)
    with bench.FreshFolders(tmp_path / "runs") as folders:
        run = bench.export_command(checkpoint, folders)
        first = run()
        stack = read_export(first)
        assert stack.frame_count == 5 and stack.size == (40, 40)
        assert len(list((first / "character").glob("*.png"))) == len(list((first / "alpha").glob("*.png"))) == 5
        folders.next()  # what time_it's setup does before every timed run
        assert not first.exists()
        second = run()
        assert second.parent == folders.current
        written = sorted(path.relative_to(second) for path in second.rglob("*.png"))
        assert len(written) == 2 * 5 + 1
        # the write_pngs stage alone writes the same PNG files as the command
        alone = folders.next()
        bench.write_pngs(alone, stack, [character.moved() for character in stack.characters])
        assert sorted(path.relative_to(alone) for path in alone.rglob("*.png")) == written
    assert not any((tmp_path / "runs").iterdir())  # the last folder is deleted too


def test_training_step_learns():
    step, pairs = bench.training_step("frame-pair", 32, batch_size=2, clip_frames=4)
    assert pairs == 2
    losses = [step() for _ in range(3)]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] != losses[0]  # the weights moved
