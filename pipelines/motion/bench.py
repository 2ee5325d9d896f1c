"""Bench section `motion`: what the commands of pipeline `motion` cost: the training step of `train`,
`export` and `compose` end to end, with their stages, and memory.

Rates are items per wall-clock second of the fastest timed run, at the current torch thread count, on
synthetic clips (`vidrender.synth.make_clip`); everything runs as the commands run it (fp32, default
memory format). Checkpoints are of untrained `known`-variant models whose layers were fitted with one
refinement step (`untrained_checkpoint`): what `export` and `compose` do with the layers does not
depend on how well they were trained.

* training_pairs: pairs/s of one optimizer step as `vidrender train` takes it (`vidrender/train.py`:
  `MotionTask.training_loss`, backward, gradient clipping, Adam) on one batch of pairs, per variant, at
  64 and 128 px. The batch is the config's default (quick mode: 2 pairs). The step is a late one (all
  loss terms on); the label-free variants get the clip's true motion as their "tracked" affines, so no
  OpenCV tracking is timed. With its FLOPs (`torch.utils.flop_counter`; convolutions and matrix products
  only), the achieved FLOP/s as a fraction of the machine's measured fp32 matrix-product peak
  (`machine.peak_flops`), and the peak resident-memory increase of its first (FLOP-counting) run
  (`release_free_memory` first).
* export: frames/s of `vidrender export MODEL.pt -o DIR` (the command's function, in process, its
  printed path swallowed) end to end, each run into a fresh temporary folder deleted after it (untimed),
  at 64, 128 and 256 px: loading the checkpoint, moving the character layer to every frame, writing
  `character/` and `alpha/` PNGs (plus background.png and the JSON files). Beside it each stage timed
  alone (`load_checkpoint`: `load_stack`; `move_layers`: `CharacterLayer.moved`; `write_pngs`: the same
  PNG files as `export`), the number of PNG files one run wrote, and the peak resident-memory increase of
  its first run.
* compose: frames/s of `vidrender compose --character A.pt --background B.pt -o OUT.mp4 --frames N`
  (in process, output swallowed) at 128 px to H.264 `.mp4`: loading both checkpoints (there is no video
  to decode; the layers are in the checkpoints), compositing (`composing.compose`) and encoding
  (`write_video`); each stage timed alone, and the peak resident-memory increase of its first run.
* classical_baseline: the classical baseline (`baseline.py`) decomposing and composing the same clip.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from vidrender.bench.machine import peak_flops
from vidrender.bench.measure import achieved_fraction, model_flops, peak_memory, time_it
from vidrender.bench.registry import bench_section
from vidrender.pipelines.motion.config import VARIANTS, DataConfig, InferConfig, MotionConfig
from vidrender.pipelines.motion.data import Clip
from vidrender.pipelines.motion.decomposition import Decomposition
from vidrender.pipelines.motion.predictors import PREDICTORS
from vidrender.pipelines.motion.stack import LayerStack, character_file_names, write_layer_frames
from vidrender.pipelines.motion.task import MotionTask
from vidrender.synth import make_clip

TRAIN_SIZES = (64, 128)
EXPORT_SIZES = (64, 128, 256)
COMPOSE_SIZE = 128


@dataclass(frozen=True)
class Plan:
    """How much to measure. train_batch None: the config's default batch size. clip_frames: frames of
    the clips training pairs are drawn from and of the checkpoints composed; export_frames: frames of the
    checkpoints exported; compose_frames: frames composed."""

    train_batch: int | None
    clip_frames: int
    export_frames: int
    compose_frames: int
    repeats: int
    max_seconds: float


FULL = Plan(train_batch=None, clip_frames=24, export_frames=32, compose_frames=96, repeats=5, max_seconds=5.0)
QUICK = Plan(train_batch=2, clip_frames=8, export_frames=4, compose_frames=8, repeats=1, max_seconds=0.0)


@bench_section("motion")
def motion_section(quick: bool) -> dict:
    """Training pairs/s per variant and size, export frames/s per size, compose frames/s, the baseline."""
    plan = QUICK if quick else FULL
    peak = peak_flops(quick)
    training = {
        variant: {f"{size}px": _figures(*training_step(variant, size, plan.train_batch, plan.clip_frames), peak, plan)
                  for size in TRAIN_SIZES}
        for variant in VARIANTS
    }
    with tempfile.TemporaryDirectory(prefix="vidrender-bench-motion-") as scratch:
        export = {f"{size}px": export_figures(Path(scratch), size, plan) for size in EXPORT_SIZES}
        compose = compose_figures(Path(scratch), COMPOSE_SIZE, plan)
    return {
        "threads": torch.get_num_threads(),
        "training_pairs": training,
        "export": export,
        "compose": compose,
        "classical_baseline": baseline_figures(COMPOSE_SIZE, plan),
    }


def _figures(fn: Callable[[], object], items: int, peak: float, plan: Plan) -> dict:
    """Rate, FLOPs and memory of `fn`, which handles `items` pairs per call.

    The FLOP-counting run comes first and doubles as the warm-up (oneDNN builds its kernels on first use).
    """
    release_free_memory()
    counted = peak_memory(lambda: model_flops(fn))
    timing = time_it(fn, plan.repeats, warmup=0, max_seconds=plan.max_seconds)
    return {
        "per_s": timing.rate(items),
        "batch": items,
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


def training_step(variant: str, size: int, batch_size: int | None = None, clip_frames: int = 24,
                  seed: int = 0) -> tuple[Callable[[], float], int]:
    """(step, pairs per step): `step()` runs one optimizer step of `variant` at `size` px on a fixed batch
    of pairs of a synthetic clip of `clip_frames` frames and returns the loss; the batch holds
    `batch_size` pairs (default: the config's)."""
    config = MotionConfig(variant=variant, data=DataConfig(size=size))
    batch_size = batch_size or config.train.batch_size
    synth = make_clip(seed=seed, size=size, frames=clip_frames)
    motion = synth.affines.float()
    learned = PREDICTORS[variant].learned
    known = None if learned else motion
    task = MotionTask(config, [Clip(frames=synth.frames, affines=known, fps=synth.fps)],
                      tracked=[motion if learned else None])
    dataset = task.build_dataset()
    if len(dataset) < batch_size:
        raise ValueError(f"a {clip_frames}-frame clip has {len(dataset)} pairs, fewer than a batch of {batch_size}")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:batch_size]
    batch = torch.utils.data.default_collate([dataset[index] for index in order.tolist()])
    torch.manual_seed(seed)
    model = task.build_model()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    late_step = config.train.steps - 1

    def step() -> float:
        loss, _ = task.training_loss(model, batch, late_step)
        optimizer.zero_grad()
        loss.backward()
        if config.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
        optimizer.step()
        return loss.item()

    return step, batch_size


def untrained_checkpoint(path: Path, size: int, frames: int, seed: int) -> Path:
    """Write a motion checkpoint of an untrained `known`-variant model on a synthetic clip of `frames`
    frames at `size` px, as `vidrender train` writes one (`Decomposition.save`); its layer stack comes from
    `MotionTask.decompose` with the fits cut to one step. Good for timing `export` and `compose`, which
    only load, move, composite and write the layers."""
    config = MotionConfig(variant="known", data=DataConfig(size=min(size, 64)),
                          infer=InferConfig(refine_steps=1, rounds=1))
    synth = make_clip(seed=seed, size=size, frames=frames)
    task = MotionTask(config, [Clip(frames=synth.frames, affines=synth.affines.float(), fps=synth.fps)])
    torch.manual_seed(seed)
    model = task.build_model()
    return Decomposition(config, model.state_dict(), task.decompose(model)).save(path)


class FreshFolders:
    """A new empty temporary folder for every run: `next()` (untimed, as `time_it`'s setup) deletes the
    previous one and makes another under `parent` (default: the system's temporary folder); `close()`
    (or leaving the `with` block) deletes the last. `current` is the folder of the run."""

    def __init__(self, parent: Path | None = None):
        self.parent = parent
        self.current: Path | None = None

    def next(self) -> Path:
        self.close()
        if self.parent is not None:
            self.parent.mkdir(parents=True, exist_ok=True)
        self.current = Path(tempfile.mkdtemp(prefix="vidrender-bench-", dir=self.parent))
        return self.current

    def close(self) -> None:
        if self.current is not None:
            shutil.rmtree(self.current, ignore_errors=True)
            self.current = None

    def __enter__(self) -> FreshFolders:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def export_command(checkpoint: Path, folders: FreshFolders) -> Callable[[], Path]:
    """`vidrender export CHECKPOINT -o DIR/layers` in process (its printed path swallowed), DIR being
    `folders.current` (one is made if there is none); returns the export folder."""
    from vidrender.pipelines.motion import cli

    def run() -> Path:
        output = (folders.current or folders.next()) / "layers"
        with contextlib.redirect_stdout(io.StringIO()):
            cli.export(checkpoint=checkpoint, output=output)
        return output

    return run


def write_pngs(folder: Path, stack: LayerStack, moved: list[torch.Tensor]) -> None:
    """The PNG files `LayerStack.export` writes into `folder`, from layers already moved (one (T, 4, H, W)
    premultiplied tensor per character): background.png, and per frame the straight RGBA and the alpha."""
    from vidrender.io.images import write_image

    write_image(folder / "background.png", stack.background.plate)
    for number, frames in enumerate(moved, start=1):
        names = character_file_names(number)
        write_layer_frames(folder / names["layer"], folder / names["alpha"], frames)


def export_figures(scratch: Path, size: int, plan: Plan) -> dict:
    """Export frames/s end to end at `size` px, the milliseconds of its three stages, the PNG files one run
    wrote and its peak memory."""
    from vidrender.pipelines.motion.decomposition import load_stack

    checkpoint = untrained_checkpoint(scratch / f"export-{size}.pt", size, plan.export_frames, seed=1)
    count = plan.export_frames
    with FreshFolders(scratch) as folders:
        end_to_end = export_command(checkpoint, folders)
        folders.next()
        release_free_memory()
        memory = peak_memory(end_to_end)  # the first run, also the warm-up
        pngs = sum(1 for _ in memory.result.rglob("*.png"))
        whole = time_it(end_to_end, plan.repeats, warmup=0, max_seconds=plan.max_seconds, setup=folders.next)
        stack = load_stack(checkpoint)
        moved = [character.moved() for character in stack.characters]
        stages = {
            "load_checkpoint": (lambda: load_stack(checkpoint), None),
            "move_layers": (lambda: [character.moved() for character in stack.characters], None),
            "write_pngs": (lambda: write_pngs(folders.current, stack, moved), folders.next),
        }
        timings = {name: time_it(fn, plan.repeats, warmup=0, max_seconds=plan.max_seconds, setup=setup)
                   for name, (fn, setup) in stages.items()}
    return {
        "fps": whole.rate(count),
        "frames": count,
        "size_px": size,
        "png_files": pngs,
        "stages_ms": {name: timing.min * 1e3 for name, timing in timings.items()},
        "peak_rss_increase_mib": memory.increase_mib,
    }


def compose_command(character: Path, background: Path, output: Path, frames: int) -> Callable[[], None]:
    """`vidrender compose --character C --background B -o OUT --frames N --overwrite` in process (its printed
    path swallowed): each repeat replaces the previous run's video, as a user re-running it would."""
    from vidrender.pipelines.motion import cli

    def run() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            cli.compose(character=character, background=background, output=output, frames=frames, overwrite=True)

    return run


def compose_figures(scratch: Path, size: int, plan: Plan) -> dict:
    """Compose frames/s end to end at `size` px to .mp4, and the milliseconds of its three stages."""
    from vidrender.io.video_write import write_video
    from vidrender.pipelines.motion.composing import compose
    from vidrender.pipelines.motion.decomposition import load_stack

    character = untrained_checkpoint(scratch / "character.pt", size, plan.clip_frames, seed=1)
    background = untrained_checkpoint(scratch / "background.pt", size, plan.clip_frames, seed=2)
    output = scratch / "composed.mp4"
    count = plan.compose_frames
    end_to_end = compose_command(character, background, output, count)
    release_free_memory()
    memory = peak_memory(end_to_end)  # the first run, also the warm-up
    whole = time_it(end_to_end, plan.repeats, warmup=0, max_seconds=plan.max_seconds)

    def load() -> tuple:
        return load_stack(character), load_stack(background)

    stacks = load()
    video = compose(*stacks, frames=count)
    stages = {
        "load_checkpoints": load,
        "composite": lambda: compose(*stacks, frames=count),
        "encode_mp4": lambda: write_video(output, video.frames, video.fps),
    }
    timings = {name: time_it(fn, plan.repeats, warmup=0, max_seconds=plan.max_seconds) for name, fn in stages.items()}
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
    from vidrender.pipelines.motion.baseline import baseline_compose

    character = make_clip(seed=1, size=size, frames=plan.clip_frames).frames
    background = make_clip(seed=2, size=size, frames=plan.clip_frames).frames
    timing = time_it(lambda: baseline_compose(character, background), plan.repeats, warmup=0,
                     max_seconds=plan.max_seconds)
    return {"fps": timing.rate(plan.clip_frames), "frames": plan.clip_frames, "size_px": size,
            "seconds": timing.min}
