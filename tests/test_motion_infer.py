"""Inference of pipeline `motion` (`infer.py`): the affine fit's sub-pixel accuracy on a clip whose truth is known."""

import pytest
import torch

from vidrender.geometry import corner_error
from vidrender.pipelines.motion import infer
from vidrender.synth import make_clip

SIZE = 128


@pytest.fixture(scope="module")
def clip():
    return make_clip(3, size=SIZE, frames=16)


def fitted_error(clip, start: torch.Tensor, smooth: bool) -> float:
    """Mean corner error (px) of the affines fitted from `start` (T, 2, 3), with the true matte and plate."""
    frames, alpha, plate = clip.clean.float(), clip.alpha[0].float(), clip.background.float()
    character = infer.foreground_colour(frames[0], alpha, plate, torch.ones_like(alpha, dtype=torch.bool))
    fitted = infer.fit_affines(frames, character, alpha, start, plate, 150, 3e-3, smooth)
    return float(corner_error(fitted[1:].double(), clip.affines[1:].double(), SIZE, SIZE).mean())


def test_smoothed_residual_removes_most_of_the_resampling_bias(clip):
    # The render resamples the reference frame bilinearly, the clip was anti-aliased at each frame's own
    # scale: on the sharp residual the fit leaves the true affines; the window-averaged one stays closer.
    truth = clip.affines.float()
    sharp, smoothed = fitted_error(clip, truth, False), fitted_error(clip, truth, True)
    assert smoothed < 0.7 * sharp
    assert smoothed < 0.1


def test_fit_recovers_a_displaced_start(clip):
    start = clip.affines.float().clone()
    start[1:, :, 2] += 0.03  # about 2 px
    before = corner_error(start[1:].double(), clip.affines[1:].double(), SIZE, SIZE).mean()
    assert fitted_error(clip, start, True) < 0.1 * before
