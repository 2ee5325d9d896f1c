"""Inference of pipeline `motion` (`infer.py`): the affine fit's sub-pixel accuracy on a clip whose truth is known."""

import pytest
import torch

from pipelines.motion import infer
from vidrender.geometry import corner_error
from vidrender.synth import make_clip

SIZE = 128


@pytest.fixture(scope="module")
def clip():
    return make_clip(3, size=SIZE, frames=16)


def drift_from_truth(clip, smooth: bool) -> float:
    """Mean corner error (px) after fitting the affines from the truth, with the true matte and plate."""
    frames, alpha, plate = clip.clean.float(), clip.alpha[0].float(), clip.background.float()
    seen = torch.ones_like(alpha, dtype=torch.bool)
    character = infer.foreground_colour(frames[0], alpha, plate, seen)
    fitted = infer.fit_affines(frames, character, alpha, clip.affines.float().clone(), plate, 150, 3e-3, smooth)
    return float(corner_error(fitted[1:].double(), clip.affines[1:].double(), SIZE, SIZE).mean())


def test_smoothed_residual_removes_most_of_the_resampling_bias(clip):
    # The render resamples the reference frame bilinearly, the clip was anti-aliased at each frame's own
    # scale: on the sharp residual the fit leaves the true affines; the window-averaged one stays closer.
    sharp, smoothed = drift_from_truth(clip, False), drift_from_truth(clip, True)
    assert smoothed < 0.7 * sharp
    assert smoothed < 0.1


def test_fit_recovers_a_displaced_start(clip):
    frames, alpha, plate = clip.clean.float(), clip.alpha[0].float(), clip.background.float()
    seen = torch.ones_like(alpha, dtype=torch.bool)
    character = infer.foreground_colour(frames[0], alpha, plate, seen)
    start = clip.affines.float().clone()
    start[1:, :, 2] += 0.03  # about 2 px
    fitted = infer.fit_affines(frames, character, alpha, start, plate, 150, 3e-3, True)
    before = corner_error(start[1:].double(), clip.affines[1:].double(), SIZE, SIZE).mean()
    after = corner_error(fitted[1:].double(), clip.affines[1:].double(), SIZE, SIZE).mean()
    assert after < 0.1 * before
