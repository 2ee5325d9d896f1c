"""Bench section `scene3d`: registration with `vidrender bench`, its figures, and the shared random batches."""

import json
import math
import subprocess
import sys

import torch

from vidrender.pipelines.scene3d.bench import autocast_dtype, bench_config, measure_config, random_batch


def test_random_batch_shapes_ranges_and_seed():
    batch = random_batch(6, 16, max_gap=2, seed=3)
    assert batch["image_a"].shape == batch["image_b"].shape == (6, 3, 16, 16)
    assert 0 <= batch["image_a"].min() and batch["image_a"].max() <= 1
    assert (batch["azimuth_a"] >= 0).all() and (batch["azimuth_a"] < 360).all()
    assert (batch["elevation_b"].abs() <= 90).all()
    assert (batch["time_b"] - batch["time_a"]).abs().max() <= 2
    again = random_batch(6, 16, max_gap=2, seed=3)
    assert all(torch.equal(batch[key], again[key]) for key in batch)
    assert torch.equal(random_batch(2, 8)["time_a"], random_batch(2, 8)["time_b"])  # max_gap 0: same times


def test_presets_and_precision():
    paper = bench_config("paper")
    assert paper.model.image_size == 64 and autocast_dtype(paper) == torch.bfloat16
    assert autocast_dtype(paper, "no") is None and autocast_dtype(bench_config("cpu", 32)) is None


SCENE_COMMANDS = ("dataset", "train", "render", "eval", "latent")

# Run in a fresh interpreter: this test module imports the scene3d bench module (which registers its
# section by that import alone) and other tests register pipelines, so only a clean process shows what
# the CLI entry point itself registers.
_THROUGH_THE_CLI = """
import json, sys
from vidrender import cli
from vidrender.bench.registry import load_sections
codes = {}
for name in sys.argv[1:]:
    try:
        cli.main(["scene", name, "--help"])
    except SystemExit as exit:
        codes[name] = exit.code
lazy = "vidrender.pipelines.scene3d.bench" not in sys.modules
print(json.dumps({"codes": codes, "lazy": lazy, "sections": list(load_sections())}))
"""


def test_scene_commands_and_section_are_registered_through_the_cli():
    result = subprocess.run(
        [sys.executable, "-c", _THROUGH_THE_CLI, *SCENE_COMMANDS], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    # `vidrender scene NAME --help` exits 0 for each command (an unknown command or group exits 2)
    assert found["codes"] == dict.fromkeys(SCENE_COMMANDS, 0), result.stderr
    # the section module is loaded by `vidrender bench` (not by startup), from the scene commands' registration
    assert found["lazy"] and "scene3d" in found["sections"]


def test_measure_config_reports_positive_figures():
    figures = measure_config("cpu", quick=True, size=32, pairs=2)
    assert figures["precision"] == "fp32" and figures["scene_shape"] == [32, 8, 8, 8]
    for key in ("step_seconds", "step_cpu_seconds", "peak_rss_mb", "render_seconds_per_image"):
        assert math.isfinite(figures[key]) and figures[key] > 0, key
    assert figures["images_per_second"] == 4 / figures["step_seconds"]
