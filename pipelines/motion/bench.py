"""Bench section `motion`: training and inference speed of pipeline `motion`, `compose` end to end, memory.

Rates are items per wall-clock second of the fastest timed run, at the current torch thread count, on
synthetic clips (`vidrender.synth.make_clip`); the model runs as the pipeline runs it (fp32, default
memory format) unless a figure says otherwise.

* training: pairs/s of one optimizer step as `vidrender/train.py` takes it (`MotionTask.training_loss`,
  backward, gradient clipping, Adam) on one batch of pairs, per variant, at 64 and 128 px. The batch is
  the config's default (quick mode: 2 pairs). The step is a late one (all loss terms on); the label-free
  variants get the clip's true motion as their "tracked" affines, so no OpenCV tracking is timed.
* inference: frames/s of the character encoder plus the layered render (`model.encoder`, `model.render`)
  of a clip under `torch.inference_mode`, in batches of about PIXELS_PER_BATCH pixels, at 64, 128 and
  256 px.
* Both with their FLOPs (`torch.utils.flop_counter`; convolutions and matrix products only), achieved
  FLOP/s as a fraction of the machine's measured fp32 matrix-product peak (`machine.peak_flops`), and
  the peak resident-memory increase of their first (FLOP-counting) run (`release_free_memory` first).
* compose: `vidrender compose` (the command's function, in process) at 128 px from two checkpoints of
  untrained models (speed does not depend on training) to H.264 `.mp4`: loading both checkpoints (there
  is no video to decode; the layers are in the checkpoints), compositing and encoding; and each stage
  timed alone. Beside it the classical baseline (`baseline.py`) decomposing and composing the same clip.
* options: the 64 px frame-pair training step and the 64 px inference in fp32, `channels_last`, bf16
  autocast and both, timed in turn; and how far bf16 moves the rendered frames (grey levels, 0-255).
  The pipeline uses none of these yet; the figures say which would pay.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from pipelines.motion.config import VARIANTS, DataConfig, InferConfig, MotionConfig
from pipelines.motion.data import Clip
from pipelines.motion.model import MotionModel
from pipelines.motion.task import MotionTask
from vidrender.bench.machine import peak_flops
from vidrender.bench.measure import achieved_fraction, model_flops, peak_memory, time_interleaved, time_it
from vidrender.bench.registry import bench_section
from vidrender.synth import make_clip

TRAIN_SIZES = (64, 128)
INFER_SIZES = (64, 128, 256)
COMPOSE_SIZE = 128
OPTIONS_SIZE = 64
# name -> (channels_last, bf16 autocast)
OPTIONS = {
    "fp32": (False, False),
    "channels_last": (True, False),
    "bf16": (False, True),
    "channels_last_bf16": (True, True),
}


# Inference batches: frames of this many pixels in all. Per frame, batches of 1-8 frames at 64 px ran at
# 190-240 frames/s and 64 frames at 83; at 128 px 1-4 frames at 80-90 and 16 at 22: once a batch's
# activations (32 channels, float32) leave the caches, every layer streams them through memory.
PIXELS_PER_BATCH = 2**15


def inference_batch(size: int) -> int:
    """Frames per inference batch at `size` x `size` px: PIXELS_PER_BATCH pixels, at least one frame."""
    return max(1, PIXELS_PER_BATCH // size**2)


@dataclass(frozen=True)
class Plan:
    """How much to measure. train_batch None: the config's default batch size. clip_frames: frames of
    the clips pairs are drawn from and checkpoints are made of; infer_frames: frames encoded and rendered
    per timed run; compose_frames: frames composed."""

    train_batch: int | None
    infer_frames: int
    clip_frames: int
    compose_frames: int
    repeats: int
    warmup: int
    max_seconds: float


FULL = Plan(train_batch=None, infer_frames=32, clip_frames=24, compose_frames=96, repeats=5, warmup=1, max_seconds=5.0)
QUICK = Plan(train_batch=2, infer_frames=4, clip_frames=8, compose_frames=8, repeats=1, warmup=0, max_seconds=0.0)


@bench_section("motion")
def motion_section(quick: bool) -> dict:
    """Training pairs/s per variant and size, inference frames/s per size, compose, baseline, options."""
    plan = QUICK if quick else FULL
    peak = peak_flops(quick)
    training = {
        variant: {f"{size}px": _figures(*training_step(variant, size, plan.train_batch, plan.clip_frames), peak, plan)
                  for size in TRAIN_SIZES}
        for variant in VARIANTS
    }
    inference = {f"{size}px": _figures(*inference_pass(size, plan.infer_frames), peak, plan,
                                       batch=min(inference_batch(size), plan.infer_frames))
                 for size in INFER_SIZES}
    with tempfile.TemporaryDirectory(prefix="vidrender-bench-motion-") as scratch:
        compose = compose_figures(Path(scratch), COMPOSE_SIZE, plan)
    return {
        "threads": torch.get_num_threads(),
        "training_pairs": training,
        "inference_frames": inference,
        "compose": compose,
        "classical_baseline": baseline_figures(COMPOSE_SIZE, plan),
        f"options_{OPTIONS_SIZE}px": options_figures(OPTIONS_SIZE, plan),
    }


def _figures(fn: Callable[[], object], items: int, peak: float, plan: Plan, batch: int | None = None) -> dict:
    """Rate, FLOPs and memory of `fn`, which handles `items` pairs or frames per call, `batch` at a time
    (default: all at once).

    The FLOP-counting run comes first and doubles as the warm-up (oneDNN builds its kernels on first use).
    """
    release_free_memory()
    counted = peak_memory(lambda: model_flops(fn))
    timing = time_it(fn, plan.repeats, warmup=0, max_seconds=plan.max_seconds)
    return {
        "per_s": timing.rate(items),
        "batch": batch or items,
        "ms_per_item": timing.min / items * 1e3,
        "gflop_per_item": counted.result / items / 1e9,
        "achieved_gflops": counted.result / timing.min / 1e9,
        "fraction_of_peak": achieved_fraction(counted.result, timing.min, peak),
        "peak_rss_increase_mib": counted.increase_mib,
    }


def release_free_memory() -> None:
    """Hand the C heap's free memory back to the system (glibc `malloc_trim`) before a peak-memory figure.

    Memory freed by earlier measurements stays in the process and is reused without raising its resident
    size, so without this a figure counts only what goes beyond it: the same 64 px training step measured
    369 MiB first and 144 MiB fourth, and 351-443 MiB every time with it. Without glibc it does nothing
    and the figures are lower bounds.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _precision(bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _memory_format(tensor: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return tensor.contiguous(memory_format=torch.channels_last) if channels_last and tensor.dim() == 4 else tensor


def training_step(variant: str, size: int, batch_size: int | None = None, clip_frames: int = 24,
                  channels_last: bool = False, bf16: bool = False, seed: int = 0) -> tuple[Callable[[], float], int]:
    """(step, pairs per step): `step()` runs one optimizer step of `variant` at `size` px on a fixed batch
    of pairs of a synthetic clip of `clip_frames` frames and returns the loss; the batch holds
    `batch_size` pairs (default: the config's). channels_last / bf16: run the model in that memory
    format / under bf16 autocast (loss and backward included)."""
    config = MotionConfig(variant=variant, data=DataConfig(size=size))
    batch_size = batch_size or config.train.batch_size
    synth = make_clip(seed=seed, size=size, frames=clip_frames)
    motion = synth.affines.float()
    known = motion if variant == "known" else None
    task = MotionTask(config, [Clip(frames=synth.frames, affines=known, fps=synth.fps)],
                      tracked=[None if variant == "known" else motion])
    dataset = task.build_dataset()
    if len(dataset) < batch_size:
        raise ValueError(f"a {clip_frames}-frame clip has {len(dataset)} pairs, fewer than a batch of {batch_size}")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:batch_size]
    batch = torch.utils.data.default_collate([dataset[index] for index in order.tolist()])
    batch = {key: _memory_format(value, channels_last) for key, value in batch.items()}
    torch.manual_seed(seed)
    model = task.build_model()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    late_step = config.train.steps - 1

    def step() -> float:
        with _precision(bf16):
            loss, _ = task.training_loss(model, batch, late_step)
        optimizer.zero_grad()
        loss.backward()
        if config.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
        optimizer.step()
        return loss.item()

    return step, batch_size


def inference_pass(size: int, count: int, channels_last: bool = False, bf16: bool = False,
                   seed: int = 0) -> tuple[Callable[[], torch.Tensor], int]:
    """(run, frames per run): `run()` encodes `count` frames of a synthetic clip at `size` px with an
    untrained default model's f_c and renders each moved by its true affine over the plate, in batches of
    `inference_batch(size)` frames (`encode_and_render`); returns the rendered frames (count, 3, size,
    size) float32."""
    config = MotionConfig()
    torch.manual_seed(seed)
    model = MotionModel(config.model, config.variant, 1, size).eval()
    synth = make_clip(seed=seed, size=size, frames=count)
    frames = _memory_format(synth.frames.float(), channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    affines = synth.affines.float()
    return (lambda: encode_and_render(model, frames, affines, inference_batch(size), bf16)), count


def encode_and_render(model: MotionModel, frames: torch.Tensor, affines: torch.Tensor, batch: int,
                      bf16: bool = False) -> torch.Tensor:
    """f_c of frames (T, 3, S, S) at the model's size S, then the layered render of each moved by its affine
    (T, 2, 3) over clip 0's plate, `batch` frames at a time under `torch.inference_mode` (bf16: under bf16
    autocast). Returns the rendered frames (T, 3, S, S) float32."""
    rendered = []
    with torch.inference_mode(), _precision(bf16):
        for chunk, moves in zip(frames.split(batch), affines.split(batch), strict=True):
            features = model.encoder(chunk)
            clips = torch.zeros(chunk.shape[0], dtype=torch.long)
            rendered.append(model.render(chunk, features, moves, clips)["frame"].float())
    return torch.cat(rendered)


def untrained_checkpoint(path: Path, size: int, frames: int, seed: int) -> Path:
    """Write a motion checkpoint of an untrained `known`-variant model on a synthetic clip of `frames`
    frames at `size` px; its layers (plate, character, affines) come from `MotionTask.artifact` with the
    fits cut to one step. Good for timing `compose`, which only moves and composites the layers."""
    from pipelines.motion.cli import PIPELINE
    from vidrender.config import to_dict
    from vidrender.io.checkpoint import save_checkpoint

    config = MotionConfig(variant="known", data=DataConfig(size=min(size, 64)),
                          infer=InferConfig(refine_steps=1, rounds=1))
    synth = make_clip(seed=seed, size=size, frames=frames)
    task = MotionTask(config, [Clip(frames=synth.frames, affines=synth.affines.float(), fps=synth.fps)])
    torch.manual_seed(seed)
    model = task.build_model()
    return save_checkpoint(path, PIPELINE, to_dict(config), model.state_dict(), task.artifact(model))


def compose_command(character: Path, background: Path, output: Path, frames: int) -> Callable[[], None]:
    """`vidrender compose --character C --background B -o OUT --frames N` in process (its printed path
    swallowed)."""
    from pipelines.motion import cli

    def run() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            cli.compose(character=character, background=background, output=output, frames=frames)

    return run


def compose_figures(scratch: Path, size: int, plan: Plan) -> dict:
    """Compose frames/s end to end at `size` px to .mp4, and the milliseconds of its three stages."""
    from pipelines.motion import compose as composing
    from pipelines.motion.cli import PIPELINE
    from pipelines.motion.layers import clip_entry
    from vidrender.io.checkpoint import load_checkpoint
    from vidrender.io.video_write import write_video

    character = untrained_checkpoint(scratch / "character.pt", size, plan.clip_frames, seed=1)
    background = untrained_checkpoint(scratch / "background.pt", size, plan.clip_frames, seed=2)
    output = scratch / "composed.mp4"
    count = plan.compose_frames
    end_to_end = compose_command(character, background, output, count)
    release_free_memory()
    memory = peak_memory(end_to_end)

    def load() -> tuple[dict, dict]:
        return tuple(clip_entry(load_checkpoint(path, PIPELINE), 0, str(path)) for path in (character, background))

    char_entry, back_entry = load()
    path, fps = composing.motion_path("source", char_entry, back_entry)
    affines = composing.retime(path, fps, fps, count, 1.0)
    video = composing.compose_frames(char_entry, back_entry, affines)
    stages = {
        "load_checkpoints": load,
        "composite": lambda: composing.compose_frames(char_entry, back_entry, affines),
        "encode_mp4": lambda: write_video(output, video, fps),
    }
    timings = {name: time_it(fn, plan.repeats, warmup=0, max_seconds=plan.max_seconds) for name, fn in stages.items()}
    whole = time_it(end_to_end, plan.repeats, warmup=0, max_seconds=plan.max_seconds)
    return {
        "fps": whole.rate(count),
        "frames": count,
        "size_px": size,
        "stages_ms": {name: timing.min * 1e3 for name, timing in timings.items()},
        "composite_fps": timings["composite"].rate(count),
        "encode_fps": timings["encode_mp4"].rate(count),
        "peak_rss_increase_mib": memory.increase_mib,
    }


def baseline_figures(size: int, plan: Plan) -> dict:
    """The classical baseline (`baseline.baseline_compose`: median plates, difference matte, OpenCV
    tracking, cut-and-paste) on two synthetic clips of `plan.clip_frames` frames at `size` px, in frames/s
    of the output (encoding not included)."""
    from pipelines.motion.baseline import baseline_compose

    character = make_clip(seed=1, size=size, frames=plan.clip_frames).frames
    background = make_clip(seed=2, size=size, frames=plan.clip_frames).frames
    timing = time_it(lambda: baseline_compose(character, background), plan.repeats, warmup=0,
                     max_seconds=plan.max_seconds)
    return {"fps": timing.rate(plan.clip_frames), "frames": plan.clip_frames, "size_px": size,
            "seconds": timing.min}


def options_figures(size: int, plan: Plan) -> dict:
    """Frame-pair training pairs/s and inference frames/s at `size` px for every entry of OPTIONS (timed in
    turn), and the mean and largest change bf16 autocast makes to the rendered frames, in grey levels."""
    steps = {name: training_step("frame-pair", size, plan.train_batch, plan.clip_frames, *flags)
             for name, flags in OPTIONS.items()}
    passes = {name: inference_pass(size, plan.infer_frames, *flags) for name, flags in OPTIONS.items()}
    training = time_interleaved({name: fn for name, (fn, _) in steps.items()}, plan.repeats, plan.warmup,
                                plan.max_seconds)
    inference = time_interleaved({name: fn for name, (fn, _) in passes.items()}, plan.repeats, plan.warmup,
                                 plan.max_seconds)
    pairs, frames = next(iter(steps.values()))[1], next(iter(passes.values()))[1]
    change = (passes["bf16"][0]() - passes["fp32"][0]()).abs() * 255
    return {
        "training_pairs_per_s": {name: timing.rate(pairs) for name, timing in training.items()},
        "inference_frames_per_s": {name: timing.rate(frames) for name, timing in inference.items()},
        "bf16_render_change_mean": change.mean().item(),
        "bf16_render_change_max": change.max().item(),
    }
