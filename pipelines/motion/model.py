"""The layered equivariant model of pipeline `motion` (docs/design.md section 1), whole in one file.

    z_c   = (x_t, f_c(x_t))                 character code: appearance (the frame's pixels) and shape
                                            features (B, C, S, S), group-normalised
    A     = h(...)                          affine x_t -> x_{t+k}: known / frame-pair / feature-pair
    T_A z_c                                 spatial-transformer warp of every channel alike
    rgb_c = T_A x_t,  alpha = g_c(T_A f_c(x_t), seen)       character layer (RGB + alpha) at S x S
    bg    = plate[clip]                     background branch: one learned plate per clip (background.py)
    x^    = over((alpha * rgb_c, alpha), bg) the one compositing function (vidrender/compositing.py)

Choices that design out the known failure modes (docs/design.md section 1):

* The background is a learned per-clip plate (initialised to the clip's temporal median), i.e. the
  background encoder f_b maps every frame of clip c to the same code. It *cannot* vary per frame, so it
  cannot smuggle the moving character past the invariance loss (which is therefore zero by
  construction and not computed), and the only way to explain a moving character is the alpha layer.
* The character's colours are the source frame's own pixels carried by T_A (the appearance part of
  z_c, exactly equivariant). Where A is right they match the target at once, so alpha is rewarded from
  the first steps instead of dying while a decoder learns colours; and the scene loss gives A the
  strong, textured gradient of direct image alignment. g_c only has to say *where* the character is.
* f_c ends in a GroupNorm without affine parameters: every group of channels has zero mean and unit
  variance over the map, so `|| T_A z_c - z_c' ||` cannot be won by features that shrink to nothing.
* Label-free predictors and the layers do not train each other directly. The layers are rendered with
  the predictor's A detached (or, per pair, with the OpenCV-tracked affine when that explains the
  target better), and the predictor learns from its own render of the detached layers (`align`):
  direct image alignment. When A and the matte trained each other, an A still poor at the end of the
  warm start taught the matte that the character does not pay, and the matte emptied for good.
* `seen` is the warped all-ones map: 1 where T_A z_c comes from inside the source frame. Alpha is
  multiplied by it, so the character layer never invents content from zero padding.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vidrender.compositing import over
from vidrender.geometry import warp
from vidrender.pipelines.motion.background import ClipPlates
from vidrender.pipelines.motion.config import ModelConfig
from vidrender.pipelines.motion.predictors import build_predictor


def conv_block(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3x3 conv -> GroupNorm -> SiLU, 'same' padding (for stride 1)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation),
        nn.GroupNorm(4, out_channels),
        nn.SiLU(),
    )


class CharacterEncoder(nn.Module):
    """f_c: frames (B, 3, S, S) in [0, 1] -> z_c (B, C, S, S), zero mean / unit variance per channel group.

    A full-resolution stem (local colour and edges) joined with a half-resolution context path (dilated
    convolutions, a receptive field of about 30 pixels, to tell character from background). Fully
    convolutional without coordinate inputs, so it commutes with translations up to border and sampling
    effects; the equivariance loss asks the same for the clip's rotations and scalings.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        width = config.encoder_width
        self.stem = conv_block(3, width)
        self.context = nn.Sequential(
            conv_block(width, width, stride=2),
            conv_block(width, width, dilation=2),
            conv_block(width, width, dilation=4),
        )
        self.head = nn.Sequential(
            nn.Conv2d(2 * width, config.feature_channels, 1),
            nn.GroupNorm(config.feature_groups, config.feature_channels, affine=False),
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        local = self.stem(frames)
        context = F.interpolate(self.context(local), size=local.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(torch.cat([local, context], dim=1))


class MatteDecoder(nn.Module):
    """g_c's alpha: warped features (B, C, S, S) -> alpha (B, 1, S, S) in [0, 1], a per-pixel MLP.

    Per-pixel (1x1 convolutions) so that it commutes with the warp: g_c(T_A z) = T_A g_c(z). A matte
    carried from the reference frame to any frame is then exactly the reference matte moved by A, however
    large A is, instead of depending on how a spatial decoder reacts to features rotated further than in
    training.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        width = config.decoder_width
        self.layers = nn.Sequential(
            nn.Conv2d(config.feature_channels, width, 1), nn.SiLU(), nn.Conv2d(width, 1, 1)
        )

    def forward(self, features: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.layers(features)) * seen


class MotionModel(nn.Module):
    """Every trainable part of pipeline `motion`: f_c, g_c, the per-clip plates and the affine predictor."""

    def __init__(self, config: ModelConfig, variant: str, num_clips: int, size: int):
        super().__init__()
        self.size = size
        self.encoder = CharacterEncoder(config)
        self.matte = MatteDecoder(config)
        self.plates = ClipPlates(num_clips, size)
        self.predictor = build_predictor(variant, config.feature_channels, config.predictor_width)

    def carry(self, features: torch.Tensor, affine: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """T_A: move feature maps (B, C, h, w) by normalized affines (B, 2, 3), out(p) = z(A^-1 p).

        Returns the warped features and `seen` (B, 1, h, w) in [0, 1]: how much of each output cell
        comes from inside the source map (zero padding outside).
        """
        ones = torch.ones_like(features[:, :1])
        moved = warp(torch.cat([features, ones], dim=1), affine)
        return moved[:, :-1], moved[:, -1:]

    def render(
        self, frames: torch.Tensor, features: torch.Tensor, affine: torch.Tensor, clip: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Render the frame where the character of `frames` (B, 3, S, S), with features `features` =
        f_c(frames) (B, C, S, S), has moved by `affine` (B, 2, 3), over the plates of `clip` (B,).

        Returns a dict: `frame` (B, 3, S, S) the composite in [0, 1], `character` (B, 3, S, S) = T_A x,
        `alpha` (B, 1, S, S), `background` (B, 3, S, S), `warped` = T_A z (B, C, S, S), `seen`
        (B, 1, S, S).
        """
        warped, seen = self.carry(features, affine)
        alpha = self.matte(warped, seen)
        character = warp(frames, affine)
        background = self.plates(clip)
        frame = over(torch.cat([alpha * character, alpha], dim=1), background)
        return {
            "frame": frame,
            "character": character,
            "alpha": alpha,
            "background": background,
            "warped": warped,
            "seen": seen,
        }

    def forward(
        self,
        source: torch.Tensor,
        target: torch.Tensor,
        clip: torch.Tensor,
        known: torch.Tensor | None = None,
        guide: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One training pair: frames (B, 3, S, S) in [0, 1], clip indices (B,), optional known affines.

        The layers are rendered with the predictor's affine, detached: they learn from its motion but do
        not push it (a misaligned A would teach the matte that the character does not pay, and the matte
        emptied for good). guide (B, 2, 3), optional (label-free variants: OpenCV-tracked affines): each
        pair is rendered with whichever of guide and prediction reproduces its target better, so a
        predictor that is still poor, or a tracker that failed on a pair, never costs the matte.

        Returns `render`'s dict plus `affine` (B, 2, 3) rendered with, `predicted` (B, 2, 3) the
        predictor's own, `source_features` = f_c(x_t) and `target_features` = f_c(x_{t+k}) (both
        (B, C, S, S), with gradients), each frame's own matte `source_matte` = g_c(f_c(x_t)),
        `target_matte` = g_c(f_c(x_{t+k})) (B, 1, S, S), unwarped, and for learned predictors `aligned`
        (B, 3, S, S), the predictor's own render (`align`).
        """
        both = self.encoder(torch.cat([source, target], dim=0))
        source_features, target_features = both.chunk(2, dim=0)
        predicted = self.predictor(source, target, source_features, target_features, known)
        out = self.render(source, source_features, predicted.detach(), clip)
        out["affine"] = predicted.detach()
        if guide is not None:
            out = self._better_of(out, self.render(source, source_features, guide, clip) | {"affine": guide}, target)
        own_mattes = torch.sigmoid(self.matte.layers(both))
        source_matte, target_matte = own_mattes.chunk(2, dim=0)
        out.update(predicted=predicted, source_features=source_features, target_features=target_features,
                   source_matte=source_matte, target_matte=target_matte)
        if self.predictor.learned:
            out["aligned"] = self.align(source, source_matte, predicted, out["background"])
        return out

    @staticmethod
    def _better_of(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], target: torch.Tensor
                   ) -> dict[str, torch.Tensor]:
        """Per pair, the render dict whose `frame` has the lower L1 to `target` (B, 3, S, S)."""
        with torch.no_grad():
            errors = [(render["frame"] - target).abs().mean((1, 2, 3)) for render in (first, second)]
            take_second = errors[1] < errors[0]
        pick = take_second.view(-1, *([1] * (target.dim() - 1)))
        return {key: torch.where(pick if value.dim() == 4 else pick[..., 0], second[key], value)
                for key, value in first.items()}

    @staticmethod
    def align(source: torch.Tensor, source_matte: torch.Tensor, affine: torch.Tensor, background: torch.Tensor
              ) -> torch.Tensor:
        """The predictor's own render (B, 3, S, S): the source character (frames (B, 3, S, S), own matte
        (B, 1, S, S)) moved by `affine` (B, 2, 3) over `background` (B, 3, S, S), with the layers detached.

        Its scene loss reaches only A: direct image alignment through the layered renderer, which is how a
        learned predictor learns the motion without labels, while the layers stay out of its way.
        """
        alpha = source_matte.detach()
        return over(warp(torch.cat([source * alpha, alpha], dim=1), affine), background.detach())
