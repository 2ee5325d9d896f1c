"""`vidrender bench`: the JSON last line, the sections, the plug-in registry and the measurement helpers."""

import json
import math
import os
import shutil
import sys
import time

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from vidrender.bench import measure, registry, report, video
from vidrender.bench.command import register
from vidrender.errors import UserError
from vidrender.io.video_write import write_video


def _bench_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:  # a callback keeps `bench` a named sub-command, as in the real CLI
        pass

    register(app)
    return app


def _invoke(*args):
    return CliRunner().invoke(_bench_app(), ["bench", *args])


def _numbers(figures: dict):
    for _, value in report.flatten(figures):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            yield value


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `bench --quick` run of the built-in sections: (CliRunner result, --json-out file)."""
    json_out = tmp_path_factory.mktemp("bench") / "figures.json"
    result = _invoke(
        "--quick", "--threads", "1", "--only", "machine", "--only", "video", "--json-out", str(json_out)
    )
    assert result.exit_code == 0, result.output
    return result, json_out


def test_quick_bench_prints_tables_then_one_json_line(quick_run):
    result, json_out = quick_run
    lines = result.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert list(figures) == ["bench", "machine", "video"]
    assert figures["bench"]["quick"] is True and figures["bench"]["sections"] == ["machine", "video"]
    table = "\n".join(lines[:-1])
    assert "peak_fp32_gflops" in table and "encode_fps / 256px / gif" in table
    assert json.loads(json_out.read_text()) == figures


def test_machine_section_names_the_machine_and_its_peak(quick_run):
    machine = json.loads(quick_run[0].stdout.strip().splitlines()[-1])["machine"]
    assert machine["cpu"] and machine["torch"] == torch.__version__
    assert machine["torch_threads"] == 1  # --threads 1
    by_size = machine["matmul_fp32_gflops"]
    assert set(by_size) == {"1024", "2048"} and all(rate > 0 for rate in by_size.values())
    assert machine["peak_fp32_gflops"] == max(by_size.values())


def test_video_section_has_positive_rates_for_every_size_and_format(quick_run):
    section = json.loads(quick_run[0].stdout.strip().splitlines()[-1])["video"]
    for size in ("128px", "256px"):
        assert set(section["encode_fps"][size]) == set(video.ENCODE_FORMATS)
        decode = section["decode_fps"][size]
        assert {"iter_frames", "pyav", "pyav_frame_threads", "ffmpeg_cli", "ffmpeg_cli_after_startup"} <= set(decode)
        if shutil.which("ffmpeg") is None:
            assert decode["ffmpeg_cli"] == decode["ffmpeg_cli_after_startup"] == "ffmpeg not installed"
        assert section["decode_peak_rss_increase_mib"][size] >= 0
    rates = {key: value for key, value in section.items() if key.endswith("_fps")}
    assert all(value > 0 for value in _numbers(rates))
    assert len(list(_numbers(rates))) >= 2 * (len(video.ENCODE_FORMATS) + 3)


def test_unknown_only_section_is_a_clear_error():
    result = _invoke("--only", "video,nope")
    assert isinstance(result.exception, UserError)
    message = str(result.exception)
    assert "nope" in message and "machine, video" in message and "\n" not in message


def test_json_out_folder_is_refused_before_measuring(tmp_path):
    result = _invoke("--only", "nope", "--json-out", str(tmp_path))
    assert isinstance(result.exception, UserError) and "already exists" in str(result.exception)


@pytest.fixture
def clean_registry(monkeypatch):
    """The registry as it is, restored after the test (sections and plug-in modules added by it vanish)."""
    registry.load_sections()
    monkeypatch.setattr(registry, "SECTIONS", dict(registry.SECTIONS))
    monkeypatch.setattr(registry, "_plugin_modules", [])


def test_a_registered_section_runs_alone_and_gets_quick(clean_registry):
    @registry.bench_section("toy")
    def toy(quick: bool) -> dict:
        return {
            "quick_seen": quick,
            "rate": np.float32(2.5),
            "nested": {"count": np.int64(3)},
            "bad": math.nan,
        }

    result = _invoke("--only", "toy")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["toy"] == {"quick_seen": False, "rate": 2.5, "nested": {"count": 3}, "bad": None}
    assert "machine" not in figures and "video" not in figures


def test_section_modules_load_when_the_bench_runs(clean_registry, tmp_path, monkeypatch):
    (tmp_path / "bench_plugin_for_test.py").write_text(
        "from vidrender.bench.registry import bench_section\n\n"
        "@bench_section('plugin')\n"
        "def plugin(quick):\n"
        "    return {'answer': 42}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "bench_plugin_for_test", raising=False)
    registry.add_section_module("bench_plugin_for_test")
    assert "plugin" not in registry.SECTIONS  # nothing is imported until the bench runs
    result = _invoke("--only", "plugin")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["plugin"] == {"answer": 42}


@pytest.mark.parametrize("name", ["bench", "Has Space", "a,b", ""])
def test_malformed_section_names_are_refused(name):
    with pytest.raises(ValueError, match="bench section name"):
        registry.bench_section(name)


def test_a_taken_section_name_is_refused(clean_registry):
    with pytest.raises(ValueError, match="already registered"):
        registry.bench_section("video")(lambda quick: {})


def test_time_it_runs_warmup_then_timed_repeats():
    size = 128
    left, right = torch.randn(size, size), torch.randn(size, size)
    calls, setups = [], []
    timing = measure.time_it(
        lambda: calls.append(torch.mm(left, right)),
        repeats=3,
        warmup=2,
        setup=lambda: setups.append(len(calls)),
    )
    assert len(calls) == 5 and timing.repeats == 3
    assert setups == [0, 1, 2, 3, 4]  # before every call, warm-up included
    assert 0 < timing.min <= timing.median
    assert timing.rate(10) == pytest.approx(10 / timing.min)


def test_time_interleaved_takes_turns():
    order = []
    timings = measure.time_interleaved(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=2, warmup=1
    )
    assert order == ["a", "b"] * 3
    assert [timing.repeats for timing in timings.values()] == [2, 2]


def test_time_it_stops_at_the_time_cap():
    timing = measure.time_it(lambda: time.sleep(0.02), repeats=100, warmup=0, max_seconds=0.1)
    assert 1 <= timing.repeats < 100 and timing.min >= 0.02


@pytest.mark.parametrize("shape", [(64, 64, 64), (3, 5, 7)])
def test_model_flops_of_a_matrix_product(shape):
    m, k, n = shape
    left, right = torch.randn(m, k), torch.randn(k, n)
    assert measure.model_flops(lambda: torch.mm(left, right)) == 2 * m * k * n


def test_model_flops_counts_backward_too():
    n = 32
    weight = torch.randn(n, n, requires_grad=True)
    inputs = torch.randn(n, n)
    # forward mm, then backward: the gradient of the weight only (inputs need none) is one more product
    assert measure.model_flops(lambda: torch.mm(inputs, weight).sum().backward()) == 2 * (2 * n**3)


def test_achieved_fraction():
    assert measure.achieved_fraction(2e9, 0.5, 8e9) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        measure.achieved_fraction(2e9, 0.0, 8e9)


def _hold_64_mib() -> int:
    block = np.ones(64 * measure.MIB, np.uint8)  # ones, not zeros: every page is touched
    time.sleep(0.05)  # long enough for the 1 ms sampler to see it
    return int(block[-1])


@pytest.mark.parametrize("method", ["hwm", "sampling"])
def test_peak_memory_sees_a_temporary_allocation(method):
    if method == "hwm" and not measure._reset_high_water_mark():
        pytest.skip("this kernel does not let a process reset its memory high-water mark")
    peak = measure.peak_memory(_hold_64_mib, method=method)
    assert peak.result == 1 and peak.method in ("VmHWM", "psutil sampling")
    assert 60 <= peak.increase_mib < 100
    assert measure.peak_memory(lambda: None, method=method).increase_mib < 16


def test_ffmpeg_is_reported_missing_or_timed_beside_the_others(tmp_path, monkeypatch):
    clip = tmp_path / "clip.mp4"
    write_video(clip, video.panning_clip(32, 4), video.FPS)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    rates, _ = video.decode_rates(clip, 4, video.QUICK)
    assert rates["ffmpeg_cli"] == rates["ffmpeg_cli_after_startup"] == video.FFMPEG_MISSING
    assert rates["iter_frames"] > 0

    # a stand-in ffmpeg that records its arguments: checks the command line and the timing around it
    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "calls.txt"}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent) + os.pathsep + os.environ.get("PATH", ""))
    rates, _ = video.decode_rates(clip, 4, video.QUICK)
    assert isinstance(rates["ffmpeg_cli"], float) and rates["ffmpeg_cli"] > 0
    # the stand-in takes no time to "decode", so the rate after start-up is unknown, not a number
    assert rates["ffmpeg_cli_after_startup"] is None or rates["ffmpeg_cli_after_startup"] > 0
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    whole = [call for call in calls if "-frames:v" not in call]
    first_frame = [call for call in calls if "-frames:v 1 " in call]
    assert len(whole) >= 2 and len(first_frame) >= 2  # each: the checking run and at least one timed run
    assert f"-i {clip}" in calls[0] and all(call.endswith("-f null -") for call in calls)

    fake.write_text("#!/bin/sh\nexit 1\n")
    assert video.ffmpeg_decoder(clip).startswith("ffmpeg failed")


def test_panning_clip_moves_and_is_reproducible():
    frames = video.panning_clip(32, 5)
    assert len(frames) == 5 and frames[0].shape == (32, 32, 3) and frames[0].dtype == np.uint8
    assert all(np.array_equal(a, b) for a, b in zip(frames, video.panning_clip(32, 5), strict=True))
    # the pan moves the picture far more than the noise changes it
    assert np.abs(frames[0].astype(int) - frames[-1]).mean() > 4 * video.NOISE_STD


def test_report_values_become_plain_json():
    figures = report.jsonable({"a": np.float64(1234.5678), "b": [1, math.inf], "c": {"d": "text"}})
    assert figures == {"a": 1235.0, "b": [1, None], "c": {"d": "text"}}
    assert list(report.flatten(figures)) == [("a", 1235.0), ("b", [1, None]), ("c / d", "text")]
    with pytest.raises(TypeError, match="x / y"):
        report.jsonable({"y": object()}, "x")
    assert report.format_value(12345.6) == "12,346" and report.format_value(0.01234) == "0.0123"
