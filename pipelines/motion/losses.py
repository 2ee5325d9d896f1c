"""Loss terms of pipeline `motion`, each weighted by `LossConfig` (docs/design.md section 1).

* scene: L1 + SSIM between the layered render and x_{t+k};
* equivariance: || T_A f_c(x_t) - stopgrad f_c(x_{t+k}) ||^2 on the character (where the matte is).
  The target carries no gradient and f_c is group-normalised, so the loss cannot be lowered by
  shrinking features (the collapse of docs/design.md section 1); it can only be lowered by moving them right;
* matte alignment (learned predictors): the source's own matte moved by A should be the target's;
* alpha sparsity and binarisation: the character layer is a matte and only where it pays;
* plate agreement: alpha is penalised where the clip's plate already explains the target pixel, which
  rules out "alpha covers everything and A stays the identity";
* moving coverage: early in training, each frame's own matte must cover the pixels where the frame differs
  from the clip's median plate (the classical difference matte), which rules out "the matte empties
  before it has learnt where the character is" (a small character: docs/design.md section 1);
* tracked (label-free variants, optional): L1 between the predicted and OpenCV-tracked affines, strong
  during the warm start and a weak prior afterwards.
The background invariance loss (docs/design.md section 1) is identically zero with per-clip plates and is not computed.
"""

from __future__ import annotations

import kornia
import torch

from vidrender.geometry import warp
from vidrender.pipelines.motion.config import LossConfig


def scene_terms(render: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L1, (1 - SSIM) / 2) between frames (B, 3, H, W) in [0, 1]; both scalars."""
    return (render - target).abs().mean(), kornia.losses.ssim_loss(render, target, window_size=7)


def equivariance(
    warped: torch.Tensor, seen: torch.Tensor, target_features: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    """Relative squared error of T_A z (B, C, H, W) against stopgrad z' (B, C, H, W) on the character.

    Weighted by `seen` (B, 1, H, W) times the rendered matte `alpha` (B, 1, H, W), detached: A moves the
    character, not the background, so only the character's features must follow it. (Unmasked, the loss
    rewards features that look alike everywhere, which cannot tell the character from the background:
    on a toy clip it kept the matte empty even with known affines.) Divided by the target's energy on the
    same pixels, so the value is a fraction (0 = exact) whatever the features' scale.
    """
    weight = seen * alpha.detach()
    target = target_features.detach()
    target_energy = target.pow(2).mean(dim=1, keepdim=True)
    error = ((warped - target).pow(2).mean(dim=1, keepdim=True) * weight).sum()
    energy = (target_energy * weight).sum()
    # At least 1 % of the whole map's energy: a near-empty matte gives a near-zero loss, not the ratio of
    # two tiny numbers (whose noise once threw A out of the frame).
    floor = 0.01 * target_energy.sum()
    return error / torch.maximum(energy, floor).clamp_min(1e-6)


def matte_alignment(affine: torch.Tensor, source_matte: torch.Tensor, target_matte: torch.Tensor) -> torch.Tensor:
    """Relative squared error of the source's own matte moved by A against the target's own matte.

    affine (B, 2, 3); mattes (B, 1, H, W) = g_c(f_c(x)) of each frame, detached here: only A learns from
    this term. It keeps a learned predictor pointing at the character while the scene loss alone would
    rather shrink a misaligned matte: moving the character out of the frame (the escape measured with
    `feature-pair`, after which A never came back) now costs the whole target matte.
    """
    moved = warp(source_matte.detach(), affine)
    target = target_matte.detach()
    energy = (moved.pow(2) + target.pow(2)).sum()
    return (moved - target).pow(2).sum() / energy.clamp_min(1.0)


def alpha_sparsity(alpha: torch.Tensor) -> torch.Tensor:
    """Mean alpha (B, 1, H, W) in [0, 1]."""
    return alpha.mean()


def alpha_binary(alpha: torch.Tensor) -> torch.Tensor:
    """Mean alpha (1 - alpha): zero only for a hard 0/1 matte."""
    return (alpha * (1 - alpha)).mean()


def plate_agreement(alpha: torch.Tensor, background: torch.Tensor, target: torch.Tensor, scale: float) -> torch.Tensor:
    """Mean alpha weighted by how well the plate (B, 3, H, W) explains the target pixel (RGB distance << scale).

    Plate and target are constants here: only the matte is pushed, never the plate.
    """
    distance = (background.detach() - target).pow(2).sum(dim=1, keepdim=True)
    return (alpha * torch.exp(-distance / scale**2)).mean()


def moving_coverage(alpha: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    """Share of the moving pixels (B, 1, H, W) in {0, 1} that the mattes alpha (B, 1, H, W) leave uncovered
    (0 = all covered, 1 = none); 0 where nothing moves.

    A floor, not a target: it only pushes alpha up where the frame differs from the median plate, so the
    matte learns where the character is from the first step, before the scene loss can tell it. It fades
    out as the matte priors ramp in (`motion_loss`); from then on the scene loss alone decides.
    """
    return ((1 - alpha) * moving).sum() / moving.sum().clamp_min(1.0)


def affine_l1(predicted: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of normalized affines (B, 2, 3)."""
    return (predicted - reference).abs().mean()


RAMPED_TERMS = ("equivariance", "matte_alignment", "alpha_sparsity", "alpha_binary", "plate_agreement")


def motion_loss(
    out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], weights: LossConfig, step: int, tracked: float = 0.0,
    teacher: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of all terms for one batch of pairs. `out` is `MotionModel.forward`'s dict.

    The alpha terms ramp up linearly over `weights.regulariser_warmup` steps: at the start the character
    RGB is still wrong, alpha earns nothing, and full-strength regularisers would drive the sigmoid into
    saturation at 0 (an empty matte that never recovers). `tracked` > 0 adds the tracked-affine term
    (batch key `tracked`) with that weight (its schedule is the task's). `teacher` is how far the warm start
    still is from over (`MotionTask.warm_start_weight`, 1 -> 0); the two terms that align the predictor
    through the mattes (matte alignment, and `alignment` of its own render) are weighted by 1 - teacher,
    because while the mattes are still forming they only shook the predictor (their gradients were 50x the
    tracked term's and the predictor learned nothing during the warm start). Returns (scalar loss, named
    unweighted terms and the total, as floats).
    """
    target = batch["target"]
    # The matte priors act on each frame's own matte g_c(f_c(x)), which A does not touch: on the carried
    # matte they also rewarded moving the character out of the frame (alpha is 0 there), and a learned
    # predictor took that escape and never came back.
    own_mattes = torch.cat([out["source_matte"], out["target_matte"]])
    l1, ssim = scene_terms(out["frame"], target)
    terms = {
        "scene_l1": l1,
        "scene_ssim": ssim,
        "equivariance": equivariance(out["warped"], out["seen"], out["target_features"], out["alpha"]),
        "matte_alignment": matte_alignment(out["predicted"], out["source_matte"], out["target_matte"]),
        "alpha_sparsity": alpha_sparsity(own_mattes),
        "alpha_binary": alpha_binary(own_mattes),
        "plate_agreement": plate_agreement(
            out["target_matte"], out["background"], target, weights.plate_agreement_scale
        ),
        "moving_coverage": moving_coverage(own_mattes, torch.cat([batch["source_moving"], batch["target_moving"]])),
    }
    if "aligned" in out:
        alignment_l1, alignment_ssim = scene_terms(out["aligned"], target)
        terms["alignment"] = alignment_l1 + weights.scene_ssim / max(weights.scene_l1, 1e-8) * alignment_ssim
    if tracked > 0:
        terms["tracked"] = affine_l1(out["predicted"], batch["tracked"])
    ramp = min(1.0, step / weights.regulariser_warmup) if weights.regulariser_warmup > 0 else 1.0
    weight = {name: getattr(weights, name) * (ramp if name in RAMPED_TERMS else 1.0) for name in terms}
    weight["matte_alignment"] *= 1.0 - teacher
    weight["moving_coverage"] *= 1.0 - ramp
    if "alignment" in terms:
        weight["alignment"] *= 1.0 - teacher
    weight["tracked"] = tracked
    total = sum(weight[name] * value for name, value in terms.items())
    logs = {name: float(value.detach()) for name, value in terms.items()}
    logs["loss"] = float(total.detach())
    return total, logs
