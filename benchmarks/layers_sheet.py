"""A picture of exported layers next to the clip (README "motion on real footage"), from one command.

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

from vidrender.io.atomic import atomic_path
from vidrender.io.video import read_video


def checkerboard(height: int, width: int, square: int = 16) -> np.ndarray:
    """(H, W, 3) float light/dark grey checkerboard in [0, 1], the usual backdrop for transparency."""
    rows, columns = np.indices((height, width)) // square
    return np.where(((rows + columns) % 2)[..., None] == 0, 0.8, 0.55).repeat(3, axis=2)


def read_rgba(path: Path) -> np.ndarray:
    """(H, W, 4) float RGBA in [0, 1] of a PNG with or without alpha; raises FileNotFoundError if missing."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FileNotFoundError(path)
    image = image.astype(np.float32) / (65535.0 if image.dtype == np.uint16 else 255.0)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] == 1:
        return np.concatenate([image.repeat(3, axis=2), np.ones_like(image)], axis=2)
    if image.shape[2] == 3:
        return np.concatenate([image[..., ::-1], np.ones_like(image[..., :1])], axis=2)
    return np.concatenate([image[..., 2::-1], image[..., 3:]], axis=2)


def sheet_row(frame: np.ndarray, layers: Path, index: int) -> np.ndarray:
    """(H, 4W, 3) float: frame, plate, matte, character over a checkerboard for frame `index`."""
    height, width = frame.shape[:2]
    plate = read_rgba(layers / "background.png")[..., :3]
    matte = read_rgba(layers / "alpha" / f"{index:05d}.png")[..., :1]
    character = read_rgba(layers / "character" / f"{index:05d}.png")
    backdrop = checkerboard(height, width)
    over = character[..., :3] * character[..., 3:] + backdrop * (1 - character[..., 3:])
    return np.concatenate([frame, plate, matte.repeat(3, axis=2), over], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("clip", type=Path, help="the clip the model was trained on")
    parser.add_argument("layers", type=Path, help="the folder `vidrender export` wrote")
    parser.add_argument("-o", "--output", type=Path, required=True, help="image file (.jpg or .png)")
    parser.add_argument("--frames", type=int, nargs="+", default=[0, 32, 63])
    parser.add_argument("--height", type=int, default=180, help="pixels per row in the picture")
    args = parser.parse_args()

    frames, _ = read_video(args.clip, max_frames=max(args.frames) + 1)
    rows = []
    for index in args.frames:
        frame = frames[index].permute(1, 2, 0).numpy()
        row = sheet_row(frame, args.layers, index)
        width = round(row.shape[1] * args.height / row.shape[0])
        rows.append(cv2.resize(row, (width, args.height), interpolation=cv2.INTER_AREA))
    picture = (np.concatenate(rows, axis=0).clip(0, 1) * 255).round().astype(np.uint8)[..., ::-1]
    with atomic_path(args.output) as temporary:
        if not cv2.imwrite(str(temporary), picture):
            raise SystemExit(f"error: could not write {args.output}")
    print(args.output)


if __name__ == "__main__":
    main()
