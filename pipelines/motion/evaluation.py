"""`vidrender eval`: a clip's layer stack (or the classical baseline) scored against synthetic truth.

Metrics (docs/design.md section 5), all in the truth clip's frames, at its resolution:
  background_psnr   the background vs the true one (dB, capped at 100: an exact plate has infinite PSNR):
                    the plate for a static camera; for a moving camera every frame's view of the world
                    plate against the frame's true background, the squared error pooled over frames
  matte_iou         mean IoU of mattes > 0.5 vs the true alpha, over frames
  affine_error_px   mean corner displacement (pixels) of the per-frame affines in the frames, over frames
                    where the character is at least half in view (elsewhere its pose is unobservable)
  reconstruction_psnr  the layered re-render vs the clip's clean frames (dB)
  camera_error_px   moving camera only: mean corner displacement (pixels) of the cameras, relative to
                    the reference frame (`metrics.camera_corner_error_px`)
"""

from __future__ import annotations

from pathlib import Path

import torch

from vidrender import metrics
from vidrender.errors import UserError
from vidrender.pipelines.motion.stack import LayerStack
from vidrender.synth import read_truth

PSNR_CAP = 100.0


def score_layers(truth, backgrounds: torch.Tensor, mattes: torch.Tensor, affines: torch.Tensor, render: torch.Tensor,
                 cameras: torch.Tensor | None = None) -> dict[str, float]:
    """Metrics of layers in the frames against `truth` (a `SynthClip`): backgrounds (3, H, W) one plate,
    or (T, 3, H, W) one per frame; mattes (T, 1, H, W); affines (T, 2, 3) normalized, reference frame ->
    frame t; render (T, 3, H, W); cameras (T, 3, 3) frame t -> plate, for a moving-camera truth."""
    size = (truth.height, truth.width)
    if tuple(backgrounds.shape[-2:]) != size:
        raise UserError(
            f"model clip is {backgrounds.shape[-1]}x{backgrounds.shape[-2]}, truth is "
            f"{truth.width}x{truth.height}; evaluate on the clip it was trained on"
        )
    count = min(mattes.shape[0], truth.alpha.shape[0])
    visible = truth.alpha[:count].sum(dim=(1, 2, 3)) >= 0.5 * truth.alpha[truth.reference].sum()
    true_backgrounds = truth.background if backgrounds.dim() == 3 else truth.backgrounds()[:count]
    scores = {
        # identical images have infinite PSNR, which JSON cannot hold: report the cap instead
        "background_psnr": min(metrics.psnr(backgrounds[:count].float(), true_backgrounds.float()), PSNR_CAP),
        "matte_iou": metrics.matte_iou(mattes[:count].float(), truth.alpha[:count].float()),
        "affine_error_px": metrics.affine_error(
            affines[:count][visible].double(), truth.affines[:count][visible].double(), truth.width, truth.height
        ),
        "reconstruction_psnr": min(metrics.psnr(render[:count].float(), truth.clean[:count].float()), PSNR_CAP),
    }
    if truth.camera is not None:
        estimated = torch.eye(3, dtype=torch.float64).expand(count, 3, 3) if cameras is None else cameras[:count]
        scores["camera_error_px"] = metrics.camera_corner_error_px(estimated, truth.camera[:count], size,
                                                                   truth.reference)
    return scores


def evaluate(stack: LayerStack, truth_dir: Path, baseline: str | None = None) -> dict:
    """Scores of a clip's layer stack against its truth folder, plus the classical baseline's if asked."""
    if baseline not in (None, "classical"):
        raise UserError(f"--baseline: unknown baseline {baseline!r}; the one available is 'classical'")
    truth = read_truth(truth_dir)
    moving = not stack.background.is_static
    backgrounds = stack.background.views(stack.frame_count, stack.frame_size) if moving else stack.background.plate
    result = {"model": score_layers(truth, backgrounds, stack.character_frames(0)[:, 3:], stack.frame_affines(0),
                                    stack.render(), stack.background.camera if moving else None)}
    if baseline == "classical":
        from vidrender.pipelines.motion.baseline import (
            MovingBaselineLayers,
            baseline_decompose,
            baseline_decompose_moving,
            character_layer,
            paste,
        )

        decompose = baseline_decompose if truth.camera is None else baseline_decompose_moving
        decomposed = decompose(truth.frames, truth.reference)
        moving = isinstance(decomposed, MovingBaselineLayers)
        backgrounds = decomposed.backgrounds((truth.height, truth.width)) if moving else decomposed.plate
        premultiplied, alpha = character_layer(truth.frames, decomposed)
        render = paste(premultiplied, alpha, decomposed.affines.float(), backgrounds)
        result["classical"] = score_layers(truth, backgrounds, decomposed.alpha, decomposed.affines, render,
                                           decomposed.cameras if moving else None)
    return result
