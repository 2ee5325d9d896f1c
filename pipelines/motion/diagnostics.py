"""Is a decomposition worth anything? How much of what moves in a clip its character layers explain.

A decomposition can fail quietly: the character layer empties during training and the plate alone
re-renders most pixels of the clip well, so nothing crashes and every loss looks small. The check here
needs no ground truth. What moves is the classical difference matte of the clip's frames against the
stack's own plate (`difference_matte.py`: thresholded at the clip's noise level, cleaned by morphology);
the stack explains it as far as its character layers (alpha > 0.5) cover it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vidrender.pipelines.motion.data import resize_frames_to
from vidrender.pipelines.motion.difference_matte import difference_matte
from vidrender.pipelines.motion.infer import working_size
from vidrender.pipelines.motion.stack import LayerStack

# Below this share of the moving pixels covered, a decomposition has lost its character.
MIN_EXPLAINED = 0.5
# A clip whose moving pixels are fewer than this share of all pixels has nothing to explain.
MIN_MOVING = 1e-3


@dataclass
class LayerReport:
    """explained: share (0..1) of the moving pixels the character layers cover; moving: share of all
    pixels that move; coverage: share of all pixels the character layers cover (alpha > 0.5)."""

    explained: float
    moving: float
    coverage: float

    @property
    def failed(self) -> bool:
        return self.moving >= MIN_MOVING and self.explained < MIN_EXPLAINED

    def describe(self, name: str) -> str:
        return (f"{name}: the character layer covers {self.explained:.0%} of what moves in the clip "
                f"({self.coverage:.2%} of its pixels against {self.moving:.2%} that move); the decomposition "
                f"has likely lost the character")


def layer_report(stack: LayerStack, frames: torch.Tensor, max_side: int = 256) -> LayerReport:
    """Check `stack` against the clip it was taken from, frames (T, 3, H, W) in [0, 1] at its `frame_size`.

    Both are compared shrunk to at most `max_side`^2 pixels (`infer.working_size`): the check needs shapes,
    not detail, and the difference matte of a long clip at native size would need several times the
    clip's memory.
    """
    if len(frames) != stack.frame_count or tuple(frames.shape[-2:]) != stack.frame_size:
        raise ValueError(f"layer_report: frames {tuple(frames.shape)} do not match a stack of {stack.frame_count} "
                         f"frames of {stack.frame_size}")
    size = working_size(*stack.frame_size, max_side)
    if size != stack.frame_size:
        frames = resize_frames_to(frames.float(), size)
    views = stack.background.views(len(frames), size)
    moving = torch.cat([difference_matte(chunk, view) for chunk, view in _pairs(frames, views)]) > 0.5
    covered = torch.zeros_like(moving)
    for number in range(len(stack.characters)):
        covered |= stack.character_frames(number, size)[:, 3:] > 0.5
    moving_count = int(moving.sum())
    explained = float((moving & covered).sum()) / moving_count if moving_count else 1.0
    return LayerReport(explained, moving_count / moving.numel(), float(covered.float().mean()))


def _pairs(frames: torch.Tensor, views: torch.Tensor):
    """(frames, view) pairs: all frames against one plate for a static camera, else frame by frame."""
    if len(views) == 1:
        return [(frames, views[0])]
    return [(frame[None], view) for frame, view in zip(frames, views, strict=True)]


def empty_layers(stack: LayerStack) -> list[int]:
    """Indices (from 1, back to front) of the character layers with no pixel of alpha > 0.5: nothing to show
    in any frame."""
    return [number for number, character in enumerate(stack.characters, start=1)
            if not bool((character.rgba[3] > 0.5).any())]
