"""What `motion.fit` returns and a motion checkpoint (`.pt`) holds: a trained decomposition.

A `Decomposition` is the run's config, the model's weights and one `LayerStack` per training clip
(`stack.py`). Its checkpoint form (format version 2, `vidrender/io/checkpoint.py`)::

    artifact = {"variant": str, "train_size": int, "clips": [LayerStack.to_dict(), ...]}

Version-1 checkpoints (one flat entry per clip: plate, character, affines, ...) are converted on load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vidrender.config import from_dict, to_dict
from vidrender.errors import UserError
from vidrender.io.checkpoint import load_checkpoint, save_checkpoint
from vidrender.io.paths import require_file
from vidrender.pipelines.motion.config import MotionConfig
from vidrender.pipelines.motion.diagnostics import LayerReport
from vidrender.pipelines.motion.stack import LayerStack, read_export

PIPELINE = "motion"
# config keys that version-1 checkpoints may hold and this version no longer has
RETIRED_KEYS = {"data": ("curriculum_steps",)}


@dataclass
class Decomposition:
    """A trained model of pipeline `motion` and the layer stacks of the clips it was trained on; `reports`
    (one per clip, from `fit`; not saved) say how much of what moves in each clip its layers explain."""

    config: MotionConfig
    weights: dict[str, torch.Tensor]
    stacks: list[LayerStack]
    reports: list[LayerReport] = field(default_factory=list)

    def artifact(self) -> dict:
        """The checkpoint's `artifact`: what inference needs without the training clips."""
        return {"variant": self.config.variant, "train_size": self.config.data.size,
                "clips": [stack.to_dict() for stack in self.stacks]}

    def save(self, path: str | Path) -> Path:
        """Write the checkpoint atomically (a plain dict of tensors: opening it runs no code)."""
        return save_checkpoint(path, PIPELINE, to_dict(self.config), self.weights, self.artifact())

    def export(self, folder: str | Path, clip: int = 0) -> Path:
        """Write clip `clip`'s layers as an export folder (`LayerStack.export`)."""
        return self.stacks[_clip_index(clip, len(self.stacks), str(folder))].export(folder)


def load(path: str | Path) -> Decomposition:
    """Read a motion checkpoint (any format version this vidrender knows) into a `Decomposition`.

    A file of another pipeline, of a newer format, or damaged (a stack that does not check out, a config
    with unknown keys) is one `UserError` naming what is wrong.
    """
    payload = load_checkpoint(require_file(path, "checkpoint file"), PIPELINE)
    clips = payload["artifact"].get("clips")
    if not isinstance(clips, list) or not clips:
        raise UserError(f"{path}: damaged motion checkpoint, its artifact has no list of clips")
    version = payload["format_version"]
    stacks = [LayerStack.from_dict(entry, f"{path} (clip {index})", version) for index, entry in enumerate(clips)]
    values = {section: {key: value for key, value in settings.items() if key not in RETIRED_KEYS.get(section, ())}
              if isinstance(settings, dict) else settings for section, settings in payload["config"].items()}
    config = from_dict(MotionConfig, values, str(path))
    return Decomposition(config, payload["weights"], stacks)


def load_stack(path: str | Path, clip: int = 0) -> LayerStack:
    """Clip `clip`'s layer stack from a motion checkpoint (`.pt`) or from an export folder."""
    path = Path(path)
    if os.path.isdir(path):  # os.path answers False where Path.is_dir raises (a name too long)
        if clip != 0:
            raise UserError(f"{path}: an export folder holds one clip, there is no clip {clip}")
        return read_export(path)
    # a FIFO, a device or a folder one cannot enter is named as such, not as "no such checkpoint file"
    payload = load_checkpoint(require_file(path, "checkpoint file"), PIPELINE)
    clips = payload["artifact"].get("clips")
    if not isinstance(clips, list):
        raise UserError(f"{path}: damaged motion checkpoint, its artifact has no list of clips")
    index = _clip_index(clip, len(clips), str(path))
    return LayerStack.from_dict(clips[index], f"{path} (clip {index})", payload["format_version"])


def _clip_index(clip: int, count: int, where: str) -> int:
    if not 0 <= clip < count:
        raise UserError(f"{where}: has {count} clip(s), no clip {clip}")
    return clip
