"""Synthetic data with ground truth: moving-character clips for the `motion` pipeline (docs/design.md section 5).

`make_clip` renders a clip (`SynthClip`: frames, plate, mattes, sprite, per-frame affines; with
`camera=` one of `CAMERA_KINDS`, a moving camera over a world plate, and its per-frame cameras),
`write_truth` / `read_truth` store it as a truth folder, `write_samples` writes a set of them
(`vidrender samples DIR`), and `recompose` renders the true composite of a character on another plate.
"""

from vidrender.synth.camera import CAMERA_KINDS
from vidrender.synth.clips import SynthClip, make_clip, recompose
from vidrender.synth.motion import MotionRanges
from vidrender.synth.textures import BACKGROUND_KINDS
from vidrender.synth.truth import read_truth, write_samples, write_truth

__all__ = [
    "BACKGROUND_KINDS",
    "CAMERA_KINDS",
    "MotionRanges",
    "SynthClip",
    "make_clip",
    "read_truth",
    "recompose",
    "write_samples",
    "write_truth",
]
