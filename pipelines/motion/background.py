"""The background layer's plate: what stays the same across the frames of a clip (invariance).

* During training the background branch is `ClipPlates`, one learned RGB plate per clip: the background
  encoder f_b maps every frame of clip c to the same code by construction, so it cannot vary per frame
  and smuggle the moving character past the invariance loss (docs/design.md section 1).
* Plates are built from pixels with temporal medians: `lower_median_plate` over every frame (the learned
  plates' start), `median_plate` (the classical baseline's plate and difference matte), and
  `masked_median_plate` over only the frames where the character is not (after training, at native
  resolution), with `inpaint` for what no frame shows.

Images are float32 RGB in [0, 1], (3, H, W); clips (T, 3, H, W).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn as nn


def median_plate(frames: torch.Tensor) -> torch.Tensor:
    """Per-pixel temporal median of frames (T, 3, H, W) in [0, 1] -> plate (3, H, W), float32.

    For an even number of frames the two middle values are averaged (numpy's median): right wherever the
    background shows in more than half of the frames.
    """
    return torch.from_numpy(np.median(frames.float().numpy(), axis=0).astype(np.float32))


def lower_median_plate(frames: torch.Tensor) -> torch.Tensor:
    """Per-pixel temporal median of frames (T, 3, H, W) -> (3, H, W), taking the lower middle value for an
    even number of frames, so every pixel is a colour some frame really showed there.

    The model's plates start from this: where the character covers a pixel in half of an even number of
    frames, `median_plate` would start the plate at a blend of character and background, a ghost the
    matte then has to explain (a 32 px, 8-frame clip trained 60 steps: matte IoU 0.48 against 0.64).
    """
    return frames.median(dim=0).values


class ClipPlates(nn.Module):
    """Background branch: one RGB plate per clip, (num_clips, 3, S, S); f_b(x) = plate[clip of x]."""

    def __init__(self, num_clips: int, size: int):
        super().__init__()
        self.plates = nn.Parameter(torch.full((num_clips, 3, size, size), 0.5))

    @torch.no_grad()
    def initialise(self, clip: int, plate: torch.Tensor) -> None:
        """Set clip's plate to `plate` (3, S, S) in [0, 1], e.g. the temporal median of its frames."""
        self.plates[clip].copy_(plate)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """clip indices (B,) long -> plates (B, 3, S, S) clamped to [0, 1]."""
        return self.plates[clip].clamp(0, 1)


def masked_median_plate(frames: torch.Tensor, covered: torch.Tensor, fallback: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Temporal median of frames (T, 3, H, W) over the frames where `covered` (T, 1, H, W) bool is False.

    Pixels that no frame shows uncovered (the character never leaves them) are inpainted from the seen
    plate around them (OpenCV Telea), or taken from `fallback` (3, H, W) if no pixel at all was seen.
    Returns (plate (3, H, W), seen (1, H, W) bool). Rows are done in bands to bound memory. Like
    `lower_median_plate`, an even number of values gives the lower middle one (`torch.nanmedian`).
    """
    plate = torch.empty_like(fallback)
    band = max(1, (1 << 24) // max(1, frames.shape[0] * 3 * frames.shape[-1]))
    for top in range(0, frames.shape[-2], band):
        rows = slice(top, top + band)
        values = frames[:, :, rows].float().masked_fill(covered[:, :, rows].expand(-1, 3, -1, -1), float("nan"))
        plate[:, rows] = values.nanmedian(dim=0).values
    seen = ~torch.isnan(plate[:1])
    if not seen.any():
        return fallback.clone(), seen
    if not seen.all():
        plate = inpaint(torch.nan_to_num(plate), ~seen)
    return plate, seen


def inpaint(image: torch.Tensor, holes: torch.Tensor) -> torch.Tensor:
    """Fill `holes` (1, H, W) bool of an RGB image (3, H, W) in [0, 1] from around them (cv2.INPAINT_TELEA)."""
    pixels = (image.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    filled = cv2.inpaint(pixels, holes[0].numpy().astype(np.uint8), 3, cv2.INPAINT_TELEA)
    filled = torch.from_numpy(filled).permute(2, 0, 1).float() / 255
    return torch.where(holes, filled, image)
