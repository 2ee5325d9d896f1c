"""The shared accelerate training loop: learning, exact resume, NaN stop, previews, two CPU processes."""

import json

import pytest
import torch
from accelerate import debug_launcher
from accelerate.state import AcceleratorState, PartialState
from toy_task import ToyRegression, ToyTask

from vidrender.config import TrainConfig
from vidrender.errors import UserError
from vidrender.train import NonFiniteLoss, check_process_count, latest_checkpoint, learning_rate, train


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate keeps process-wide singletons; each test starts from a clean one."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _config(**changes) -> TrainConfig:
    settings = dict(steps=40, batch_size=8, lr=1e-2, save_every=12, preview_every=0, log_every=10)
    settings.update(changes)
    return TrainConfig(**settings)


def _mse(model) -> float:
    data = ToyRegression()
    with torch.no_grad():
        return torch.nn.functional.mse_loss(model(data.x), data.y).item()


def test_loss_falls_and_run_folder_is_complete(tmp_path):
    untrained = ToyTask().build_model()
    torch.manual_seed(0)
    model = train(ToyTask(), _config(preview_every=20), tmp_path / "run")
    assert _mse(model) < 0.5 * _mse(untrained)
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [10, 20, 30, 40]
    assert lines[-1]["loss"] < lines[0]["loss"]
    assert latest_checkpoint(tmp_path / "run").name == "step_00000040"
    previews = sorted(p.name for p in (tmp_path / "run" / "previews").iterdir())
    assert previews == ["final.png", "step_00000020.png", "step_00000040.png"]
    # only the newest `keep_checkpoints` survive and no partial folder is left
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step_00000036", "step_00000040"]


class StepRecordingTask(ToyTask):
    """ToyTask that records the step of every `training_loss` call."""

    def __init__(self):
        super().__init__()
        self.steps: list[int] = []

    def training_loss(self, model, batch, step):
        self.steps.append(step)
        return super().training_loss(model, batch, step)


def test_resume_mid_epoch_matches_uninterrupted_run(tmp_path):
    # 64 items / batch 8 = 8 steps per epoch: stopping at 12 stops in the middle of the second epoch
    straight = train(ToyTask(), _config(), tmp_path / "straight")
    AcceleratorState._reset_state(reset_partial_state=True)
    train(ToyTask(), _config(steps=12), tmp_path / "split")
    AcceleratorState._reset_state(reset_partial_state=True)
    task = StepRecordingTask()
    resumed = train(task, _config(), tmp_path / "split", resume=True)
    # the resumed run starts at the checkpoint's step 12: a run restarted from step 0 (same seed) would
    # reach the same weights, so only the steps it trained and logged tell the two apart
    assert task.steps == list(range(12, 40))
    lines = [json.loads(line) for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [10, 12, 20, 30, 40]
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no checkpoint"):
        train(ToyTask(), _config(), tmp_path / "empty", resume=True)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    train(ToyTask(), _config(steps=12), run)
    good = latest_checkpoint(run)
    before = {p.name: p.stat().st_mtime_ns for p in good.iterdir()}
    AcceleratorState._reset_state(reset_partial_state=True)
    with pytest.raises(NonFiniteLoss, match="step 15"):
        train(ToyTask(nan_at_step=15), _config(save_every=4), run, resume=True)
    # step 16 would have been saved had the run gone on; the good checkpoint is untouched
    assert latest_checkpoint(run) == good
    assert {p.name: p.stat().st_mtime_ns for p in good.iterdir()} == before


def test_world_size_disagreement_fails_fast(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="WORLD_SIZE=2 but accelerate sees 1"):
        check_process_count(1)
    check_process_count(2)
    monkeypatch.delenv("WORLD_SIZE")
    check_process_count(1)


def _two_process_run(run_dir):
    model = train(ToyTask(), _config(steps=10, save_every=0), run_dir, cpu=True)
    rank = PartialState().process_index
    torch.save(model.state_dict(), run_dir.parent / f"weights_rank{rank}.pt")


def test_two_processes_on_cpu_agree_and_write_one_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    debug_launcher(_two_process_run, args=(run_dir,), num_processes=2)
    rank0 = torch.load(tmp_path / "weights_rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "weights_rank1.pt", weights_only=True)
    initial = ToyTask().build_model().state_dict()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
        assert not torch.equal(rank0[name], initial[name])  # they trained, not merely started alike
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step_00000010"]
    logged = (run_dir / "log.jsonl").read_text().splitlines()
    assert len(logged) == 1  # written once, by the main process


@pytest.mark.parametrize("changes", [{"grad_accum": 2}, {"mixed_precision": "bf16"}])
def test_accumulation_and_mixed_precision_still_learn(tmp_path, changes):
    untrained = ToyTask().build_model()
    model = train(ToyTask(), _config(steps=30, save_every=0, **changes), tmp_path / "run")
    assert _mse(model) < 0.6 * _mse(untrained)
    logged = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert logged == [10, 20, 30]  # steps count optimizer updates, not micro-batches


def test_cosine_schedule_runs_from_lr_to_final_fraction_and_is_logged(tmp_path):
    config = _config(lr_schedule="cosine", lr_final=0.1)
    rates = [learning_rate(config, step) for step in range(config.steps)]
    assert rates[0] == pytest.approx(1e-2) and rates[-1] == pytest.approx(1e-3)
    assert all(later < earlier for earlier, later in zip(rates, rates[1:], strict=False))
    assert learning_rate(_config(), 39) == learning_rate(_config(), 0) == 1e-2
    train(ToyTask(), config, tmp_path / "run")
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [line["lr"] for line in logged] == pytest.approx([rates[line["step"] - 1] for line in logged])


@pytest.mark.parametrize("change", [{"lr_schedule": "linear"}, {"lr_final": 1.5}])
def test_bad_schedule_settings_are_refused(change):
    with pytest.raises(UserError, match=next(iter(change))):
        _config(**change)


def test_every_pipeline_task_implements_the_whole_protocol():
    """`TrainTask` names every step a pipeline gives the loop, down to the artifact a command saves."""
    from toy_task import ToyTask

    from vidrender.pipelines.motion.task import MotionTask
    from vidrender.pipelines.scene3d.task import Scene3dTask
    from vidrender.train import TrainTask

    steps = [name for name in vars(TrainTask) if not name.startswith("_") and callable(getattr(TrainTask, name))]
    assert {"build_model", "build_dataset", "training_loss", "preview", "artifact"} <= set(steps)
    for task in (MotionTask, Scene3dTask, ToyTask):
        assert all(callable(getattr(task, step, None)) for step in steps), task
