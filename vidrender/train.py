"""The one training loop shared by every pipeline, written on accelerate.

A pipeline hands the loop a `TrainTask` (model, data set, loss, preview, artifact); the loop owns
everything else: devices and processes (`accelerator.prepare`), gradient accumulation, mixed precision,
clipping, seeds, a rich progress bar and logs on the main process, TensorBoard scalars when installed,
preview images, training-state checkpoints for `--resume`, and the final model.

Run folder layout (`run_dir`)::

    checkpoints/step_00000500/   accelerate save_state (model, optimizer, RNG, loop position)
    previews/step_00000250.png   task.preview() image grids
    log.jsonl                    one JSON line of scalars per logged step
    tensorboard/                 when the tensorboard package is installed

Checkpoint folders are written under a temporary name and renamed when complete, so a run killed
mid-save (even by SIGKILL) keeps its previous checkpoint; they are named by step rather than by
accelerate's automatic counter, which `load_state` does not restore (docs/design.md section 4). A non-finite
loss stops the run before anything is saved over the last good checkpoint.

Failing early and cleanly:
* Before the first step every process checks that the run folder can be created and written and that
  its disk has room for `keep_checkpoints + 1` training states (about 3x the model's size each: weights
  and Adam's two moments) plus MIN_FREE_BYTES (for the final `.pt`, previews and logs); a save that
  still fails (the disk filled up meanwhile) is a one-line error that keeps the previous checkpoint.
* Ctrl-C (SIGINT), SIGTERM or SIGHUP asks the loop to stop at the end of the current optimizer step,
  where it saves a checkpoint and raises `Interrupted`; all processes agree on the step to stop at. A
  second signal stops at once without saving (the last checkpoint is kept). The partial checkpoint
  folders a SIGKILL leaves are removed when the next run starts.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from vidrender.config import TrainConfig
from vidrender.errors import Interrupted, UserError
from vidrender.io.outputs import Output, check_writable, claim_outputs, launched_main_process
from vidrender.schedule import cosine

CHECKPOINT_PREFIX = "step_"
# Free space a run needs beyond its training checkpoints: the final .pt (a motion artifact holds plates
# and character layers at the clip's native size), previews and logs. A floor, not a guarantee.
MIN_FREE_BYTES = 100 * 1024**2


class TrainTask(Protocol):
    """What a pipeline gives the loop. Batches are dicts of tensors (default collate)."""

    name: str

    def build_model(self) -> torch.nn.Module: ...

    def build_dataset(self) -> torch.utils.data.Dataset: ...

    def training_loss(self, model: torch.nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        """Scalar loss to minimise and named float logs; `step` counts optimizer steps from 0."""
        ...

    def preview(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        """(3, H, W) image grid in [0, 1] for humans to follow training."""
        ...

    def artifact(self, model: torch.nn.Module) -> dict:
        """What inference needs without the training data (tensors and JSON-able values), from the trained
        model: the checkpoint's `artifact`."""
        ...


@dataclass
class _LoopPosition:
    """The loop's own resumable state, saved inside accelerate's checkpoint folder."""

    step: int = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite; the run stopped without overwriting a checkpoint."""


def make_accelerator(config: TrainConfig, run_dir: Path, cpu: bool = False) -> Accelerator:
    """An Accelerator for this run; fails fast if the launcher and accelerate disagree on processes.

    Mixed precision is `train.mixed_precision` when that is fp16 or bf16, else the launcher's setting
    (`no` without a launcher).
    """
    log_with = None
    if config.tensorboard:
        try:
            import tensorboard  # noqa: F401  (optional dependency: only its presence matters)

            log_with = "tensorboard"
        except ImportError:
            pass
    # Without cpu=True, processes launched on a machine with no GPU each believe they are alone; with
    # it they join one gloo group. So a machine without CUDA always trains on the CPU.
    use_cpu = cpu or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    accelerator = Accelerator(
        cpu=use_cpu or not torch.cuda.is_available(),
        # None defers to the launcher (`accelerate launch --mixed_precision` or its config file's value);
        # an explicit "no" would silently override e.g. configs/accelerate/gpus_bf16.yaml
        mixed_precision=None if config.mixed_precision == "no" else config.mixed_precision,
        gradient_accumulation_steps=config.grad_accum,
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "tensorboard")),
        # the sampler's shuffle order is a function of (seed, epoch), so a resumed run sees the same data
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
    )
    check_process_count(accelerator.num_processes)
    return accelerator


def check_process_count(num_processes: int) -> None:
    """Fail fast when the launcher started WORLD_SIZE processes but accelerate joined a different number.

    Processes that each believe they are alone would train the same thing twice and race to write the
    same files (e.g. a launcher configured for GPUs on a machine whose GPUs accelerate cannot use).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size != num_processes:
        raise UserError(
            f"WORLD_SIZE={world_size} but accelerate sees {num_processes} process(es); "
            "on CPU use: ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N ..."
        )


# everything `train` writes in a run folder: with --overwrite, a run folder holding anything else is kept
RUN_FOLDER_NAMES = re.compile(r"checkpoints|previews|log\.jsonl|tensorboard")


def run_folder(output: str | Path) -> Path:
    """The run folder a training command keeps beside its checkpoint: NAME.run for NAME.pt."""
    output = Path(output)
    return output.with_name(output.stem + ".run")


@contextlib.contextmanager
def claimed_training_outputs(output: Path, inputs: Sequence[Path], resume: bool, overwrite: bool) -> Iterator[Path]:
    """The output policy (`vidrender.io.outputs`) for a training command writing checkpoint `output`.

    Claims the checkpoint and, unless resuming, a fresh run folder: an earlier run's folder is continued
    only with `resume` and replaced only with `overwrite` (so two runs never mix checkpoints or logs).
    Yields the run folder.
    """
    run_dir = run_folder(output)
    if run_dir.exists() and not (resume or overwrite):
        raise UserError(f"{run_dir}: an earlier run's folder is there; pass --resume to continue that run or "
                        "--overwrite to start again")
    outputs = [Output(output), *([] if resume else [Output(run_dir, folder=True, own_names=RUN_FOLDER_NAMES)])]
    with claim_outputs(outputs, inputs, overwrite):
        if not resume and run_dir.exists() and launched_main_process():
            shutil.rmtree(run_dir)
        yield run_dir


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder in `run_dir/checkpoints`, or None."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    done = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX))
    return done[-1] if done else None


def _save_state(accelerator: Accelerator, run_dir: Path, step: int, keep: int) -> None:
    """save_state into a temporary folder, then rename it complete; prune to the newest `keep`."""
    folder = run_dir / "checkpoints"
    final = folder / f"{CHECKPOINT_PREFIX}{step:08d}"
    partial = folder / f".partial_{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(partial))
    except Exception as err:  # OSError, torch's RuntimeError, SafetensorError: whatever a full disk raises
        shutil.rmtree(partial, ignore_errors=True)
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise UserError(
            f"{run_dir}: could not save the checkpoint of step {step} ({reason}); the previous one is kept"
        ) from err
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        complete = sorted(p for p in folder.iterdir() if p.name.startswith(CHECKPOINT_PREFIX))
        for old in complete[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


class _StopRequest:
    """Turns Ctrl-C, SIGTERM and SIGHUP into a request the loop honours at a step boundary (module doc).

    Only the main thread may set signal handlers; elsewhere the signals keep their previous behaviour.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.requested = False
        self.signum = signal.SIGINT
        self._previous = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc_info) -> bool:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise Interrupted(f"interrupted by {signal.Signals(signum).name} again; the last checkpoint is kept",
                              signum)
        self.requested = True
        self.signum = signum

    def agreed(self, accelerator: Accelerator) -> bool:
        """True on every process once any process was asked to stop (one tiny all-reduce per step)."""
        if accelerator.num_processes == 1:
            return self.requested
        flag = torch.tensor([1.0 if self.requested else 0.0], device=accelerator.device)
        return accelerator.reduce(flag, reduction="sum").item() > 0


def _truncate_log(log_path: Path, step: int) -> None:
    """Drop log lines after `step` (written after the checkpoint a run resumes from) and any torn last line."""
    if not log_path.is_file():
        return
    from vidrender.io.atomic import atomic_path

    kept = []
    for line in log_path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
    with atomic_path(log_path) as tmp:
        tmp.write_text("".join(kept))


def _mean_over_processes(accelerator: Accelerator, logs: dict) -> dict[str, float]:
    """Each named scalar averaged over all processes (every process logs the same names)."""
    if accelerator.num_processes == 1 or not logs:
        return {name: float(value) for name, value in logs.items()}
    values = torch.tensor([float(value) for value in logs.values()], device=accelerator.device)
    return dict(zip(logs, accelerator.reduce(values, reduction="mean").tolist(), strict=True))


def _save_preview(image: torch.Tensor, path: Path) -> None:
    from vidrender.io.images import write_image

    array = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    write_image(path, array)


def train(
    task: TrainTask,
    config: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    cpu: bool = False,
    console: Console | None = None,
) -> torch.nn.Module:
    """Train `task.build_model()` for `config.steps` optimizer steps; returns the unwrapped model.

    Every process runs this function; only the main process prints and writes files. With `resume`,
    training continues from the newest checkpoint in `run_dir` (model, optimizer, RNG, step, data
    position); without it, an existing run folder's checkpoints are left alone but not used.
    Logged scalars are means over processes. Raises UserError when the run folder is not writable or
    its disk too full (before training); raises `Interrupted` when stopped by a signal (after saving).
    """
    run_dir = Path(run_dir)
    console = console or Console(stderr=True)
    accelerator = make_accelerator(config, run_dir, cpu=cpu)
    set_seed(config.seed)
    model = task.build_model()
    model_bytes = sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values())
    check_writable(run_dir, MIN_FREE_BYTES + (config.keep_checkpoints + 1) * 3 * model_bytes)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    dataset = task.build_dataset()
    if len(dataset) < config.batch_size * accelerator.num_processes:
        raise UserError(
            f"only {len(dataset)} training items, fewer than one batch of {config.batch_size} per process"
        )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=config.num_workers,
        # a loader without its own generator draws worker seeds from the global RNG each epoch, which a
        # resumed run would draw at a different moment than an uninterrupted one
        generator=torch.Generator().manual_seed(config.seed),
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    position = _LoopPosition()
    accelerator.register_for_checkpointing(position)

    if resume:
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            raise UserError(f"--resume: no checkpoint in {run_dir / 'checkpoints'} to resume from")
        accelerator.load_state(str(checkpoint))
        if accelerator.is_main_process:
            console.print(f"resumed from {checkpoint} at step {position.step}")
    log_path = run_dir / "log.jsonl"
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        for partial in (run_dir / "checkpoints").glob(".partial_*"):
            shutil.rmtree(partial, ignore_errors=True)  # a save cut short by a kill
        if resume:
            _truncate_log(log_path, position.step)
    if accelerator.log_with:
        accelerator.init_trackers(task.name)

    batches_per_epoch = len(loader) // config.grad_accum
    if batches_per_epoch == 0:
        raise UserError(f"grad_accum={config.grad_accum} is larger than the {len(loader)} batches per epoch")
    epoch, skip = divmod(position.step, batches_per_epoch)
    model.train()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("{task.fields[rate]:.2f} steps/s"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not accelerator.is_main_process,
    )
    last_batch = None
    saved_step = position.step if resume else None
    with _StopRequest() as stop, progress:
        bar = progress.add_task(f"train {task.name}", total=config.steps, completed=position.step, rate=0.0,
                                loss=float("nan"))
        started, started_step = time.perf_counter(), position.step
        while position.step < config.steps:
            loader.set_epoch(epoch)
            epoch_loader = accelerator.skip_first_batches(loader, skip * config.grad_accum) if skip else loader
            skip = 0
            micro = 0
            for batch in epoch_loader:
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(config, position.step)
                with accelerator.accumulate(model):
                    loss, logs = task.training_loss(model, batch, position.step)
                    _stop_if_not_finite(accelerator, loss, position.step)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and config.grad_clip > 0:
                        accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
                    optimizer.step()
                    optimizer.zero_grad()
                micro += 1
                if micro % config.grad_accum:
                    continue
                position.step += 1
                last_batch = batch
                step = position.step
                loss_value = accelerator.reduce(loss.detach(), reduction="mean").item()
                rate = (step - started_step) / max(time.perf_counter() - started, 1e-9)
                progress.update(bar, completed=step, rate=rate, loss=loss_value)
                if step % config.log_every == 0 or step == config.steps:
                    rate_used = optimizer.param_groups[0]["lr"]  # what the step took, as set above
                    scalars = {"loss": loss_value, "lr": rate_used, **_mean_over_processes(accelerator, logs)}
                    accelerator.log(scalars, step=step)
                    if accelerator.is_main_process:
                        with log_path.open("a") as log:
                            log.write(json.dumps({"step": step, **scalars}) + "\n")
                if config.preview_every and step % config.preview_every == 0 and accelerator.is_main_process:
                    with torch.no_grad():
                        image = task.preview(accelerator.unwrap_model(model), batch)
                    _save_preview(image, run_dir / "previews" / f"step_{step:08d}.png")
                if config.save_every and step % config.save_every == 0 and step < config.steps:
                    _save_state(accelerator, run_dir, step, config.keep_checkpoints)
                    saved_step = step
                if stop.agreed(accelerator):
                    if saved_step != step:
                        _save_state(accelerator, run_dir, step, config.keep_checkpoints)
                    raise Interrupted(f"interrupted at step {step}; saved, continue with --resume", stop.signum)
                if step >= config.steps:
                    break
            epoch += 1
    _save_state(accelerator, run_dir, position.step, config.keep_checkpoints)
    if config.preview_every and accelerator.is_main_process and last_batch is not None:
        with torch.no_grad():
            _save_preview(task.preview(accelerator.unwrap_model(model), last_batch), run_dir / "previews" / "final.png")
    accelerator.end_training()
    model = accelerator.unwrap_model(model)
    model.eval()
    return model


def learning_rate(config: TrainConfig, step: int) -> float:
    """The rate of optimizer step `step` (0-based) under `config.lr_schedule` (`vidrender.schedule`)."""
    if config.lr_schedule == "constant":
        return config.lr
    return cosine(step, config.steps, config.lr, config.lr_final)


def _stop_if_not_finite(accelerator: Accelerator, loss: torch.Tensor, step: int) -> None:
    """Stop every process together when any rank's loss is NaN/inf (checked before backward)."""
    bad = torch.tensor([0.0 if math.isfinite(loss.item()) else 1.0], device=loss.device)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    if bad.item() > 0:
        raise NonFiniteLoss(
            f"loss became non-finite at step {step}; stopped without saving (last good checkpoint kept). "
            "Try a lower train.lr or train.mixed_precision=no"
        )
