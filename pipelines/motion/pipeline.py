"""The Python API of pipeline `motion`: `fit` a decomposition, `load` one; the CLI is a shell over these.

    from vidrender.pipelines import motion
    clips = motion.load_clips(["clip.mp4"], needs_affines=False)
    decomposition = motion.fit(clips, motion.MotionConfig(), run_dir="a.run")
    decomposition.save("a.pt")
    decomposition.export("layers/")
    video = motion.compose(motion.load_stack("a.pt"), motion.load_stack("b.pt"))

`compose` lives in `composing.py`; the layer stack in `stack.py`; `Decomposition` in `decomposition.py`.
"""

from __future__ import annotations

from pathlib import Path

from vidrender.pipelines.motion.config import MotionConfig
from vidrender.pipelines.motion.data import Clip
from vidrender.pipelines.motion.decomposition import Decomposition
from vidrender.pipelines.motion.diagnostics import layer_report
from vidrender.pipelines.motion.task import MotionTask
from vidrender.train import train


def fit(clips: list[Clip], config: MotionConfig, run_dir: str | Path, resume: bool = False, cpu: bool = False
        ) -> Decomposition | None:
    """Learn the clips' characters, backgrounds and motion, and take each clip apart into its layers.

    clips: `Clip`s (frames (T, 3, H, W) in [0, 1] at native size; affines when the variant needs them).
    run_dir: the run folder (training checkpoints for `resume`, previews, log.jsonl). Under
    `accelerate launch` every process trains; the main process alone returns the decomposition, the
    others None.
    """
    # 1. the training task: clips checked, resized for training, OpenCV tracks for a learned predictor
    task = MotionTask(config, clips)
    # 2. train with the shared loop (devices, processes, checkpoints, resume)
    model = train(task, config.train, Path(run_dir), resume=resume, cpu=cpu)
    from accelerate.state import PartialState

    if not PartialState().is_main_process:
        return None
    # 3. fit each clip's layer stack to its frames at native resolution
    stacks = task.decompose(model)
    # 4. check each stack against its clip: a character layer that explains almost nothing of what moves
    #    is reported (`Decomposition.reports`), never silent
    reports = [layer_report(stack, clip.frames.float()) for stack, clip in zip(stacks, clips, strict=True)]
    return Decomposition(config, model.state_dict(), stacks, reports)
