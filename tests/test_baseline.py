"""The classical baseline and OpenCV tracking, measured against synthetic ground truth.

"Easy" clips: 96 px, 32 frames, a character covering ~6% of the frame on a textured plate. Each
decomposition takes about a second, so clips and results are shared per module.
"""

from __future__ import annotations

import pytest
import torch

from vidrender import geometry, metrics
from vidrender.errors import UserError
from vidrender.pipelines.motion import tracking
from vidrender.pipelines.motion.background import median_plate
from vidrender.pipelines.motion.baseline import baseline_compose, baseline_decompose
from vidrender.pipelines.motion.difference_matte import difference_matte
from vidrender.synth import make_clip, recompose

SIZE, FRAMES = 96, 32


def easy_clip(seed: int, **options):
    return make_clip(seed=seed, size=SIZE, frames=FRAMES, coverage=0.06, **options)


@pytest.fixture(scope="module")
def clip_a():
    return easy_clip(1)


@pytest.fixture(scope="module")
def clip_b():
    return easy_clip(2)


@pytest.fixture(scope="module")
def layers_a(clip_a):
    return baseline_decompose(clip_a.frames)


def identity_error(clip) -> float:
    """Affine error of "the character never moves": what a tracker must beat by far."""
    return metrics.affine_error(geometry.identity(clip.num_frames, dtype=torch.float64), clip.affines, SIZE, SIZE)


def test_median_plate_and_difference_matte_recover_the_layers(clip_a, layers_a):
    assert layers_a.plate.shape == (3, SIZE, SIZE) and layers_a.alpha.shape == (FRAMES, 1, SIZE, SIZE)
    assert metrics.psnr(layers_a.plate, clip_a.background) > 30
    assert metrics.matte_iou(layers_a.alpha, clip_a.alpha) > 0.8
    # the matte is not trivial: an all-zero or all-one matte scores far lower
    assert metrics.matte_iou(torch.ones_like(clip_a.alpha), clip_a.alpha) < 0.2


def test_difference_matte_threshold_follows_the_noise():
    noisy = easy_clip(1, noise=0.03)
    matte = difference_matte(noisy.frames, median_plate(noisy.frames))
    assert metrics.matte_iou(matte, noisy.alpha) > 0.7
    # a threshold below the noise level marks noise as character
    too_low = difference_matte(noisy.frames, median_plate(noisy.frames), threshold=0.02)
    assert too_low.mean() > 3 * noisy.alpha.mean()


def test_tracking_error_is_a_fraction_of_a_pixel_on_an_easy_clip(clip_a, layers_a):
    assert layers_a.affines.shape == (FRAMES, 2, 3) and layers_a.affines.dtype == torch.float64
    error = metrics.affine_error(layers_a.affines, clip_a.affines, SIZE, SIZE)
    assert error < 1.5
    assert identity_error(clip_a) > 20 * error


def test_tracking_with_the_true_matte_and_another_reference_frame(clip_b):
    reference = 10
    affines = tracking.track_affines(clip_b.frames, reference=reference, mask=clip_b.alpha)
    assert torch.allclose(affines[reference], torch.eye(2, 3, dtype=torch.float64))
    # the truth re-expressed from frame 10: A_t @ A_10^-1
    truth = geometry.compose(clip_b.affines, geometry.invert(clip_b.affines[reference]).expand(FRAMES, 2, 3))
    assert metrics.affine_error(affines, truth, SIZE, SIZE) < 1.5


def test_tracking_picks_the_character_up_again_after_it_left_the_frame():
    clip = easy_clip(3, leave_frame=True)
    affines = tracking.track_affines(clip.frames)
    alpha = clip.alpha[:, 0]
    area = alpha.flatten(1).sum(1)
    edges = torch.cat([alpha[:, 0], alpha[:, -1], alpha[:, :, 0], alpha[:, :, -1]], dim=1).amax(1)
    fully_visible = (edges < 0.01) & (area > 0)
    gone = torch.nonzero(area == 0).flatten()
    assert len(gone) and fully_visible[gone[0] :].any(), "the clip must show the character leave and return"
    errors = geometry.corner_error(affines, clip.affines, SIZE, SIZE)
    assert errors[fully_visible].max() < 3


def test_tracking_without_the_two_mask_ecc_of_newer_opencv(clip_b, monkeypatch):
    monkeypatch.setattr(tracking, "_HAS_TEMPLATE_MASK_ECC", False)
    affines = tracking.track_affines(clip_b.frames)
    assert metrics.affine_error(affines, clip_b.affines, SIZE, SIZE) < 3


def test_cut_and_paste_compose_puts_the_character_on_the_other_plate(clip_a, clip_b):
    frames = baseline_compose(clip_a.frames, clip_b.frames)
    truth = recompose(clip_a, clip_b.background)
    assert frames.shape == truth.shape
    plate_only = metrics.psnr(clip_b.background.expand_as(truth), truth)
    assert metrics.psnr(frames, truth) > 28
    assert metrics.psnr(frames, truth) > plate_only + 5


def test_compose_follows_the_given_motion_and_the_background_size(clip_a):
    still = geometry.identity(5, dtype=torch.float64)
    wide = make_clip(seed=4, size=(144, 96), frames=8)
    frames = baseline_compose(clip_a.frames, wide.frames, affines=still)
    assert frames.shape == (5, 3, 96, 144)
    truth = recompose(clip_a, wide.background, still)
    assert metrics.psnr(frames, truth) > 25
    # every frame shows the character at its reference pose
    assert torch.allclose(frames[0], frames[-1])


def test_tracking_refuses_a_reference_outside_the_clip(clip_b):
    with pytest.raises(UserError, match="reference frame 40"):
        tracking.track_affines(clip_b.frames, reference=40)
