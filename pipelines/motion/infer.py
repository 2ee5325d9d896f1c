"""After training: a clip's layers from the trained model, at the resolution of the frames given.

For clip c with frames x_0..x_{T-1} (any size H x W) and reference frame r:

1. affines A_t (reference -> frame t, normalized): the known ones, or, going outwards from the
   reference, the predictor's step from the neighbouring frame (or OpenCV's track of frame t, when it
   renders frame t better: a character that left the frame is found again), then aligned to the
   reference frame by rendering the model's reference layer (`align_affines`: no drift along the clip);
2. reference character layer: RGB = x_r, alpha = g_c(f_c(x_r)) evaluated on the features upsampled to
   H x W (g_c is per-pixel, so this is the model's own matte, T_A commuting with it);
3. refinement by analysis-by-synthesis with the layered renderer, `render_over_plate`, at H x W: first
   the learned affines (known ones are kept as given), then the character's alpha, are fitted to all
   frames (robust L1 of the layered render against x_t);
4. plate: per-pixel temporal median of the frames where the character is not (warped alpha below
   PLATE_ALPHA, with a safety band; `background.masked_median_plate`), inpainted where the character
   never uncovers the background. Building the plate from the clip's own pixels is what keeps it sharp
   at native resolution.

The result is the clip's `LayerStack` (`stack.py`). Everything is float32, values in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vidrender.compositing import over
from vidrender.errors import UserError
from vidrender.geometry import camera_grid, camera_view, compose, identity, invert, to_homogeneous, warp
from vidrender.pipelines.motion.background import masked_median_plate
from vidrender.pipelines.motion.config import InferConfig
from vidrender.pipelines.motion.data import Clip, relative_affine, resize_frames, resize_frames_to
from vidrender.pipelines.motion.model import MotionModel
from vidrender.pipelines.motion.stack import LayerStack, single_layer_stack
from vidrender.pipelines.motion.world import WorldClip
from vidrender.schedule import cosine

# Frames are warped in chunks of this many to bound memory on long clips.
CHUNK = 32
# Below this alpha a pixel's foreground colour cannot be told from the plate's; the frame's own is kept.
MIN_ALPHA = 0.05
# The alpha logit of a pixel the character layer cannot have: sigmoid(-30) is 1e-13.
HIDDEN_LOGIT = -30.0
# A pixel counts as background for the plate only if the warped alpha there is below this (after a
# one-pixel dilation), so the character's soft edge never leaks into the plate.
PLATE_ALPHA = 0.02


# The encoder runs on batches of about this many pixels: larger ones leave the CPU caches (measured by
# `vidrender bench`: 1.8x faster at 64 px and 4x at 128 px than batches of 32 frames).
ENCODE_PIXELS = 1 << 15


def encode(model: MotionModel, frames: torch.Tensor) -> torch.Tensor:
    """f_c of frames (T, 3, S, S) at the model's size -> (T, C, S, S), in batches, without gradients."""
    batch = max(1, ENCODE_PIXELS // (frames.shape[-2] * frames.shape[-1]))
    with torch.no_grad():
        return torch.cat([model.encoder(chunk) for chunk in frames.split(batch)])


def matte_logits(model: MotionModel, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """g_c's pre-sigmoid alpha of features (1, C, S, S) upsampled to `size` (H, W) -> (1, 1, H, W)."""
    with torch.no_grad():
        upsampled = F.interpolate(features, size=size, mode="bilinear", align_corners=False)
        return model.matte.layers(upsampled)


def align_affines(model: MotionModel, frames: torch.Tensor, features: torch.Tensor, logits: torch.Tensor,
                  plate: torch.Tensor, reference: int, steps: int, lr: float,
                  guides: torch.Tensor | None = None, visible: torch.Tensor | None = None) -> torch.Tensor:
    """Affines reference -> t (T, 2, 3) from the model's predictor, each frame then aligned to the reference.

    frames (T, 3, S, S) and features (T, C, S, S) at the training size; logits (1, S, S) the reference
    alpha logits; plate (3, S, S); guides: optional (T, 2, 3) normalized affines reference -> t from
    another tracker (OpenCV's, `tracking.py`); visible: optional (T, 1, S, S) bool, the pixels each frame
    really shows (`fit_clip`), the only ones compared. Going outwards from the reference (both directions at
    once), frame t starts from its neighbour's aligned affine followed by the predicted neighbour -> t
    step, or from whichever of these renders frame t better: the neighbour's affine itself, a
    constant-velocity guess (safety nets for the predictor's worst steps) and the guide of frame t. Then
    `steps` Adam steps fit it to x_t by rendering the reference layer over the plate. Each frame is
    aligned to the reference itself, so errors do not accumulate.

    Why guides: a chain of neighbour steps cannot follow a character that is out of view; when it comes
    back the chain is wherever it drifted (89-345 px mean corner error on two synthetic clips with
    17-23-frame exits). OpenCV's tracker re-detects it against the reference frame.
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
            starts = []
            for target, neighbour, predicted in zip(targets, previous, step, strict=True):
                before = 2 * neighbour - target
                candidates = [compose(predicted, affines[neighbour]), affines[neighbour]]
                if before != reference and 0 <= before < count:
                    velocity = compose(affines[neighbour], invert(affines[before]))
                    candidates.append(compose(velocity, affines[neighbour]))
                if guides is not None:
                    candidates.append(guides[target])
                candidates = torch.stack(candidates)
                rendered, _ = render_over_plate(frames[reference], alpha, candidates, plate)
                residual = rendered - frames[target]
                errors = robust_l1_each(residual if visible is None else residual * visible[target])
                starts.append(candidates[errors.argmin()])
        affines[targets] = fit_affines(frames[targets], frames[reference], alpha, torch.stack(starts), plate, steps,
                                       lr, visible=None if visible is None else visible[targets])
    return affines


def fit_affines(frames: torch.Tensor, character: torch.Tensor, alpha: torch.Tensor, affines: torch.Tensor,
                plate: torch.Tensor, steps: int, lr: float, smooth: bool = False,
                visible: torch.Tensor | None = None, cameras: torch.Tensor | None = None) -> torch.Tensor:
    """Align the character layer (RGB (3, H, W), alpha (1, H, W)) to frames (B, 3, H, W) over `plate`:
    Adam on affines (B, 2, 3) from the given start, cosine-decayed lr, on the robust L1 of the residual
    (only where `visible` (B, 1, H, W) bool, if given: the pixels each frame really shows), first averaged
    over 4 x 4 windows at stride 2 if `smooth`. Returns the fitted affines. With `cameras` (B, 3, 3) the
    frames are a moving camera's own frames (B, 3, h, w) and `plate` their views (`render_over_plate`).

    Why smooth: the render resamples the reference frame bilinearly while the frames were filtered by the
    camera (or by box-filter anti-aliasing) at their own scale, so their point spread functions differ and
    the best fit of the sharp residual is biased: started from the true affines of a clean synthetic clip,
    with the true matte and plate, it drifted 0.115 and 0.065 px (two clips). A common blur that dominates
    both PSFs removes most of that: 0.060 / 0.056 px with this window average, which costs nothing
    measurable (a 1-px Gaussian did better, 0.036 / 0.032 px, but made the fits 5x slower on CPU).
    """
    delta = torch.zeros_like(affines, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=lr)
    for step in range(steps):
        optimizer.param_groups[0]["lr"] = cosine(step, steps, lr)
        rendered, _ = render_over_plate(character, alpha, affines + delta, plate, cameras)
        residual = rendered - frames if visible is None else (rendered - frames) * visible
        if smooth:
            residual = F.avg_pool2d(residual, 4, stride=2, padding=1, count_include_pad=False)
        loss = robust_l1(residual)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (affines + delta).detach()


def robust_l1(difference: torch.Tensor) -> torch.Tensor:
    """Mean Charbonnier penalty sqrt(d^2 + 1e-4): L1 away from 0, smooth at 0 (fine sub-pixel alignment)."""
    return (difference.pow(2) + 1e-4).sqrt().mean()


def robust_l1_each(difference: torch.Tensor) -> torch.Tensor:
    """`robust_l1` per item of a batch (B, ...) -> (B,)."""
    return (difference.pow(2) + 1e-4).sqrt().flatten(1).mean(1)


def covered_masks(alpha: torch.Tensor, affines: torch.Tensor) -> torch.Tensor:
    """Where the character may be in each frame: the reference alpha (1, H, W) moved by affines (T, 2, 3),
    dilated by one pixel, >= PLATE_ALPHA. Returns (T, 1, H, W) bool, computed in chunks of frames."""
    masks = []
    for chunk in affines.split(CHUNK):
        moved = warp(alpha[None].expand(chunk.shape[0], -1, -1, -1), chunk.to(alpha.dtype))
        masks.append(F.max_pool2d(moved, 3, stride=1, padding=1) >= PLATE_ALPHA)
    return torch.cat(masks)


def render_over_plate(character: torch.Tensor, alpha: torch.Tensor, affines: torch.Tensor,
                      plate: torch.Tensor, cameras: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The stack's render, differentiable in every input: the reference character RGB (3, H, W) and alpha
    (1, H, W), moved by affines (T, 2, 3), `over` plate (3, H, W). Returns (frames (T, 3, H, W), mattes
    (T, 1, H, W)). (`CharacterLayer.moved` renders a stored layer for export and compose.)

    With `cameras` (T, 3, 3), frame t -> the layers' plane (a moving camera's world plate, normalized),
    the frames are what the cameras see: `plate` is then each frame's view of the plate (T, 3, h, w)
    (`geometry.camera_view`), and the layer is sampled once, straight into each frame's h x w grid, where
    frame pixel p shows the layer at A_t^-1 H_t p."""
    layer = torch.cat([character * alpha, alpha])[None].expand(affines.shape[0], -1, -1, -1)
    if cameras is None:
        moved = warp(layer, affines.to(layer.dtype))
    else:
        to_layer = torch.linalg.solve(to_homogeneous(affines.to(layer.dtype)), cameras.to(layer.dtype))
        moved = F.grid_sample(layer, camera_grid(to_layer, plate.shape[-2:]), mode="bilinear",
                              padding_mode="zeros", align_corners=False)
    return over(moved, plate), moved[:, 3:]


def foreground_colour(frame: torch.Tensor, alpha: torch.Tensor, plate: torch.Tensor, seen: torch.Tensor
                      ) -> torch.Tensor:
    """The character's own colour (3, H, W) in the reference frame (3, H, W), given its alpha (1, H, W) and
    the plate (3, H, W): solves frame = alpha * c + (1 - alpha) * plate for c where alpha >= MIN_ALPHA
    and the plate was `seen` (1, H, W) bool; elsewhere the frame's own colour. (Solving against a guessed
    plate turned partial alpha into garbage colours and kept the matte from growing there.)

    Edge pixels of a frame mix character and background; pasting them unchanged elsewhere drags the
    reference plate's colours along, and fitting affines against that biased them (a scale error of
    about 1 % on a synthetic clip, 0.2-0.6 px corner error even when started from the true motion,
    against 0.06 px with this colour).
    """
    solved = (frame - (1 - alpha) * plate) / alpha.clamp_min(MIN_ALPHA)
    return torch.where((alpha >= MIN_ALPHA) & seen, solved.clamp(0, 1), frame)


def fit_matte(frame: torch.Tensor, frames: torch.Tensor, logits: torch.Tensor, affines: torch.Tensor,
              plate: torch.Tensor, seen: torch.Tensor, steps: int, lr: float,
              filmed: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Fit the character's alpha logits (1, H, W) to frames (T, 3, H, W), affines (T, 2, 3) held: Adam on
    the robust L1 of `render_over_plate`, cosine-decayed lr; the colour follows the matte
    (`foreground_colour` of the reference `frame` (3, H, W) over `plate` (3, H, W)). Returns the fitted
    logits. filmed: for a moving camera, (views (T, 3, h, w), cameras (T, 3, 3)): the frames are then the
    clip's own (T, 3, h, w), rendered through the cameras over the views (`render_over_plate`).

    Affines and matte are fitted one after the other, not jointly: with both free, growing the matte
    while shrinking every affine costs almost nothing, and a joint fit drifted along that direction
    (a 0.4 % scale bias in every affine of a synthetic clip; 0.1 % when fitted in turn).
    """
    logits = logits.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=lr)
    for step in range(steps):
        optimizer.param_groups[0]["lr"] = cosine(step, steps, lr)
        alpha = torch.sigmoid(logits)
        colour = foreground_colour(frame, alpha, plate, seen)
        rendered, _ = (render_over_plate(colour, alpha, affines, plate) if filmed is None
                       else render_over_plate(colour, alpha, affines, *filmed))
        loss = robust_l1(rendered - frames)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return logits.detach()


def working_size(height: int, width: int, max_size: int) -> tuple[int, int]:
    """(h, w) of the frames the layers are fitted on: the frame size, shrunk (aspect kept) to at most
    max_size^2 pixels.

    A pixel budget, not a longest side: the fits cost time and memory by the pixel, and a longest side
    shrank elongated frames most where their characters are smallest (a 21:9 336x144 clip was fitted at
    256x110, and a character of 3 % of it lost its edges to the round trip: matte IoU 0.928, against 0.952
    fitted at its own size)."""
    scale = min(1.0, max_size / math.sqrt(height * width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def fit_clip(model: MotionModel, frames: torch.Tensor, clip_index: int, config: InferConfig,
             known: torch.Tensor | None, tracked: torch.Tensor | None = None, world: WorldClip | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1-4 of the module doc on frames (T, 3, h, w): returns (affines (T, 2, 3), alpha logits (1, h, w)).

    known: (T, 2, 3) affines frame 0 -> t used as given; tracked: (T, 2, 3) OpenCV's affines frame 0 -> t,
    candidates for the label-free start (step 1). Either is re-based on the reference frame here.
    world: a moving camera's clip (`world.WorldClip`, at the working size), of which `frames` are the
    stabilised frames: the start (step 1) and the plate compare only the pixels each frame shows
    (`seen`), and the refinement (step 3) renders the layers through the cameras and compares them with
    the clip's own frames, at the cost of a static clip of the frames' size and free of the stabilised
    frames' resampling."""
    size = frames.shape[-2:]
    reference = config.reference
    visible = None if world is None else world.seen
    small = resize_frames(frames, model.size)
    features = encode(model, small)
    with torch.no_grad():
        coarse_plate = model.plates(torch.tensor([clip_index]))[0]
    if known is not None:
        affines = from_reference(known, reference)
    else:
        small_visible = None if visible is None else resize_frames(visible.float(), model.size) > 0.99
        coarse_logits = in_view(matte_logits(model, features[reference : reference + 1], small.shape[-2:])[0],
                                small_visible, reference)
        guides = None if tracked is None else from_reference(tracked, reference)
        affines = align_affines(model, small, features, coarse_logits, coarse_plate, reference,
                                config.track_steps, config.track_lr, guides, small_visible)
    logits = in_view(matte_logits(model, features[reference : reference + 1], size)[0], visible, reference)
    fallback = F.interpolate(coarse_plate[None], size=size, mode="bilinear", align_corners=False)[0]
    plate, seen = plate_behind(frames, logits, affines, fallback, visible)
    targets = frames if world is None else world.source
    for _ in range(config.rounds):
        filmed = None if world is None else (camera_view(plate, world.cameras, targets.shape[-2:]), world.cameras)
        if known is None:
            alpha = torch.sigmoid(logits)
            character = foreground_colour(frames[reference], alpha, plate, seen)
            background, cameras = (plate, None) if filmed is None else filmed
            affines = fit_affines(targets, character, alpha, affines, background, config.refine_steps,
                                  config.refine_lr, config.smooth_residual, cameras=cameras)
            affines[reference] = identity(1)[0]
        logits = in_view(fit_matte(frames[reference], targets, logits, affines, plate, seen, config.refine_steps,
                                   config.layer_lr, filmed), visible, reference)
        plate, seen = plate_behind(frames, logits, affines, fallback, visible)
    return affines, logits


def in_view(logits: torch.Tensor, visible: torch.Tensor | None, reference: int | None = None) -> torch.Tensor:
    """Alpha logits (1, H, W) with the character removed where the reference frame does not show the world:
    `visible` (1, H, W) bool, or (T, 1, H, W) with the frame `reference`; None keeps everything. The layer
    holds the character as the reference frame shows it, so nothing of it can lie outside that view."""
    if visible is None:
        return logits
    shown = visible if reference is None else visible[reference]
    return logits.masked_fill(~shown, HIDDEN_LOGIT)


def plate_behind(frames: torch.Tensor, logits: torch.Tensor, affines: torch.Tensor, fallback: torch.Tensor,
                 visible: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 4 of the module doc: the plate (3, H, W) behind the character of alpha logits (1, H, W) moved
    by affines (T, 2, 3), from frames (T, 3, H, W) where they are `visible` (T, 1, H, W) bool (all, if
    None), and where it was seen (1, H, W) bool (`background.masked_median_plate`)."""
    covered = covered_masks(torch.sigmoid(logits), affines)
    return masked_median_plate(frames, covered if visible is None else covered | ~visible, fallback)


def from_reference(affines: torch.Tensor, reference: int) -> torch.Tensor:
    """Affines frame 0 -> t (T, 2, 3) re-based to map frame `reference`'s points to frame t's (float32)."""
    return relative_affine(affines.float(), reference, slice(None))


def decompose(model: MotionModel, clip: Clip, clip_index: int, config: InferConfig,
              known: torch.Tensor | None = None, tracked: torch.Tensor | None = None,
              world: WorldClip | None = None) -> LayerStack:
    """The layer stack of one clip: its frames (T, 3, H, W) in [0, 1] at any size (e.g. native).

    The fits run on the frames shrunk to `config.max_size`^2 pixels (`working_size`, if larger); plate, colour
    and matte are then taken at H x W from the full frames. known: (T, 2, 3) normalized affines frame 0
    -> t, used as given (variant `known`); tracked: (T, 2, 3) OpenCV's affines frame 0 -> t, which help
    the label-free variants find a character again after it left the frame; world: for a clip filmed by
    a moving camera, its `WorldClip`, whose stabilised frames are `clip.frames` (`fit_clip`). The stack
    holds the plate (3, H, W), one character layer (straight RGBA (4, H, W) at the reference pose, affines
    (T, 2, 3) reference -> t) and the clip's name, fps and native size; for a moving camera these are in
    the world plate, and `MotionTask.decompose` adds the cameras.
    """
    frames = clip.frames
    count, height, width = frames.shape[0], frames.shape[-2], frames.shape[-1]
    if not 0 <= config.reference < count:
        raise UserError(f"infer.reference: frame {config.reference} is outside the clip's {count} frames")
    model.eval()
    size = working_size(height, width, config.max_size)
    working = frames.float() if size == (height, width) else resize_frames_to(frames.float(), size)
    affines, logits = fit_clip(model, working, clip_index, config, known, tracked,
                               None if world is None else _at_working_size(world, working))
    if size != (height, width):
        logits = F.interpolate(logits[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    visible = None if world is None else world.seen
    logits = in_view(logits, visible, config.reference)
    alpha = torch.sigmoid(logits)
    with torch.no_grad():
        fallback = F.interpolate(model.plates(torch.tensor([clip_index])), size=(height, width), mode="bilinear",
                                 align_corners=False)[0]
    plate, seen = plate_behind(frames, logits, affines, fallback, visible)
    character = foreground_colour(frames[config.reference].float(), alpha, plate, seen)
    return single_layer_stack(plate, torch.cat([character, alpha]), affines, config.reference, float(clip.fps),
                              clip.native_size or (width, height), clip.name)


def _at_working_size(world: WorldClip, frames: torch.Tensor) -> WorldClip:
    """`world` at the layer fit's working size: its stabilised frames resized to `frames` (T, 3, h, w), and
    its masks, plate and own frames by the same scale (cameras are normalized: they hold at any size)."""
    size = tuple(frames.shape[-2:])
    if size == tuple(world.frames.shape[-2:]):
        return world
    scale = size[0] / world.frames.shape[-2]
    frame_size = (max(1, round(world.frame_size[0] * scale)), max(1, round(world.frame_size[1] * scale)))
    return WorldClip(frames=frames, seen=resize_frames_to(world.seen.float(), size) > 0.99,
                     plate=resize_frames_to(world.plate[None], size)[0], cameras=world.cameras,
                     source=resize_frames_to(world.source.float(), frame_size))
