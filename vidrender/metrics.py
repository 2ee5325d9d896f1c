"""Evaluation metrics against ground truth (docs/design.md section 5): PSNR, SSIM, matte IoU, affine error,
camera error.

Images are float tensors with values in [0, 1]: (C, H, W) or (T, C, H, W) (any leading dims for PSNR).
Every function returns a Python float, so results drop straight into JSON.
"""

from __future__ import annotations

import kornia
import torch

from vidrender import geometry


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB, 10 * log10(1 / MSE), the MSE taken over every element of a and b.

    a, b: same-shape float tensors in [0, 1]. Identical inputs give +inf.
    """
    _check_same_shape(a, b, "psnr")
    return float(kornia.metrics.psnr(a.float(), b.float(), max_val=1.0))


def ssim(a: torch.Tensor, b: torch.Tensor, window_size: int = 11) -> float:
    """Mean structural similarity (kornia, Gaussian window `window_size`), in [-1, 1]; 1 for identical inputs.

    a, b: (C, H, W) or (T, C, H, W) float tensors in [0, 1]; the mean is over frames, channels and pixels.
    """
    _check_same_shape(a, b, "ssim")
    if a.dim() == 3:
        a, b = a[None], b[None]
    return float(kornia.metrics.ssim(a.float(), b.float(), window_size, max_val=1.0).mean())


def matte_iou(pred_alpha: torch.Tensor, true_alpha: torch.Tensor, threshold: float = 0.5) -> float:
    """Mean over frames of the IoU of the mattes thresholded at `threshold` (alpha > threshold).

    pred_alpha, true_alpha: (T, 1, H, W) or (1, H, W), values in [0, 1]. A frame where both mattes are
    empty (e.g. the character is out of view) counts as IoU 1: the prediction agrees with the truth.
    """
    _check_same_shape(pred_alpha, true_alpha, "matte_iou")
    if pred_alpha.dim() == 3:
        pred_alpha, true_alpha = pred_alpha[None], true_alpha[None]
    pred, true = pred_alpha > threshold, true_alpha > threshold
    intersection = (pred & true).flatten(1).sum(1).double()
    union = (pred | true).flatten(1).sum(1).double()
    per_frame = torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))
    return float(per_frame.mean())


def affine_error(pred: torch.Tensor, true: torch.Tensor, width: int, height: int) -> float:
    """Mean corner displacement in pixels between predicted and true normalized affines.

    pred, true: (T, 2, 3) (or (2, 3)) normalized affines (`vidrender/geometry.py`); width, height: the
    frame size in pixels the error is measured in. Averages `geometry.corner_error` over frames.
    """
    _check_same_shape(pred, true, "affine_error")
    return float(geometry.corner_error(pred.double(), true.double(), width, height).mean())


def camera_corner_error_px(estimated: torch.Tensor, truth: torch.Tensor, size: tuple[int, int],
                           reference: int = 0) -> float:
    """Mean displacement in pixels of the frame's four corners under estimated versus true cameras.

    estimated, truth: (T, 3, 3) cameras in `geometry.CAMERA_CONVENTION` (frame t -> plate, normalized;
    homographies or affines), each against its own plate: the two plates may differ (a world plate, or the
    reference frame's view). Both are first expressed relative to frame `reference`, R_t = H_ref^-1 @ H_t
    (frame t -> frame `reference`), which removes the choice of plate, so only disagreement about how the
    frames move relative to each other counts. The four outer corners of frame t (normalized -1 and 1) are
    mapped by each R_t, their distance measured in pixels of the reference frame at `size` (H, W), and the
    mean taken over corners and frames (the reference frame itself scores 0).
    """
    _check_same_shape(estimated, truth, "camera_corner_error_px")
    height, width = size
    relative = [torch.linalg.solve(cameras[reference].double(), cameras.double()) for cameras in (estimated, truth)]
    return float(geometry.camera_corner_distance(*relative, width, height).mean())
