"""Metrics on inputs whose answer is known or computed independently: PSNR, SSIM, matte IoU, affine error."""

from __future__ import annotations

import math

import pytest
import torch

from vidrender import geometry, metrics


def test_psnr_matches_its_definition_and_is_infinite_for_identical_inputs():
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(4, 3, 16, 16, generator=generator)
    b = (a + 0.05 * torch.randn(a.shape, generator=generator)).clamp(0, 1)
    mse = float(((a - b) ** 2).mean())
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(1 / mse), rel=1e-5)
    assert metrics.psnr(a, a) == math.inf
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.psnr(a, b[:2])


def test_ssim_is_one_for_identical_inputs_and_falls_with_noise():
    generator = torch.Generator().manual_seed(1)
    clean = torch.rand(2, 3, 32, 32, generator=generator)
    scores = [
        metrics.ssim(clean, (clean + level * torch.randn(clean.shape, generator=generator)).clamp(0, 1))
        for level in (0.0, 0.05, 0.2)
    ]
    assert scores[0] == pytest.approx(1.0, abs=1e-4)
    assert scores[0] > scores[1] > scores[2]
    # a single image (C, H, W) scores like a batch of one
    assert metrics.ssim(clean[0], clean[0] * 0.9) == pytest.approx(metrics.ssim(clean[:1], clean[:1] * 0.9))


def box(height: int, width: int, top: int, left: int, size: int) -> torch.Tensor:
    alpha = torch.zeros(1, height, width)
    alpha[:, top : top + size, left : left + size] = 1
    return alpha


def test_matte_iou_on_boxes_with_known_overlap():
    a, b = box(20, 20, 0, 0, 10), box(20, 20, 5, 5, 10)
    intersection, union = 5 * 5, 2 * 10 * 10 - 5 * 5
    assert metrics.matte_iou(a, b) == pytest.approx(intersection / union)
    assert metrics.matte_iou(a, a) == 1.0
    assert metrics.matte_iou(a, box(20, 20, 10, 10, 10)) == 0.0
    # mean over frames; a frame where both mattes are empty agrees perfectly
    empty = torch.zeros(1, 20, 20)
    pair = metrics.matte_iou(torch.stack([a, empty]), torch.stack([b, empty]))
    assert pair == pytest.approx((intersection / union + 1.0) / 2)


def test_matte_iou_thresholds_soft_mattes():
    soft = box(8, 8, 0, 0, 4) * 0.6
    assert metrics.matte_iou(soft, box(8, 8, 0, 0, 4)) == 1.0
    assert metrics.matte_iou(soft, box(8, 8, 0, 0, 4), threshold=0.7) == 0.0


def test_affine_error_is_the_corner_displacement_in_pixels():
    width, height = 64, 48
    true = geometry.identity(3, dtype=torch.float64)
    assert metrics.affine_error(true, true, width, height) == 0.0
    shift_x, shift_y = 3.0, 4.0  # pixels; a translation moves every corner by the same vector
    shifted = true.clone()
    shifted[:, 0, 2] = shift_x / (width / 2)
    shifted[:, 1, 2] = shift_y / (height / 2)
    assert metrics.affine_error(shifted, true, width, height) == pytest.approx(math.hypot(shift_x, shift_y))
    # the mean over frames: one frame shifted, two exact
    mixed = torch.stack([shifted[0], true[1], true[2]])
    assert metrics.affine_error(mixed, true, width, height) == pytest.approx(math.hypot(shift_x, shift_y) / 3)
