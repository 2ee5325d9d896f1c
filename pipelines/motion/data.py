"""Training data of pipeline `motion`: clips in memory and every frame pair with gap 1..K.

A pair is (x_s, x_t) with 1 <= |t - s| <= K, in both directions, from one clip; each item is tagged
with its clip's index (which selects the clip's background plate). Frames are resized (not cropped) to
S x S: normalized coordinates span the frame whatever its aspect, so normalized affines mean the same
at training size and at native size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from vidrender.errors import UserError
from vidrender.geometry import compose, identity, invert

# The smallest frame side a clip may have. The layer fit after training compares 4x4-window averages
# of its frames (`infer.fit_affines`), which a frame 1 px thin does not have: it stopped there with a
# traceback after the whole training. Frames of 2 to 15 px get through but are smaller than the
# smallest training frame (`data.size` >= 16), so the model learns from pixels the clip does not have
# (on a 3x3 clip the layers lost the character). 16 px per side is the floor of both sizes.
MIN_CLIP_SIDE = 16


@dataclass
class Clip:
    """One training clip.

    frames: (T, 3, H, W) float in [0, 1], any H, W (inference uses them at this resolution).
    affines: optional (T, 2, 3) normalized affines mapping frame 0 points to frame t (known motion).
    fps: frames per second; native_size: (width, height) of the source video; name: for messages.
    """

    frames: torch.Tensor
    affines: torch.Tensor | None = None
    fps: float = 25.0
    native_size: tuple[int, int] | None = None
    name: str = "clip"


def resize_frames(frames: torch.Tensor, size: int) -> torch.Tensor:
    """(T, 3, H, W) -> (T, 3, size, size), antialiased bilinear resize (aspect is not kept, see module doc)."""
    if frames.shape[-2:] == (size, size):
        return frames
    return F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def resize_frames_to(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(T, 3, H, W) -> (T, 3, h, w) for size = (h, w), antialiased bilinear."""
    return F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=True)


def relative_affine(affines: torch.Tensor, source: int, target: int) -> torch.Tensor:
    """From per-frame affines (T, 2, 3) (frame 0 -> frame t), the affine frame `source` -> frame `target`."""
    return compose(affines[target], invert(affines[source]))


def check_clip(clip: Clip, min_frames: int = 2) -> None:
    """Raise `UserError` if a clip cannot be trained on (shape, too few frames, frames thinner than
    MIN_CLIP_SIDE, bad affines)."""
    frames = clip.frames
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise UserError(f"{clip.name}: expected frames shaped (T, 3, H, W), got {tuple(frames.shape)}")
    if frames.shape[0] < min_frames:
        raise UserError(f"{clip.name}: needs at least {min_frames} frames to learn motion, got {frames.shape[0]}")
    check_frame_size(clip.name, frames.shape[-1], frames.shape[-2])
    if clip.affines is not None and clip.affines.shape != (frames.shape[0], 2, 3):
        raise UserError(
            f"{clip.name}: {clip.affines.shape[0]} affines for {frames.shape[0]} frames (need one 2x3 per frame)"
        )


def check_frame_size(name: str, width: int, height: int) -> None:
    """Refuse a clip `name` whose frames are thinner than MIN_CLIP_SIDE px on either side."""
    if min(width, height) < MIN_CLIP_SIDE:
        raise UserError(f"{name}: frames are {width}x{height} px; training and the layer fit need at least "
                        f"{MIN_CLIP_SIDE} px on each side (upscale the clip first)")


class PairDataset(Dataset):
    """All pairs (s, t), 1 <= |t - s| <= max_gap, of every clip; frames already at training size S.

    frames: list of (T_c, 3, S, S) tensors; affines / tracked: per clip, (T_c, 2, 3) or None; moving: per
    clip, (T_c, 1, S, S) in {0, 1}, where each frame differs from the clip's median plate (or None).
    Items (default-collatable): `source`, `target` (3, S, S) in [0, 1]; `clip`, `source_index`,
    `target_index`, `gap` (= t - s, nonzero) as int64 scalars; `affine` (2, 3) the known s -> t
    affine (identity if unknown); `source_moving`, `target_moving` (1, S, S) each frame's moving pixels
    (zeros if none given); `tracked` (2, 3) the tracked s -> t affine
    (identity if none).
    """

    def __init__(
        self,
        frames: list[torch.Tensor],
        max_gap: int,
        affines: list[torch.Tensor | None] | None = None,
        tracked: list[torch.Tensor | None] | None = None,
        moving: list[torch.Tensor] | None = None,
    ):
        self.frames = frames
        self.max_gap = max_gap
        self.affines = affines or [None] * len(frames)
        self.tracked = tracked or [None] * len(frames)
        self.moving = moving or [torch.zeros_like(clip_frames[:, :1]) for clip_frames in frames]
        pairs = [
            (clip, source, source + gap)
            for clip, clip_frames in enumerate(frames)
            for source in range(clip_frames.shape[0])
            for gap in [*range(-max_gap, 0), *range(1, max_gap + 1)]
            if 0 <= source + gap < clip_frames.shape[0]
        ]
        self.pairs = torch.tensor(pairs, dtype=torch.long).view(-1, 3)

    def __len__(self) -> int:
        return self.pairs.shape[0]

    def _affine(self, table: torch.Tensor | None, source: int, target: int) -> torch.Tensor:
        if table is None:
            return identity(1)[0]
        return relative_affine(table, source, target).float()

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        clip, source, target = (int(v) for v in self.pairs[index])
        return {
            "source": self.frames[clip][source],
            "target": self.frames[clip][target],
            "clip": torch.tensor(clip),
            "source_index": torch.tensor(source),
            "target_index": torch.tensor(target),
            "gap": torch.tensor(target - source),
            "affine": self._affine(self.affines[clip], source, target),
            "tracked": self._affine(self.tracked[clip], source, target),
            "source_moving": self.moving[clip][source],
            "target_moving": self.moving[clip][target],
        }
