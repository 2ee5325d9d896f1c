"""A trained clip's layers from its checkpoint entry: per-frame character RGBA, mattes and re-render.

Works from the `.pt` alone (no training video): the entry's reference character layer (RGBA at the
clip's size), one normalized affine per frame and the plate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vidrender.errors import UserError
from vidrender.geometry import invert

# frames warped at once: bounds the sampling grid's memory on long clips at large sizes
CHUNK = 32
ENTRY_KEYS = ("plate", "character", "affines", "fps", "native_size", "reference")


def clip_entry(checkpoint: dict, index: int, path: str) -> dict:
    """The artifact entry of clip `index`, checked for the tensors inference needs."""
    clips = checkpoint["artifact"].get("clips", [])
    if not 0 <= index < len(clips):
        raise UserError(f"{path}: has {len(clips)} clip(s), no clip {index}")
    entry = clips[index]
    missing = [key for key in ENTRY_KEYS if key not in entry]
    if missing:
        raise UserError(f"{path}: clip {index} lacks {', '.join(missing)}")
    plate, character, affines = entry["plate"], entry["character"], entry["affines"]
    if plate.dim() != 3 or plate.shape[0] != 3 or character.shape != (4, *plate.shape[1:]):
        raise UserError(f"{path}: clip {index} has a plate {tuple(plate.shape)} and character {tuple(character.shape)}")
    if affines.dim() != 3 or affines.shape[1:] != (2, 3) or not torch.isfinite(affines).all():
        raise UserError(f"{path}: clip {index} has malformed affines {tuple(affines.shape)}")
    return entry


def character_frames(entry: dict, affines: torch.Tensor | None = None,
                     size: tuple[int, int] | None = None) -> torch.Tensor:
    """Straight-alpha RGBA character layer per frame, (T, 4, H, W): the reference layer moved by A_t.

    affines: (T, 2, 3) normalized (reference -> frame t); defaults to the clip's own motion.
    size: (H, W) of the frames, default the layer's own. Affines are normalized, so on frames of another
    size the character keeps its place and size relative to the frame. The layer is sampled once,
    straight into the output grid (resizing first and then warping blurs it twice), and premultiplied,
    so the colour stored outside the matte (the clip's own background) cannot bleed into the edge.
    """
    affines = entry["affines"] if affines is None else affines
    character = entry["character"].float()
    premultiplied = torch.cat([character[:3] * character[3:], character[3:]])[None]
    height, width = character.shape[-2:] if size is None else size
    if height * 2 < premultiplied.shape[-2] or width * 2 < premultiplied.shape[-1]:
        # bilinear sampling aliases when shrinking by more than 2x: shrink with a proper filter first
        premultiplied = F.interpolate(premultiplied, size=(height, width), mode="bilinear", align_corners=False,
                                      antialias=True)
    moved = []
    for chunk in affines.float().split(CHUNK):
        grid = F.affine_grid(invert(chunk), [len(chunk), 4, height, width], align_corners=False)
        moved.append(F.grid_sample(premultiplied.expand(len(chunk), -1, -1, -1), grid, mode="bilinear",
                                   padding_mode="zeros", align_corners=False))
    moved = torch.cat(moved)
    alpha = moved[:, 3:]
    rgb = torch.where(alpha > 1e-4, moved[:, :3] / alpha.clamp_min(1e-4), torch.zeros_like(moved[:, :3]))
    return torch.cat([rgb.clamp(0, 1), alpha.clamp(0, 1)], dim=1)


def over(character: torch.Tensor, plate: torch.Tensor) -> torch.Tensor:
    """Composite straight RGBA (T, 4, H, W) over a plate (3, H, W) -> (T, 3, H, W)."""
    alpha = character[:, 3:]
    return alpha * character[:, :3] + (1 - alpha) * plate[None]
