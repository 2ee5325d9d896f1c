"""Losses of the `scene3d` pipeline: the rendering loss of the swap-rendering objective and the optional
temporal smoothness penalty between neighbouring time slices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.metrics import ssim

from vidrender.pipelines.scene3d.config import LossConfig


def rendering_loss(
    rendered: torch.Tensor, target: torch.Tensor, config: LossConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`pixel(rendered, target) + ssim_weight * (1 - SSIM)`, as in the reference.

    rendered, target: (B, 3, H, W) in [0, 1]. pixel is the mean absolute (l1) or squared (l2) error;
    SSIM is kornia's (Gaussian window `ssim_window`, sigma 1.5, valid padding, data range 1), averaged
    over pixels and channels. Returns (scalar loss, detached parts {"pixel", "ssim"} for logging).
    """
    difference = rendered - target
    pixel = difference.abs().mean() if config.pixel == "l1" else difference.square().mean()
    parts = {"pixel": pixel.detach()}
    if config.ssim_weight == 0:
        return pixel, parts
    # SSIM's local variances (E[x^2] - E[x]^2) lose all precision in bf16: keep it in fp32 under autocast.
    with torch.autocast(device_type=rendered.device.type, enabled=False):
        similarity = ssim(rendered.float(), target.float(), config.ssim_window, padding="valid").mean()
    parts["ssim"] = similarity.detach()
    return pixel + config.ssim_weight * (1 - similarity), parts


def temporal_smoothness(scenes: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring time slices of scenes (B, T, C, D, H, W), T >= 2."""
    return F.mse_loss(scenes[:, 1:], scenes[:, :-1])
