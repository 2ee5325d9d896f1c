"""Classical layer separation for a static camera: temporal median plate and difference matte (OpenCV).

The plate is the per-pixel median over the clip (right wherever the background shows in more than half
of the frames). The matte marks pixels that differ from the plate by more than a threshold, cleaned by
morphology: opening removes specks of noise, closing bridges small gaps, and filling the outer contours
closes holes where the character happens to match the background colour.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

# Below this difference (max over RGB, values in [0, 1]) a pixel is background even in a clean clip;
# compression and noise raise the threshold through the robust noise estimate.
MIN_THRESHOLD = 0.08
NOISE_MULTIPLE = 4.0


def difference_threshold(differences: np.ndarray) -> float:
    """Threshold for signed per-channel differences to the plate (any shape, mostly background pixels):
    the larger of MIN_THRESHOLD and NOISE_MULTIPLE x the noise level, estimated robustly as
    1.4826 x the median absolute difference (the standard deviation, for Gaussian noise)."""
    sigma = 1.4826 * float(np.median(np.abs(differences)))
    return max(MIN_THRESHOLD, NOISE_MULTIPLE * sigma)


def clean_mask(binary: np.ndarray, min_area: int, open_px: int = 1, close_px: int = 2) -> np.ndarray:
    """Morphological clean-up of one binary mask (H, W) uint8 {0, 1}: open, close, fill holes, drop
    connected regions smaller than `min_area` pixels. Returns uint8 {0, 1}."""

    def disc(radius: int) -> np.ndarray:
        return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))

    mask = cv2.morphologyEx(binary, cv2.MORPH_OPEN, disc(open_px))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, disc(close_px))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(mask)
    large = [contour for contour in contours if cv2.contourArea(contour) >= min_area]
    cv2.drawContours(filled, large, -1, 1, thickness=cv2.FILLED)
    return filled


def difference_matte(
    frames: torch.Tensor,
    plate: torch.Tensor,
    threshold: float | None = None,
    min_area_fraction: float = 0.002,
) -> torch.Tensor:
    """Binary matte (T, 1, H, W) float32 in {0, 1} of what differs from the plate.

    frames: (T, 3, H, W) float in [0, 1]; plate: (3, H, W). The difference is the max over RGB of the
    absolute difference, lightly blurred; `threshold` None picks one from the noise level
    (`difference_threshold`). Regions smaller than `min_area_fraction` of the frame are dropped.
    """
    signed = (frames.float() - plate.float()).numpy()
    threshold = difference_threshold(signed) if threshold is None else threshold
    # blurring the magnitude (not the signed difference) keeps thin high-contrast details such as outlines
    differences = np.stack([cv2.GaussianBlur(d, (3, 3), 0) for d in np.abs(signed).max(axis=1)])
    height, width = differences.shape[-2:]
    min_area = max(4, int(min_area_fraction * height * width))
    masks = [clean_mask((d > threshold).astype(np.uint8), min_area) for d in differences]
    return torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))
