"""A picture of exported layers next to the clip (docs/results.md, "motion on real footage"), from one command.

Rows are frames of the clip; columns: the frame, the exported plate (`background.png`; for a moving
camera the frame's view of the world plate, `background/%05d.png`), the matte (`alpha/%05d.png`) and the
character layer (`character/%05d.png`, straight RGBA) over a checkerboard, all at the export's (native)
resolution, scaled to `--height` pixels per row. For a moving camera the world plate (`world_plate.png`)
follows below, at the same scale, with each shown frame's view outlined on it.

    vidrender train CLIP -o m.pt --max-frames 64 && vidrender export m.pt -o layers
    python benchmarks/layers_sheet.py CLIP layers -o sheet.jpg [--frames 0 32 63] [--height 180]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from vidrender import geometry
from vidrender.io.images import contact_sheet, read_image, to_uint8_image, write_image
from vidrender.io.json_file import read_json_object
from vidrender.io.video import read_video

COLUMNS = 4  # frame, plate, matte, character


def row_tiles(frame: np.ndarray, layers: Path, index: int, height: int) -> list[np.ndarray]:
    """The four (height, w, 3|4) uint8 tiles of frame `index`: frame (H, W, 3), plate (or the frame's view
    of the world plate), matte, character RGBA (shown over a checkerboard by `contact_sheet`), each scaled
    to `height` pixels."""
    view = layers / "background" / f"{index:05d}.png"
    plate = read_image(view if view.is_file() else layers / "background.png")
    tiles = [frame, plate, read_image(layers / "alpha" / f"{index:05d}.png"),
             read_image(layers / "character" / f"{index:05d}.png")]
    width = round(frame.shape[1] * height / frame.shape[0])
    return [cv2.resize(tile, (width, height), interpolation=cv2.INTER_AREA) for tile in tiles]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("clip", type=Path, help="the clip the model was trained on")
    parser.add_argument("layers", type=Path, help="the folder `vidrender export` wrote")
    parser.add_argument("-o", "--output", type=Path, required=True, help="image file (.jpg or .png)")
    parser.add_argument("--frames", type=int, nargs="+", default=[0, 32, 63])
    parser.add_argument("--height", type=int, default=180, help="pixels per row in the picture")
    args = parser.parse_args()

    frames, _ = read_video(args.clip, max_frames=max(args.frames) + 1)
    tiles = [tile for index in args.frames
             for tile in row_tiles(to_uint8_image(frames[index]), args.layers, index, args.height)]
    sheet = contact_sheet(tiles, cols=COLUMNS)
    if (args.layers / "world_plate.png").is_file():
        world = world_tile(args.layers, args.frames, args.height / frames.shape[-2])
        width = max(sheet.shape[1], world.shape[1])
        sheet = np.concatenate([np.pad(image, ((0, 0), (0, width - image.shape[1]), (0, 0)), constant_values=255)
                                for image in (sheet, np.full((2, 1, 3), 255, np.uint8), world)])
    write_image(args.output, sheet)
    print(args.output)


def world_tile(layers: Path, indices: list[int], scale: float) -> np.ndarray:
    """The world plate (H_w, W_w, 3) uint8 of a moving-camera export at `scale`, with the outline of each
    listed frame's view (its corners through `camera.json`) drawn on it."""
    world = read_image(layers / "world_plate.png")[..., :3].copy()
    cameras = torch.tensor(read_json_object(layers / "camera.json")["frames"], dtype=torch.float64)
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
    height, width = world.shape[:2]
    for index in indices:
        seen = (geometry.project(cameras[index], corners) + 1) / 2 * torch.tensor([width, height])
        cv2.polylines(world, [seen.round().int().numpy()], True, (255, 255, 0), thickness=max(1, width // 300))
    size = (round(width * scale), round(height * scale))
    return cv2.resize(world, size, interpolation=cv2.INTER_AREA)


if __name__ == "__main__":
    main()
