"""A picture of exported layers next to the clip (docs/results.md, "motion on real footage"), from one command.

Rows are frames of the clip; columns: the frame, the exported plate (`background.png`), the matte
(`alpha/%05d.png`) and the character layer (`character/%05d.png`, straight RGBA) over a checkerboard,
all at the export's (native) resolution, scaled to `--height` pixels per row.

    vidrender train CLIP -o m.pt --max-frames 64 && vidrender export m.pt -o layers
    python benchmarks/layers_sheet.py CLIP layers -o sheet.jpg [--frames 0 32 63] [--height 180]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from vidrender.io.images import contact_sheet, read_image, to_uint8_image, write_image
from vidrender.io.video import read_video

COLUMNS = 4  # frame, plate, matte, character


def row_tiles(frame: np.ndarray, plate: np.ndarray, layers: Path, index: int, height: int) -> list[np.ndarray]:
    """The four (height, w, 3|4) uint8 tiles of frame `index`: frame (H, W, 3), plate, matte, character RGBA
    (shown over a checkerboard by `contact_sheet`), each scaled to `height` pixels."""
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
    plate = read_image(args.layers / "background.png")
    tiles = [tile for index in args.frames
             for tile in row_tiles(to_uint8_image(frames[index]), plate, args.layers, index, args.height)]
    write_image(args.output, contact_sheet(tiles, cols=COLUMNS))
    print(args.output)


if __name__ == "__main__":
    main()
