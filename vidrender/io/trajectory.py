"""Trajectory files (`affine.json`): one 2x3 affine per frame, in pixel coordinates, convention written in.

Format (written by `vidrender export`, the synthetic truth folders, and read by `train --affines`,
`compose --motion PATH.json`)::

    {"frames": [[[a, b, c], [d, e, f]], ...],   # one per frame
     "convention": "<AFFINE_CONVENTION>",
     "reference": 0,                            # the frame whose affine is the identity
     "width": W, "height": H,                   # the pixel grid the numbers refer to
     "fps": 24.0}

Only "frames" is required when reading; "width"/"height" default to the clip the file is used with.
Returned affines are normalized (see `vidrender/geometry.py`), so a trajectory written at one
resolution drives a clip of another.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from vidrender import geometry
from vidrender.errors import UserError
from vidrender.io.atomic import atomic_path
from vidrender.io.json_file import read_json

AFFINE_CONVENTION = (
    "Each 2x3 matrix maps reference-frame pixel coordinates (origin at the top-left corner of the "
    "top-left pixel, x right, y down) to frame-t pixel coordinates: [x_t, y_t] = A @ [x_ref, y_ref, 1]."
)


def write_trajectory(
    path: str | Path, affines: torch.Tensor, width: int, height: int, fps: float, reference: int = 0
) -> Path:
    """Write normalized affines (T, 2, 3) as an `affine.json` in pixel coordinates of a W x H frame."""
    pixel = geometry.normalized_to_pixel(affines.double(), width, height)
    payload = {
        "frames": [[[round(v, 6) for v in row] for row in matrix] for matrix in pixel.tolist()],
        "convention": AFFINE_CONVENTION,
        "reference": int(reference),
        "width": int(width),
        "height": int(height),
        "fps": float(fps),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1))
    return path


def read_trajectory(path: str | Path, width: int | None = None, height: int | None = None) -> tuple[torch.Tensor, dict]:
    """Read an `affine.json`; returns (normalized affines (T, 2, 3) float64, the file's other fields).

    The pixel grid is the file's "width"/"height" when present, else the `width`/`height` given (the clip
    the trajectory is applied to). Raises `UserError` naming the file for: a missing file or one that is
    not a regular file, invalid JSON (a UTF-8 byte-order mark is fine), no "frames", malformed or
    singular matrices, NaN/inf values, non-positive sizes.
    """
    path = Path(path)
    payload = read_json(path, "trajectory file")  # a FIFO or folder is refused, a byte-order mark accepted
    if not isinstance(payload, dict) or "frames" not in payload:
        raise UserError(f'{path}: expected a JSON object with a "frames" list of 2x3 affines')
    try:
        pixel = geometry.check_affines(payload["frames"], str(path))
    except (OverflowError, RuntimeError) as err:  # integers beyond float64, which torch cannot convert
        raise UserError(f"{path}: affines must be 2x3 matrices of ordinary numbers ({str(err)[:80]})") from None
    grid_width, grid_height = payload.get("width", width), payload.get("height", height)
    for name, value in (("width", grid_width), ("height", grid_height)):
        if value is None:
            raise UserError(f'{path}: no "{name}" in the file and no clip to take it from')
        if not _is_positive_number(value):
            raise UserError(f'{path}: "{name}" must be a positive number, got {_short(value)}')
    fps = payload.get("fps")
    if fps is not None and not _is_positive_number(fps):
        raise UserError(f'{path}: "fps" must be a positive number, got {_short(fps)}')
    reference = payload.get("reference", 0)
    if isinstance(reference, bool) or not isinstance(reference, int) or not 0 <= reference < len(pixel):
        raise UserError(f'{path}: "reference" must be a frame index in 0..{len(pixel) - 1}, got {_short(reference)}')
    normalized = geometry.pixel_to_normalized(pixel, grid_width, grid_height)
    # consumers work in float32: values that overflow it (absurd sizes or shifts) would turn into NaN there
    if not torch.isfinite(normalized.float()).all():
        raise UserError(f"{path}: affines are too large for a {grid_width}x{grid_height} frame (overflow)")
    info = {key: value for key, value in payload.items() if key != "frames"}
    info.update(width=grid_width, height=grid_height, reference=reference)
    return normalized, info


def _is_positive_number(value) -> bool:
    """A finite number above 0; JSON true/false are not numbers even though Python's bool is an int."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        number = float(value)
    except OverflowError:  # a JSON integer with hundreds of digits
        return False
    return math.isfinite(number) and number > 0


def _short(value) -> str:
    """A JSON value for an error message, cut so that the message stays one readable line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
