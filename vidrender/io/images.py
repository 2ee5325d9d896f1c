"""Still images: read and write single pictures, list image folders, and tile previews.

Every image handed out is a numpy array (H, W, 3) RGB or (H, W, 4) RGBA, dtype uint8, with straight
(not premultiplied) alpha; grayscale, palette and 16-bit files are converted to that on reading.
Writes go through `atomic_path`, so a failed write leaves nothing behind.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from vidrender.compositing import over, premultiply
from vidrender.errors import UserError
from vidrender.io.atomic import atomic_path
from vidrender.io.paths import require_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers by value: frame2.png before frame10.png."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly inside `folder` (suffix in IMAGE_SUFFIXES, not hidden), naturally sorted."""
    folder = Path(folder)
    files = [
        entry
        for entry in folder.iterdir()
        if entry.is_file() and not entry.name.startswith(".") and entry.suffix.lower() in IMAGE_SUFFIXES
    ]
    return sorted(files, key=lambda entry: natural_key(entry.name))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read one image file as (H, W, 3) RGB or (H, W, 4) RGBA uint8.

    EXIF orientation is applied (photos come out upright). Grayscale becomes RGB; palette images
    with transparency and LA become RGBA; 16-bit grayscale is rounded to 8 bits.
    Raises UserError naming the file if it is missing, not a regular file or not a readable image.
    """
    path = require_file(path, "image file")  # a FIFO would block Image.open: refused, as a folder is
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            return _to_rgb_or_rgba(image)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"{path}: cannot read image ({err})") from err


def image_size(path: str | os.PathLike) -> tuple[int, int, bool]:
    """(width, height, has_alpha) of an image file from its header, without decoding the pixels.

    Width and height are after EXIF orientation, matching what `read_image` returns.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            # EXIF orientations 5-8 turn the picture by 90 degrees
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width
            has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            return width, height, has_alpha
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise UserError(f"{path}: cannot read image ({err})") from err


def _to_rgb_or_rgba(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: Pillow would clip on convert("L"), so scale 0..65535 to 0..255 ourselves
        values = np.asarray(image, dtype=np.uint32)
        gray = ((np.clip(values, 0, 65535) + 128) // 257).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    return np.asarray(image.convert("RGBA" if has_alpha else "RGB")).copy()


def to_uint8_image(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """Normalise one picture to a contiguous (H, W, 3|4) uint8 numpy array.

    Accepts numpy arrays laid out (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) in uint8, and torch
    tensors laid out (C, H, W) with C in {1, 3, 4}, either float in [0, 1] (clamped, rounded) or uint8.
    One channel is repeated to RGB. Anything else is a programming error (ValueError).
    """
    if isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        if tensor.ndim != 3 or tensor.shape[0] not in (1, 3, 4):
            raise ValueError(f"expected a (C, H, W) tensor, C in 1, 3, 4; got shape {tuple(tensor.shape)}")
        if tensor.is_floating_point():
            tensor = (tensor.clamp(0, 1) * 255).round().to(torch.uint8)
        elif tensor.dtype != torch.uint8:
            raise ValueError(f"expected a float or uint8 tensor, got {tensor.dtype}")
        array = tensor.permute(1, 2, 0).numpy()
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 array, got {image.dtype}")
        array = image[..., None] if image.ndim == 2 else image
        if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
            raise ValueError(f"expected an (H, W, C) array with C in 1, 3, 4, got shape {image.shape}")
    else:
        raise ValueError(f"expected a numpy array or torch tensor, got {type(image).__name__}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array)


def write_image(path: str | os.PathLike, image: np.ndarray | torch.Tensor) -> None:
    """Write one picture atomically; the format follows the suffix (PNG keeps alpha; lossless).

    `image` is anything `to_uint8_image` accepts. Raises UserError if the suffix names no image format
    Pillow writes, or the format cannot hold the picture (e.g. RGBA as JPEG).
    """
    path = Path(path)
    pixels = to_uint8_image(image)
    with atomic_path(path) as tmp:
        try:
            Image.fromarray(pixels).save(tmp)
        except (ValueError, OSError) as err:
            raise UserError(f"{path}: cannot write this image ({err})") from err


def contact_sheet(images: Sequence[np.ndarray | torch.Tensor], cols: int, gap: int = 2) -> np.ndarray:
    """Tile pictures into one (H, W, 3) uint8 preview, row by row, `cols` per row, `gap` white pixels apart.

    Pictures may differ in size (each cell is as large as the largest picture; smaller ones sit at its
    top-left). RGBA pictures are shown over a grey checkerboard, so transparency stays visible.
    """
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    if cols < 1:
        raise ValueError(f"cols must be at least 1, got {cols}")
    tiles = [_flatten_alpha(to_uint8_image(image)) for image in images]
    cell_h = max(tile.shape[0] for tile in tiles)
    cell_w = max(tile.shape[1] for tile in tiles)
    rows = -(-len(tiles) // cols)
    cols = min(cols, len(tiles))
    sheet = np.full((rows * cell_h + (rows - 1) * gap, cols * cell_w + (cols - 1) * gap, 3), 255, np.uint8)
    for index, tile in enumerate(tiles):
        top = (index // cols) * (cell_h + gap)
        left = (index % cols) * (cell_w + gap)
        sheet[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    return sheet


def _flatten_alpha(image: np.ndarray, square: int = 8) -> np.ndarray:
    """Composite an RGBA picture over a light/dark grey checkerboard of `square`-pixel squares."""
    if image.shape[2] == 3:
        return image
    rows, cols = np.indices(image.shape[:2])
    checker = np.where((rows // square + cols // square) % 2 == 0, 204, 153).astype(np.float32)
    layer = premultiply(image.astype(np.float32) / 255, channel_axis=-1)
    blended = over(layer, np.repeat(checker[..., None] / 255, 3, axis=-1), channel_axis=-1)
    return np.round(blended * 255).astype(np.uint8)
