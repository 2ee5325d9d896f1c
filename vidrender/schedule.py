"""The one learning-rate schedule of vidrender: cosine decay, as a pure function of the step.

Used by the training loop (`vidrender/train.py`) and by every small optimisation that fits layers to
frames after training (`pipelines/motion/infer.py`). A function of the step rather than a scheduler
object: a resumed run gets exactly the rates of an uninterrupted one with nothing extra to save.
"""

from __future__ import annotations

import math


def cosine(step: int, steps: int, lr: float, final: float = 0.0) -> float:
    """The rate at `step` (0-based) of `steps`: `lr` at step 0, decaying along half a cosine to
    `lr * final` at the last step (`steps - 1`) and staying there after it."""
    progress = min(step / max(steps - 1, 1), 1.0)
    return lr * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress)))
