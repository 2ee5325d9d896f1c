"""`accelerate launch` runs the real CLI as two CPU processes: motion `train`, `scene train`, averaged logs.

Each launch gets its own free port, so these tests do not collide with other gloo runs on the machine.
Two processes really ran when the checkpoint holds the RNG state of rank 1; only rank 0 prints and writes.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate.state import AcceleratorState

from vidrender.config import TrainConfig
from vidrender.io.checkpoint import load_checkpoint
from vidrender.io.video import probe
from vidrender.synth import make_clip, write_truth
from vidrender.train import make_accelerator

# real multi-process trainings through accelerate launch
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
FAST_INFERENCE = ["--set", "infer.refine_steps=2", "--set", "infer.rounds=1", "--set", "infer.track_steps=2"]


def _free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return probe_socket.getsockname()[1]


def _launch(*args, env_cpu: bool = True, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """`accelerate launch --main_process_port P ARGS...` with the environment of a CPU-only CI machine."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if env_cpu:
        env["ACCELERATE_USE_CPU"] = "1"
    command = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch",
               "--main_process_port", str(_free_port()), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def _vidrender(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vidrender", *args], capture_output=True, text=True, timeout=300)


def _ran_on_two_processes(run_dir: Path) -> None:
    (checkpoint,) = (run_dir / "checkpoints").iterdir()
    assert sorted(p.name for p in checkpoint.glob("random_states_*.pkl")) == ["random_states_0.pkl",
                                                                              "random_states_1.pkl"]


def test_motion_train_on_two_processes_with_the_readme_config_then_compose(tmp_path):
    truth = write_truth(make_clip(seed=1, size=32, frames=6), tmp_path / "truth")
    output = tmp_path / "a.pt"
    # docs/scale.md's command, run from the repository root as documented (the config's path is relative)
    result = _launch("--config_file", "configs/accelerate/cpu2.yaml", "-m", "vidrender", "train", str(truth),
                     "-o", str(output), "--cpu", "--variant", "known", "--affines", "truth", "--size", "32",
                     "--steps", "4", "--set", "train.batch_size=2", "--set", "train.log_every=1", *FAST_INFERENCE,
                     env_cpu=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(output)]  # printed once, by the main process
    payload = load_checkpoint(output, "motion")
    assert payload["artifact"]["clips"][0]["background"]["plate"].shape == (3, 32, 32)
    _ran_on_two_processes(tmp_path / "a.run")
    steps = [json.loads(line)["step"] for line in (tmp_path / "a.run" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # one writer
    composed = _vidrender("compose", "--character", str(output), "--background", str(output),
                          "-o", str(tmp_path / "c.mp4"), "--frames", "5")
    assert composed.returncode == 0, composed.stderr
    assert probe(tmp_path / "c.mp4").frame_count == 5


def test_scene_train_on_two_processes(tmp_path):
    made = _vidrender("scene", "dataset", str(tmp_path / "bend"), "--views", "4", "--timesteps", "4", "--size", "32")
    assert made.returncode == 0, made.stderr
    output = tmp_path / "s.pt"
    result = _launch("--multi_gpu", "--num_processes", "2", "-m", "vidrender", "scene", "train",
                     str(tmp_path / "bend"), "-o", str(output), "--config", str(REPO / "configs/scene3d/cpu.yaml"),
                     "--steps", "2", "--set", "train.batch_size=2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(output)]
    payload = load_checkpoint(output, "scene3d")
    assert payload["config"]["model"]["image_size"] == 32
    _ran_on_two_processes(tmp_path / "s.run")
    image = sorted((tmp_path / "bend-test" / "bend").glob("*.png"))[0]
    rendered = _vidrender("scene", "render", str(output), "--image", str(image), "-o", str(tmp_path / "v.png"))
    assert rendered.returncode == 0, rendered.stderr


TOY_RUN = """
import sys
sys.path.insert(0, {tests!r})
from accelerate.state import PartialState
from toy_task import ToyTask
from vidrender.config import TrainConfig
from vidrender.train import train


class RankTask(ToyTask):
    def training_loss(self, model, batch, step):
        loss, logs = super().training_loss(model, batch, step)
        return loss, {{**logs, "rank": float(PartialState().process_index)}}


config = TrainConfig(steps=3, batch_size=8, lr=1e-2, log_every=1, save_every=0, preview_every=0, tensorboard=False)
train(RankTask(), config, {run!r})
"""


def test_logged_scalars_are_means_over_the_processes(tmp_path):
    script = tmp_path / "toy_run.py"
    script.write_text(TOY_RUN.format(tests=str(TESTS), run=str(tmp_path / "run")))
    result = _launch("--multi_gpu", "--num_processes", "2", str(script))
    assert result.returncode == 0, result.stderr
    _ran_on_two_processes(tmp_path / "run")
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]
    for line in lines:
        assert line["rank"] == 0.5  # (0 + 1) / 2: every rank's value counts, not rank 0's alone
        # "mse" is each rank's own loss: its mean over ranks is the logged loss (also a mean over ranks)
        assert line["mse"] == pytest.approx(line["loss"], rel=1e-5)


@pytest.mark.parametrize("launcher, configured, expected", [("bf16", "no", "bf16"), ("no", "bf16", "bf16"),
                                                             (None, "no", "no")])
def test_mixed_precision_of_the_launcher_applies_unless_the_config_asks_for_one(
    tmp_path, monkeypatch, launcher, configured, expected
):
    # `accelerate launch --config_file configs/accelerate/gpus_bf16.yaml` hands its precision over this way
    if launcher is None:
        monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    else:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launcher)
    # accelerate's state is a process-wide singleton: one left by an earlier in-process run would decide
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        accelerator = make_accelerator(TrainConfig(mixed_precision=configured), tmp_path, cpu=True)
        assert accelerator.mixed_precision == expected
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
