"""`vidrender eval`: a clip's layer stack (or the classical baseline) scored against synthetic truth.

Metrics (docs/design.md section 5), all at the truth clip's resolution:
  background_psnr   plate vs the true plate (dB, capped at 100: an exact plate has infinite PSNR)
  matte_iou         mean IoU of mattes > 0.5 vs the true alpha, over frames
  affine_error_px   mean corner displacement (pixels) of the per-frame affines, over frames where the
                    character is at least half in view (elsewhere its pose is unobservable)
  reconstruction_psnr  the layered re-render vs the clip's clean frames (dB)
"""

from __future__ import annotations

from pathlib import Path

from vidrender import metrics
from vidrender.errors import UserError
from vidrender.pipelines.motion.stack import LayerStack
from vidrender.synth import read_truth

PSNR_CAP = 100.0


def score_layers(truth, plate, mattes, affines, render) -> dict[str, float]:
    """Metrics of plate (3,H,W), mattes (T,1,H,W), affines (T,2,3) normalized, render (T,3,H,W) vs truth."""
    if plate.shape[-2:] != truth.background.shape[-2:]:
        raise UserError(
            f"model clip is {plate.shape[-1]}x{plate.shape[-2]}, truth is "
            f"{truth.background.shape[-1]}x{truth.background.shape[-2]}; evaluate on the clip it was trained on"
        )
    count = min(mattes.shape[0], truth.alpha.shape[0])
    visible = truth.alpha[:count].sum(dim=(1, 2, 3)) >= 0.5 * truth.alpha[truth.reference].sum()
    height, width = plate.shape[-2:]
    return {
        # identical images have infinite PSNR, which JSON cannot hold: report the cap instead
        "background_psnr": min(metrics.psnr(plate.float(), truth.background.float()), PSNR_CAP),
        "matte_iou": metrics.matte_iou(mattes[:count].float(), truth.alpha[:count].float()),
        "affine_error_px": metrics.affine_error(
            affines[:count][visible].double(), truth.affines[:count][visible].double(), width, height
        ),
        "reconstruction_psnr": min(metrics.psnr(render[:count].float(), truth.clean[:count].float()), PSNR_CAP),
    }


def evaluate(stack: LayerStack, truth_dir: Path, baseline: str | None = None) -> dict:
    """Scores of a clip's layer stack against its truth folder, plus the classical baseline's if asked."""
    if baseline not in (None, "classical"):
        raise UserError(f"--baseline: unknown baseline {baseline!r}; the one available is 'classical'")
    truth = read_truth(truth_dir)
    if truth.camera is not None:
        # its background.png is a world plate, larger than the frames: plate PSNR against it means nothing
        raise UserError(f"{truth_dir}: the truth was filmed by a moving camera; `eval` scores static-camera "
                        f"layers only so far")
    character = stack.characters[0]
    mattes = character.moved()[:, 3:]
    result = {"model": score_layers(truth, stack.background.plate, mattes, character.affines, stack.render())}
    if baseline == "classical":
        from vidrender.pipelines.motion.baseline import baseline_decompose, character_layer, paste

        decomposed = baseline_decompose(truth.frames, truth.reference)
        premultiplied, alpha = character_layer(truth.frames, decomposed)
        render = paste(premultiplied, alpha, decomposed.affines.float(), decomposed.plate)
        result["classical"] = score_layers(truth, decomposed.plate, decomposed.alpha, decomposed.affines, render)
    return result
