"""After training: a clip's layers from the trained model, at the resolution of the frames given.

For clip c with frames x_0..x_{T-1} (any size H x W) and reference frame r:

1. affines A_t (reference -> frame t, normalized): the known ones, or, going outwards from the
   reference, the predictor's step from the neighbouring frame, then aligned to the reference frame by
   rendering the model's reference layer (`track_affines`: no drift along the clip);
2. reference character layer: RGB = x_r, alpha = g_c(f_c(x_r)) evaluated on the features upsampled to
   H x W (g_c is per-pixel, so this is the model's own matte, T_A commuting with it);
3. refinement by analysis-by-synthesis with the layered renderer, `render_layers`, at H x W: first
   the learned affines (known ones are kept as given), then the character's alpha, are fitted to all
   frames (robust L1 of alpha_t * char_t + (1 - alpha_t) * plate against x_t);
4. plate: per-pixel temporal median of the frames where the character is not (warped alpha < 0.5 with
   a safety band), the model's plate (upsampled) where the character never uncovers the background.
   Building the plate from the clip's own pixels is what keeps it sharp at native resolution.

Per-frame mattes are the reference alpha moved by A_t. Everything is float32, values in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipelines.motion.config import InferConfig
from pipelines.motion.data import Clip, resize_frames
from pipelines.motion.model import MotionModel
from vidrender.geometry import compose, identity, invert, warp

# Frames are encoded in chunks to bound memory on long clips.
CHUNK = 32
MODE = "bilinear"
FITCOL = False
BLUR = 0.0


def smooth(x):
    import kornia
    return kornia.filters.gaussian_blur2d(x, (5, 5), (BLUR, BLUR))
# A pixel counts as background for the plate only if the warped alpha there is below this (after a
# one-pixel dilation), so the character's soft edge never leaks into the plate.
PLATE_ALPHA = 0.02


def encode(model: MotionModel, frames: torch.Tensor) -> torch.Tensor:
    """f_c of frames (T, 3, S, S) at the model's size -> (T, C, S, S), in chunks, without gradients."""
    with torch.no_grad():
        return torch.cat([model.encoder(chunk) for chunk in frames.split(CHUNK)])


def matte_logits(model: MotionModel, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """g_c's pre-sigmoid alpha of features (1, C, S, S) upsampled to `size` (H, W) -> (1, 1, H, W)."""
    with torch.no_grad():
        upsampled = F.interpolate(features, size=size, mode="bilinear", align_corners=False)
        return model.matte.layers(upsampled)


def track_affines(model: MotionModel, frames: torch.Tensor, features: torch.Tensor, logits: torch.Tensor,
                  plate: torch.Tensor, reference: int, steps: int, lr: float) -> torch.Tensor:
    """Affines reference -> t (T, 2, 3) from the model's predictor, each frame then aligned to the reference.

    frames (T, 3, S, S) and features (T, C, S, S) at the training size; logits (1, S, S) the reference
    alpha logits; plate (3, S, S). Going outwards from the reference (both directions at once), frame t
    starts from its neighbour's aligned affine followed by the predicted neighbour -> t step, then `steps`
    Adam steps fit it to x_t by rendering the reference layer over the plate. Each frame is aligned to the
    reference itself, so predictor errors do not accumulate along the clip.
    """
    count = frames.shape[0]
    affines = identity(count)
    alpha = torch.sigmoid(logits)
    forward = list(range(reference + 1, count))
    backward = list(range(reference - 1, -1, -1))
    for index in range(max(len(forward), len(backward))):
        targets = [order[index] for order in (forward, backward) if index < len(order)]
        previous = [t - 1 if t > reference else t + 1 for t in targets]
        with torch.no_grad():
            step = model.predictor(frames[previous], frames[targets], features[previous], features[targets], None)
        start = compose(step, affines[previous])
        affines[targets] = fit_affines(frames[targets], frames[reference], alpha, start, plate, steps, lr)
    return affines


def fit_affines(frames: torch.Tensor, character: torch.Tensor, alpha: torch.Tensor, affines: torch.Tensor,
                plate: torch.Tensor, steps: int, lr: float) -> torch.Tensor:
    """Align the character layer (RGB (3, H, W), alpha (1, H, W)) to frames (B, 3, H, W) over `plate`:
    Adam on affines (B, 2, 3) from the given start, cosine-decayed lr. Returns the fitted affines."""
    delta = torch.zeros_like(affines, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=lr)
    for step in range(steps):
        optimizer.param_groups[0]["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        rendered, _ = render_layers(character, alpha, affines + delta, plate)
        loss = robust_l1(smooth(rendered) - smooth(frames)) if BLUR else robust_l1(rendered - frames)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (affines + delta).detach()


def robust_l1(difference: torch.Tensor) -> torch.Tensor:
    """Mean Charbonnier penalty sqrt(d^2 + 1e-4): L1 away from 0, smooth at 0 (fine sub-pixel alignment)."""
    return (difference.pow(2) + 1e-4).sqrt().mean()


def masked_median_plate(frames: torch.Tensor, alpha: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Temporal median of frames (T, 3, H, W) over the frames where alpha (T, 1, H, W) marks background.

    Background = alpha < PLATE_ALPHA after dilating alpha by one pixel. Where no frame shows background,
    `fallback` (3, H, W) is used. Returns (3, H, W). Rows are done in bands to bound memory.
    """
    covered = F.max_pool2d(alpha, 3, stride=1, padding=1) >= PLATE_ALPHA
    plate = torch.empty_like(fallback)
    band = max(1, (1 << 24) // max(1, frames.shape[0] * 3 * frames.shape[-1]))
    for top in range(0, frames.shape[-2], band):
        rows = slice(top, top + band)
        values = frames[:, :, rows].masked_fill(covered[:, :, rows].expand(-1, 3, -1, -1), float("nan"))
        median = values.nanmedian(dim=0).values
        plate[:, rows] = torch.where(torch.isnan(median), fallback[:, rows], median)
    return plate


def render_layers(character: torch.Tensor, alpha: torch.Tensor, affines: torch.Tensor,
                  plate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Layered render: the reference character RGB (3, H, W) and alpha (1, H, W), moved by affines (T, 2, 3),
    over plate (3, H, W). Returns (frames (T, 3, H, W), mattes (T, 1, H, W))."""
    layer = torch.cat([character * alpha, alpha])[None].expand(affines.shape[0], -1, -1, -1)
    moved = warp(layer, affines.to(layer.dtype), mode=MODE)
    return moved[:, :3] + (1 - moved[:, 3:]) * plate, moved[:, 3:]


def fit_matte(frames: torch.Tensor, character: torch.Tensor, logits: torch.Tensor, affines: torch.Tensor,
              plate: torch.Tensor, steps: int, lr: float, fit_colour: bool = False):
    """Fit the character's alpha logits (1, H, W) to frames (T, 3, H, W), affines (T, 2, 3) held: Adam on
    the robust L1 of `render_layers`, cosine-decayed lr. Returns the fitted logits.

    Affines and matte are fitted one after the other, not jointly: with both free, growing the matte
    while shrinking every affine costs almost nothing, and a joint fit drifted along that direction
    (a 0.4 % scale bias in every affine of a synthetic clip; 0.1 % when fitted in turn).
    """
    logits = logits.clone().requires_grad_(True)
    character = character.clone().requires_grad_(fit_colour)
    optimizer = torch.optim.Adam([logits] + ([character] if fit_colour else []), lr=lr)
    for step in range(steps):
        for g, base in zip(optimizer.param_groups, (lr,)):
            g["lr"] = base * 0.5 * (1 + math.cos(math.pi * step / steps))
        if fit_colour:
            optimizer.param_groups[0]["params"]
        rendered, _ = render_layers(character.clamp(0, 1), torch.sigmoid(logits), affines, plate)
        loss = robust_l1(rendered - frames)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if fit_colour:
        return logits.detach(), character.detach().clamp(0, 1)
    return logits.detach()


def decompose(model: MotionModel, frames: torch.Tensor, clip_index: int, config: InferConfig,
              known: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Layers of one clip: frames (T, 3, H, W) in [0, 1] at any size (e.g. native).

    known: (T, 2, 3) normalized affines frame 0 -> t, used as given (variant `known`). Returns a dict:
    `plate` (3, H, W); `character` (3, H, W) and `alpha` (1, H, W) the character layer at the reference
    pose (straight RGB); `affines` (T, 2, 3) reference -> t; `mattes` (T, 1, H, W); `render` (T, 3, H, W)
    the layered reconstruction.
    """
    model.eval()
    frames = frames.float()
    count, size = frames.shape[0], frames.shape[-2:]
    reference = config.reference
    small = resize_frames(frames, model.size)
    features = encode(model, small)
    with torch.no_grad():
        coarse_plate = model.plates(torch.tensor([clip_index]))[0]
    coarse_logits = matte_logits(model, features[reference : reference + 1], small.shape[-2:])[0]
    if known is not None:
        affines = compose(known.float(), invert(known[reference].float()).expand(count, 2, 3))
    else:
        affines = track_affines(model, small, features, coarse_logits, coarse_plate, reference,
                                config.track_steps, config.track_lr)
    character = frames[reference]
    logits = matte_logits(model, features[reference : reference + 1], size)[0]
    fallback = F.interpolate(coarse_plate[None], size=size, mode="bilinear", align_corners=False)[0]
    _, mattes = render_layers(character, torch.sigmoid(logits), affines, fallback)
    plate = masked_median_plate(frames, mattes, fallback)
    for _ in range(config.rounds):
        if known is None:
            affines = fit_affines(frames, character, torch.sigmoid(logits), affines, plate, config.refine_steps,
                                  config.refine_lr)
            affines[reference] = identity(1)[0]
        if FITCOL:
            logits, character = fit_matte(frames, character, logits, affines, plate, config.refine_steps, config.layer_lr, True)
        else:
            logits = fit_matte(frames, character, logits, affines, plate, config.refine_steps, config.layer_lr)
        _, mattes = render_layers(character, torch.sigmoid(logits), affines, plate)
        plate = masked_median_plate(frames, mattes, plate)
    alpha = torch.sigmoid(logits)
    render, mattes = render_layers(character, alpha, affines, plate)
    return {"plate": plate, "character": character, "alpha": alpha, "affines": affines, "mattes": mattes,
            "render": render.clamp(0, 1)}


def clip_artifact(model: MotionModel, clip: Clip, clip_index: int, config: InferConfig,
                  known: torch.Tensor | None) -> dict:
    """The checkpoint entry of one clip: its layers (`decompose`) plus name, fps, native size, reference.

    Mattes are stored as uint8 (T, 1, H, W); they are the reference alpha moved by the affines.
    """
    layers = decompose(model, clip.frames, clip_index, config, known)
    height, width = clip.frames.shape[-2:]
    return {
        "name": clip.name,
        "fps": float(clip.fps),
        "native_size": list(clip.native_size or (width, height)),
        "size": [width, height],
        "reference": config.reference,
        "plate": layers["plate"],
        "character": torch.cat([layers["character"], layers["alpha"]]),
        "affines": layers["affines"],
        "affine_convention": "normalized coordinates, align_corners=False; maps reference-frame points "
        "to frame-t points (vidrender/geometry.py)",
        "mattes": (layers["mattes"] * 255).round().to(torch.uint8),
    }
