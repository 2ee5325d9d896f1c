"""The one compositing function of vidrender: Porter-Duff "over" of premultiplied layers.

Every place that lays one layer over another (the model's render, the layer fits, export, compose, the
classical baseline, synthetic clips and sprites, contact sheets) calls `over`, so there is a single
definition of how alpha combines, and premultiplied colour everywhere: a layer's colour outside its
matte (where alpha is 0) contributes nothing, so it cannot bleed into an edge when the layer is resampled.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

Image = TypeVar("Image", torch.Tensor, np.ndarray)


def premultiply(rgba: Image, channel_axis: int = -3) -> Image:
    """Straight RGBA -> premultiplied RGBA (colour times alpha), any shape with 4 channels on `channel_axis`."""
    colour, alpha = _channels(rgba, 0, 3, channel_axis), _channels(rgba, 3, 4, channel_axis)
    parts = (colour * alpha, alpha)
    if isinstance(rgba, torch.Tensor):
        return torch.cat(parts, dim=channel_axis)
    return np.concatenate(parts, axis=channel_axis)


def over(front: Image, back: Image, channel_axis: int = -3) -> Image:
    """`front` over `back`: front + (1 - alpha_front) * back, on premultiplied colour.

    front: premultiplied RGBA, 4 channels on `channel_axis` (channels first by default: (..., 4, H, W)).
    back: premultiplied RGBA (4 channels: the result is RGBA, e.g. two sprite parts), or opaque RGB
    (3 channels: the result is the RGB frame, e.g. a character over its plate). Broadcasts like
    arithmetic, so one plate (3, H, W) goes under a stack of layers (T, 4, H, W). Works on torch tensors
    (differentiable) and numpy arrays alike; values are not clamped.
    """
    channels = back.shape[channel_axis]
    if channels not in (3, 4) or front.shape[channel_axis] != 4:
        raise ValueError(f"over: front needs 4 channels and back 3 or 4, got {front.shape} and {back.shape}")
    return _channels(front, 0, channels, channel_axis) + (1 - _channels(front, 3, 4, channel_axis)) * back


def _channels(image: Image, start: int, stop: int, channel_axis: int) -> Image:
    axis = channel_axis % image.ndim
    return image[(slice(None),) * axis + (slice(start, stop),)]
