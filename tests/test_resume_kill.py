"""Crash safety of `vidrender train`: SIGKILL then --resume, Ctrl-C then --resume, and output checks up front.

The killed and interrupted runs are real CLI processes on the CPU with a fixed seed; resuming them must
end with exactly the weights of an uninterrupted run. An unusable output location or a full disk must be
refused before training, and a save that fails mid-run must keep the previous checkpoint.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from toy_task import ToyTask

from vidrender import cli
from vidrender import train as training
from vidrender.config import TrainConfig
from vidrender.errors import UserError
from vidrender.io.outputs import check_writable
from vidrender.synth import make_clip, write_truth

STEPS = 60
TRAIN = ["--variant", "known", "--affines", "truth", "--size", "32", "--steps", str(STEPS),
         "--set", "train.save_every=5", "--set", "train.log_every=1", "--set", "train.seed=3",
         "--set", "train.batch_size=4", "--set", "infer.refine_steps=2", "--set", "infer.rounds=1",
         "--set", "infer.track_steps=2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _command(truth: Path, output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vidrender", "train", str(truth), "-o", str(output), *TRAIN, *extra]


def _weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["weights"]


def _assert_same_weights(path: Path, reference: Path) -> None:
    expected, got = _weights(reference), _weights(path)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def _start_and_stop_after_a_checkpoint(truth: Path, output: Path, sig: int) -> tuple[int, str]:
    """Start training, send `sig` once the checkpoint of step 10 exists (of 60 steps); (exit code, stderr)."""
    run = subprocess.Popen(_command(truth, output), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=ENV)
    marker = output.with_name(output.stem + ".run") / "checkpoints" / "step_00000010"
    deadline = time.monotonic() + 240  # a guard against hanging forever, not a timing assertion
    while not marker.exists():
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    run.send_signal(sig)
    _, stderr = run.communicate(timeout=240)
    return run.returncode, stderr


def _logged_steps(output: Path) -> list[int]:
    log = output.with_name(output.stem + ".run") / "log.jsonl"
    return [json.loads(line)["step"] for line in log.read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run: the result the interrupted ones must reach."""
    root = tmp_path_factory.mktemp("straight")
    truth = write_truth(make_clip(seed=2, size=32, frames=6), root / "truth")
    output = root / "straight.pt"
    result = subprocess.run(_command(truth, output), capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr
    return truth, output


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_the_uninterrupted_weights(straight, tmp_path):
    truth, reference = straight
    output = tmp_path / "killed.pt"
    code, _ = _start_and_stop_after_a_checkpoint(truth, output, signal.SIGKILL)
    assert code == -signal.SIGKILL and not output.exists()  # really killed mid-way
    checkpoints = output.with_name("killed.run") / "checkpoints"
    # what a kill during a save leaves behind: a partial folder, which resuming must ignore
    (checkpoints / ".partial_00000055").mkdir()
    (checkpoints / ".partial_00000055" / "model.safetensors").write_bytes(b"cut short")
    saved = max(int(folder.name.removeprefix("step_")) for folder in checkpoints.glob("step_*"))
    assert saved >= 10
    resumed = subprocess.run(_command(truth, output, "--resume"), capture_output=True, text=True, timeout=300,
                             env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    # it continued from the newest complete checkpoint: a run that restarted from step 0 with the same seed
    # would reach the same weights and log, so only the step it reports resuming at tells them apart
    assert _resumed_step(resumed.stderr) == saved, resumed.stderr
    _assert_same_weights(output, reference)
    # log lines written after the last checkpoint were dropped on resume, so each step is logged once
    assert _logged_steps(output) == list(range(1, STEPS + 1))


@pytest.mark.slow
def test_ctrl_c_saves_at_a_step_boundary_and_resume_matches(straight, tmp_path):
    truth, reference = straight
    output = tmp_path / "interrupted.pt"
    code, stderr = _start_and_stop_after_a_checkpoint(truth, output, signal.SIGINT)
    assert code == 128 + signal.SIGINT and "Traceback" not in stderr, stderr
    step = _interrupted_step(stderr)
    assert 10 <= step < STEPS and not output.exists()
    checkpoints = output.with_name("interrupted.run") / "checkpoints"
    assert (checkpoints / f"step_{step:08d}").is_dir()  # saved where it stopped, not only every 5 steps
    resumed = subprocess.run(_command(truth, output, "--resume"), capture_output=True, text=True, timeout=300,
                             env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    assert f"at step {step}" in resumed.stderr
    _assert_same_weights(output, reference)


def test_unwritable_output_is_refused_before_training(tmp_path, capsys):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file where the output folder should be")
    truth = write_truth(make_clip(seed=0, size=32, frames=3), tmp_path / "truth")
    with pytest.raises(SystemExit) as exited:
        cli.main(["train", str(truth), "-o", str(blocker / "a.pt"), *TRAIN])
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "notes.txt: is a file, not a folder" in lines[0], lines
    with pytest.raises(SystemExit) as exited:
        cli.main(["scene", "train", str(tmp_path), "-o", str(blocker / "s.pt")])
    assert exited.value.code == 2 and "notes.txt: is a file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "truth"]


def test_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        probe = folder / "probe"
        try:
            probe.write_text("x")
        except OSError:
            pass
        else:
            pytest.skip("this user writes into read-only folders anyway (root)")
        with pytest.raises(UserError, match="cannot write there"):
            check_writable(folder / "run")
    finally:
        folder.chmod(0o700)


Usage = namedtuple("Usage", "total used free")


def test_full_disk_is_refused_before_training(tmp_path, monkeypatch, capsys):
    truth = write_truth(make_clip(seed=0, size=32, frames=3), tmp_path / "truth")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 5 * 2**20, 5 * 2**20))
    with pytest.raises(SystemExit) as exited:
        cli.main(["train", str(truth), "-o", str(tmp_path / "a.pt"), *TRAIN])
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "only 5 MB free" in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["truth"]


@pytest.fixture
def fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _toy_config(**changes) -> TrainConfig:
    return TrainConfig(**{**dict(steps=12, batch_size=8, save_every=4, preview_every=0, tensorboard=False), **changes})


def test_free_space_must_cover_the_checkpoints(tmp_path, monkeypatch, fresh_accelerate_state):
    # enough for the command-line check (MIN_FREE_BYTES), not for the model's checkpoints on top
    free = training.MIN_FREE_BYTES + 1000
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - free, free))
    with pytest.raises(UserError, match="needs at least"):
        training.train(ToyTask(), _toy_config(), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_save_failing_mid_run_keeps_the_previous_checkpoint(tmp_path, monkeypatch, fresh_accelerate_state):
    real_save = Accelerator.save_state

    def save_until_the_disk_fills(self, output_dir, **kwargs):
        if output_dir.endswith("00000008"):
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            Path(output_dir, "model.safetensors").write_bytes(b"half")
            raise OSError(28, "No space left on device")
        return real_save(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", save_until_the_disk_fills)
    with pytest.raises(UserError, match=r"step 8 \(.*No space left on device\); the previous one is kept"):
        training.train(ToyTask(), _toy_config(), tmp_path / "run")
    # the half-written folder is gone and the last good checkpoint is what --resume will use
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step_00000004"]


def _interrupted_step(stderr: str) -> int:
    found = re.search(r"interrupted at step (\d+); saved", stderr)
    assert found, stderr
    return int(found.group(1))


def _resumed_step(stderr: str) -> int:
    # rich wraps long lines (the run folder's path) on a console that is not a terminal: join them first
    found = re.search(r"resumed from .*? at step (\d+)", " ".join(stderr.split()))
    assert found, stderr
    return int(found.group(1))
