"""`vidrender scene latent`: the scene tensor inferred from one image, shown as colour.

The write-up reduced the scene to C = 3 channels so that it could be looked at: channels as colour, one
picture per depth slice, an animation over the time slices. Here:

* **Colour map** (`ColourMap`): an affine map of each voxel's C channel values to RGB, fitted once on
  all time slices of one scene so that colours mean the same in every slice and frame. C = 3: the
  channels are R, G, B. C > 3: the first three principal components of the channel vectors of the
  voxels inside the mask (the directions along which voxels differ most), each signed so that its
  largest-magnitude loading is positive, which makes the projection deterministic. C = 1 is grey;
  C = 2 is (c0, c1, c1). Each of the three colour values is then stretched linearly so that the voxels
  inside the mask between its 1st and 99th percentile span [0, 1] (the rest saturate: a trained
  latent has long tails, and a min-max stretch leaves most voxels a flat grey); voxels outside the
  mask are black.
* **Depth slices**: slice i is the `(H, W)` plane at index i of the depth axis D (the viewing axis of
  the source image, index growing towards the camera; see `vidrender.geometry3d`), so each slice is
  seen as the camera sees the scene. Slices are tiled left to right, top to bottom, upscaled by whole
  pixels (nearest neighbour) and separated by white lines.
* **Time**: a PNG shows the slices at one time offset `dt` (fractional offsets interpolate between
  slices, as rendering does); an animation has one frame per time slice, offsets -(T // 2) .. T-1-T//2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vidrender.errors import UserError
from vidrender.pipelines.scene3d import infer
from vidrender.pipelines.scene3d.model import SceneRenderer, select_time

GAP = 2  # white pixels between tiles


@dataclass(frozen=True)
class ColourMap:
    """rgb = clamp(((v - centre) @ axes.T - low) / (high - low), 0, 1) for a voxel's channel vector v (C,).

    centre (C,), axes (3, C), low and high (3,): the colour values of the darkest and brightest voxels.
    """

    centre: torch.Tensor
    axes: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor

    @classmethod
    def fit(cls, scenes: torch.Tensor, mask: torch.Tensor, clip: float = 0.01) -> ColourMap:
        """Fit on scenes (..., C, D, H, W) over the voxels where mask (D, H, W) is nonzero (see module doc).

        clip: the share of voxels allowed to saturate at each end of each colour (0: min-max stretch).
        """
        if not 0 <= clip < 0.5:
            raise ValueError(f"clip must lie in [0, 0.5), got {clip}")
        channels = scenes.shape[-4]
        samples = _voxels(scenes)[mask.bool().expand(scenes.shape[:-4] + mask.shape)]  # (N, C)
        if samples.shape[0] == 0:
            raise ValueError("the mask selects no voxels to fit a colour map on")
        centre = torch.zeros(channels)
        if channels >= 3:
            axes = torch.eye(3) if channels == 3 else _principal_axes(samples)
            centre = samples.mean(0) if channels > 3 else centre
        else:
            axes = torch.zeros(3, channels)
            axes[torch.arange(3), torch.tensor([0, 1, 1]).clamp(max=channels - 1)] = 1
        colours = (samples - centre) @ axes.T
        if clip == 0:
            return cls(centre, axes, colours.amin(0), colours.amax(0))
        low, high = torch.quantile(colours, torch.tensor([clip, 1 - clip]), dim=0)
        return cls(centre, axes, low, high)

    def __call__(self, scenes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Colour pictures of scenes (..., C, D, H, W): (..., D, 3, H, W) in [0, 1], black outside mask."""
        colours = (_voxels(scenes) - self.centre) @ self.axes.T
        stretched = ((colours - self.low) / (self.high - self.low).clamp_min(1e-8)).clamp(0, 1)
        return (stretched * mask.float()[..., None]).movedim(-1, -3)


def _voxels(scenes: torch.Tensor) -> torch.Tensor:
    """(..., C, D, H, W) -> (..., D, H, W, C) float32 on the CPU."""
    return scenes.detach().float().cpu().movedim(-4, -1)


def _principal_axes(samples: torch.Tensor) -> torch.Tensor:
    """The 3 leading principal directions (3, C) of samples (N, C), signed: largest |loading| positive."""
    axes = torch.linalg.svd(samples - samples.mean(0), full_matrices=False).Vh[:3]
    if axes.shape[0] < 3:  # fewer distinct samples than 3: pad with zero directions (constant colour)
        axes = torch.cat([axes, axes.new_zeros(3 - axes.shape[0], axes.shape[1])])
    strongest = axes.abs().argmax(1)
    signs = torch.sign(axes[torch.arange(3), strongest])
    return axes * torch.where(signs == 0, 1.0, signs)[:, None]


def depth_grid(slices: torch.Tensor, scale: int = 1, columns: int = 8) -> torch.Tensor:
    """Tile depth slices (D, 3, H, W) into one picture (3, rows*(H*scale+GAP)-GAP, cols*(W*scale+GAP)-GAP).

    `columns` tiles per row (fewer when D is smaller), each upscaled `scale` times (nearest), on white.
    """
    if scale < 1 or columns < 1:
        raise ValueError(f"depth_grid needs scale >= 1 and columns >= 1, got {scale} and {columns}")
    depth, _, height, width = slices.shape
    tiles = F.interpolate(slices, scale_factor=scale, mode="nearest") if scale > 1 else slices
    columns = min(columns, depth)
    rows = math.ceil(depth / columns)
    tile_h, tile_w = height * scale, width * scale
    grid = torch.ones(3, rows * (tile_h + GAP) - GAP, columns * (tile_w + GAP) - GAP)
    for index in range(depth):
        top, left = (index // columns) * (tile_h + GAP), (index % columns) * (tile_w + GAP)
        grid[:, top : top + tile_h, left : left + tile_w] = tiles[index]
    return grid


def latent_frames(
    model: SceneRenderer, image: torch.Tensor, dt: float | None = 0.0, tile: int = 64, columns: int = 8
) -> torch.Tensor:
    """Pictures of the scene inferred from `image` (3, S, S) in [0, 1]: (N, 3, H', W') in [0, 1].

    dt: one picture of the slices at that time offset (N = 1); None: one per time slice (N = T, temporal
    models only). Each depth slice is upscaled to about `tile` pixels; `columns` slices per row.
    """
    if tile < 1 or columns < 1:
        raise UserError(f"--tile and --columns must be at least 1, got {tile} and {columns}")
    scenes = infer.infer_scenes(model, image).cpu()  # (T, C, D, H, W)
    mask = model.mask.cpu()
    colour_map = ColourMap.fit(scenes, mask)  # on every slice, so frames share one colour scale
    if dt is None:
        if model.timesteps == 1:
            raise UserError("an animation over time needs a temporal model (temporal.timesteps > 1); write a .png")
        chosen = scenes
    else:
        infer.check_offsets(model, [dt])
        chosen = select_time(scenes[None], torch.tensor([dt]))
    scale = max(1, round(tile / mask.shape[-1]))
    return torch.stack([depth_grid(slices, scale, columns) for slices in colour_map(chosen, mask)])


def write_latent(
    model: SceneRenderer,
    image: torch.Tensor,
    output: Path,
    dt: float = 0.0,
    tile: int = 64,
    columns: int = 8,
    fps: float = 4.0,
) -> None:
    """Write the latent of `image`: `.png` the depth slices at offset dt, `.gif`/`.mp4` one frame per time slice."""
    from vidrender.io.images import write_image
    from vidrender.io.video_write import write_video

    suffix = output.suffix.lower()
    if suffix == ".png":
        write_image(output, latent_frames(model, image, dt, tile, columns)[0])
    elif suffix in (".gif", ".mp4"):
        write_video(output, latent_frames(model, image, None, tile, columns), fps)
    else:
        raise UserError(f"{output}: write the latent as .png (depth slices) or .gif/.mp4 (over time)")
