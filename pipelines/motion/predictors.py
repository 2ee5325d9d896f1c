"""The three sources of the character's affine `A` for a training pair (x_t -> x_{t+k}).

* `KnownAffine` (variant `known`): `A` is given (ground truth, a trajectory file, or OpenCV tracking).
* `FramePairPredictor` (`frame-pair`): `A = h(x_t, x_{t+k})`, a small CNN on the two frames.
* `FeaturePairPredictor` (`feature-pair`): `A = h(f_c(x_t), f_c(x_{t+k}))`, a small CNN on the two
  character feature maps.

Each class owns what its variant means for the rest of the pipeline, so nothing else tests the variant's
name: `needs_affines` (every clip must come with its affines) and `learned` (the predictor has weights:
it learns by image alignment from its own render, guided by OpenCV tracks during a warm start).
`PREDICTORS` maps each variant name to its class; `build_predictor` makes one.

All return normalized affines (B, 2, 3) mapping points of x_t to where they are in x_{t+k} (the
convention of `vidrender.geometry`). The learned ones output `A = [expm(G) | t]` from a last layer that
is zero-initialised (G = 0, t = 0), so they start exactly at the identity and still receive gradients
(through that layer's weights). They append normalized (x, y) coordinate channels to their input: a
translation is a position, which plain convolutions followed by pooling cannot express.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vidrender.geometry import identity


def coordinate_channels(like: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) normalized x and y (align_corners=False pixel centres) for a (B, C, H, W) tensor."""
    batch, _, height, width = like.shape
    grid = F.affine_grid(identity(batch, like.dtype, like.device), [batch, 1, height, width], align_corners=False)
    return grid.permute(0, 3, 1, 2)


class AffineRegressor(nn.Module):
    """Strided CNN + MLP head: (B, C_in, H, W) -> identity + delta, (B, 2, 3). Any H, W >= 16."""

    def __init__(self, in_channels: int, width: int, downsamplings: int):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels + 2
        for _ in range(downsamplings):
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.GroupNorm(4, width), nn.SiLU()]
            channels = width
        layers += [nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16 * width, 4 * width), nn.SiLU()]
        self.features = nn.Sequential(*layers)
        self.delta = nn.Linear(4 * width, 6)
        nn.init.zeros_(self.delta.weight)
        nn.init.zeros_(self.delta.bias)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = self.features(torch.cat([inputs, coordinate_channels(inputs)], dim=1))
        raw = self.delta(hidden).view(-1, 2, 3)
        # Linear part = matrix exponential of a bounded 2x2 generator: invertible for every output (no
        # singular A, no NaN from its inverse), the identity at 0. Soft bounds (slope 1 at 0) keep a bad
        # step from throwing A where no gradient comes back: scale within e^+-1, shift within +-1.5.
        linear = torch.linalg.matrix_exp(torch.tanh(raw[..., :2]))
        shift = 1.5 * torch.tanh(raw[..., 2:] / 1.5)
        return torch.cat([linear, shift], dim=-1)


class KnownAffine(nn.Module):
    """Passes the given affine through; `known` must be provided (B, 2, 3)."""

    name = "known"
    needs_affines = True
    learned = False

    def __init__(self, feature_channels: int, width: int):
        super().__init__()

    def forward(self, source, target, z_source, z_target, known: torch.Tensor | None) -> torch.Tensor:
        if known is None:
            raise ValueError("variant 'known' needs the pair's affine (batch key 'affine')")
        return known


class FramePairPredictor(nn.Module):
    """h(x_t, x_{t+k}) on frames (B, 3, S, S) in [0, 1]; sees both frames and their difference."""

    name = "frame-pair"
    needs_affines = False
    learned = True

    def __init__(self, feature_channels: int, width: int):
        super().__init__()
        self.regressor = AffineRegressor(9, width, downsamplings=4)

    def forward(self, source, target, z_source, z_target, known=None) -> torch.Tensor:
        return self.regressor(torch.cat([source, target, target - source], dim=1))


class FeaturePairPredictor(nn.Module):
    """h(f_c(x_t), f_c(x_{t+k})) on character feature maps (B, C, S, S)."""

    name = "feature-pair"
    needs_affines = False
    learned = True

    def __init__(self, feature_channels: int, width: int):
        super().__init__()
        self.regressor = AffineRegressor(2 * feature_channels, width, downsamplings=3)

    def forward(self, source, target, z_source, z_target, known=None) -> torch.Tensor:
        # Detached: h reads the character features but does not reshape them to suit itself (letting it do
        # so made training unstable, the matte emptied once A and f_c started chasing each other).
        return self.regressor(torch.cat([z_source, z_target], dim=1).detach())


PREDICTORS: dict[str, type[nn.Module]] = {
    predictor.name: predictor for predictor in (KnownAffine, FramePairPredictor, FeaturePairPredictor)
}
VARIANTS = tuple(PREDICTORS)


def build_predictor(variant: str, feature_channels: int, width: int) -> nn.Module:
    """The affine source of `variant` (a key of `PREDICTORS`) for features of `feature_channels`."""
    if variant not in PREDICTORS:
        raise ValueError(f"unknown affine variant {variant!r}")
    return PREDICTORS[variant](feature_channels, width)
