"""Training step of `scene3d`: the swap-rendering objective of Equivariant Neural Rendering.

For a pair of views (a, b) of one scene: infer both scenes, rotate a's scene into b's camera frame and
b's into a's, render, and compare each render with the *partner's* image. With the temporal extension,
a's scene is first taken at time offset `t_b - t_a` (and b's at `t_a - t_b`). Both directions run as one
batch of 2B through each stage (one inverse rendering, one grid_sample, one rendering), so the step
costs the same as the reference's batch of 2B single images.

A batch is a dict: image_a, image_b (B, 3, S, S) float in [0, 1]; azimuth_a, elevation_a, azimuth_b,
elevation_b (B,) degrees; time_a, time_b (B,) int time steps (only read when the model has T > 1).
"""

from __future__ import annotations

import torch
from torchvision.utils import make_grid

from vidrender.geometry3d import relative_rotation
from vidrender.pipelines.scene3d.config import Scene3dConfig
from vidrender.pipelines.scene3d.losses import rendering_loss, temporal_smoothness
from vidrender.pipelines.scene3d.model import SceneRenderer

IMAGE_KEYS = ("image_a", "image_b")
POSE_KEYS = ("azimuth_a", "elevation_a", "azimuth_b", "elevation_b")
TIME_KEYS = ("time_a", "time_b")


def unwrap(model: torch.nn.Module) -> SceneRenderer:
    """The SceneRenderer inside DDP / accelerate (`.module`) or torch.compile (`._orig_mod`) wrappers."""
    while not isinstance(model, SceneRenderer):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            raise TypeError(f"expected a SceneRenderer (possibly wrapped), got {type(model).__name__}")
        model = inner
    return model


def check_batch(batch: dict, model: SceneRenderer) -> None:
    """Raise ValueError when a batch lacks keys or its shapes disagree with each other or the model."""
    needed = IMAGE_KEYS + POSE_KEYS + (TIME_KEYS if model.timesteps > 1 else ())
    missing = [key for key in needed if key not in batch]
    if missing:
        raise ValueError(f"scene3d batch lacks {missing}")
    size = model.config.image_size
    pairs = batch["image_a"].shape[0]
    for key in needed:
        expected = (pairs, 3, size, size) if key in IMAGE_KEYS else (pairs,)
        if tuple(batch[key].shape) != expected:
            raise ValueError(f"batch[{key!r}] has shape {tuple(batch[key].shape)}, expected {expected}")


def swap_render(
    model: torch.nn.Module, batch: dict, keep_all_times: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Run the swap-rendering forward pass (through `model(...)`, so wrappers apply).

    model: a SceneRenderer, possibly wrapped (DDP, accelerate, torch.compile). Returns (rendered,
    targets, all_time_scenes): rendered and targets are (2B, 3, S, S), item i < B rendered from a's
    scene in b's view (target image_b), item B + i from b's scene in a's view (target image_a).
    all_time_scenes is (2B, T, C, D, H, W) when `keep_all_times` (for the smoothness penalty; costs T
    times the scene head), else None.
    """
    core = unwrap(model)
    check_batch(batch, core)
    device = next(core.parameters()).device
    images = torch.cat([batch["image_a"], batch["image_b"]]).to(device)
    targets = torch.cat([batch["image_b"], batch["image_a"]]).to(device)
    pose = {key: batch[key].to(device, torch.float32) for key in POSE_KEYS}
    rotation = relative_rotation(  # a -> b for the first B items, b -> a for the rest
        torch.cat([pose["azimuth_a"], pose["azimuth_b"]]),
        torch.cat([pose["elevation_a"], pose["elevation_b"]]),
        torch.cat([pose["azimuth_b"], pose["azimuth_a"]]),
        torch.cat([pose["elevation_b"], pose["elevation_a"]]),
    )
    time_offsets = torch.zeros(images.shape[0], dtype=torch.long, device=device)
    if core.timesteps > 1:
        gap = batch["time_b"].to(device) - batch["time_a"].to(device)
        time_offsets = torch.cat([gap, -gap])
    rendered, all_time_scenes = model(images, rotation, time_offsets, keep_all_times)
    return rendered, targets, all_time_scenes


def training_step(model: torch.nn.Module, batch: dict, config: Scene3dConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one batch (call `.backward()` on it) and its parts for logging.

    logs: loss, pixel (l1 or l2), ssim (when weighted), smoothness (when weighted) and psnr (dB, of the
    renders against their targets).
    """
    smoothness_weight = config.temporal.smoothness_weight
    rendered, targets, all_time_scenes = swap_render(model, batch, keep_all_times=smoothness_weight > 0)
    loss, parts = rendering_loss(rendered, targets, config.loss)
    if all_time_scenes is not None:
        smoothness = temporal_smoothness(all_time_scenes)
        loss = loss + smoothness_weight * smoothness
        parts["smoothness"] = smoothness.detach()
    mse = (rendered.detach().float() - targets.float()).square().mean().clamp_min(1e-10)
    parts["psnr"] = -10 * torch.log10(mse)
    logs = {"loss": loss.item(), **{name: value.item() for name, value in parts.items()}}
    return loss, logs


@torch.no_grad()
def preview(model: torch.nn.Module, batch: dict, max_pairs: int = 4) -> torch.Tensor:
    """A picture of the objective on up to `max_pairs` pairs: (3, H, W) float in [0, 1].

    Columns per pair: image a, image b, a's scene rendered in b's view, b's scene rendered in a's view.
    """
    pairs = min(max_pairs, batch["image_a"].shape[0])
    subset = {key: value[:pairs] for key, value in batch.items() if torch.is_tensor(value)}
    rendered = swap_render(model, subset)[0].float().cpu()
    tiles = [subset["image_a"].float(), subset["image_b"].float(), rendered[:pairs], rendered[pairs:]]
    return make_grid(torch.stack(tiles, dim=1).flatten(0, 1), nrow=4, padding=2, pad_value=1.0)
