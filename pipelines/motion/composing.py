"""`compose`: the character of one clip's layer stack over the background of another, in pixels.

Frame i of the output is the character layer (reference RGBA of stack A) moved by M_i, laid `over` the
background of stack B. M_i is in normalized coordinates, so a character taken apart at one resolution
lands at the same relative place and size on a background of another. It comes from `motion`:
  * `source`      A's character's own motion;
  * `background`  B's character's motion (B's character is replaced: B's clean plate is used);
  * `PATH.json`   a trajectory file (the format `export` writes);
then optionally edited: `translate` (DX, DY in frame widths/heights per second), `rotate` (degrees per
second, counter-clockwise on screen), `scale` (factor per second), all about the frame centre and applied
after the motion; `speed` resamples time, `frames` sets the length (looping). The edits are rigid in
pixels of the output frame, so a rotation stays a rotation on a non-square frame.

Moving cameras: a layer stack filmed by a moving camera holds its character in the world (`stack.py`).
The character is moved in the coordinates of its clip's reference frame (`LayerStack.reference_layer`:
its motion without its camera's move), and the output is filmed by a camera C_i, frame i -> the
background's reference frame, chosen by `camera`:
  * `background`  B's camera move (`LayerStack.relative_cameras`; identities for a static B): the
                  character stays planted in B's world while B's camera pans (the default);
  * `source`      A's camera move, played over B's world plate;
  * `static`      no camera move: B's reference view, the character without its old camera shake.
Frame i then shows B's plate through H_reference^B @ C_i and the character through M_i^-1 @ C_i. Where
every C_i is the identity, this is the static render, bit for bit.

Every option is checked before any work, each a one-line `UserError` (ranges in docs/commands.md):
the frame rate within FPS_RANGE, each side of the output within 2..MAX_SIDE and its area within the
video reader's DEFAULT_MAX_PIXELS (so that vidrender can read what it writes), 1..MAX_FRAMES frames,
finite edits and a finite positive speed. The frames are rendered a chunk at a time into the output
tensor, so memory is that tensor plus one chunk's work or the encoder's frames in flight
(`memory_needed`, within 20 % of the measured peak), and an output over MAX_CLIP_BYTES is refused
before it is made.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from vidrender import geometry
from vidrender.compositing import premultiply
from vidrender.errors import UserError
from vidrender.io.paths import file_problem
from vidrender.io.trajectory import read_trajectory
from vidrender.io.video import DEFAULT_MAX_PIXELS
from vidrender.pipelines.motion.inputs import MAX_CLIP_BYTES
from vidrender.pipelines.motion.stack import BackgroundLayer, CharacterLayer, LayerStack, composite, straight

# Output frame rates: far below 0.1 fps the writer's time base breaks (1e-9 fps was a ZeroDivisionError
# in it); 1000 fps is far above any display's rate
FPS_RANGE = (0.1, 1000.0)
# The longest side of an output frame: the video reader's limit (8192 x 8192); libx264 itself took 16384
# px but not 20000 (a 20000x2 --size was a traceback from the encoder)
MAX_SIDE = math.isqrt(DEFAULT_MAX_PIXELS)
# The most frames of an output: over an hour at 24 fps. The memory check bounds frames times pixels; this
# bounds the per-frame work (affines, times) of tiny frames, and a tiny --speed's endless default length
MAX_FRAMES = 100_000
# Pixels (frames x height x width) rendered at once: bounds the sampling grid and the compositing's
# temporaries whatever the output size. They measured 11 to 20 float32 values per pixel of a chunk at
# the peak (grid, sampled layer, its copies, the composite; freed memory the allocator keeps)
CHUNK_PIXELS = 1 << 20
CAMERAS = ("background", "source", "static")
CHUNK_FLOATS = 16
# What the writer holds while it encodes, after rendering: libx264 (.mp4) measured as about 64 frames in
# flight (lookahead, reference frames, threads; 2 cores) of one float32 plane each; a .gif holds all its
# frames as 8-bit RGB (0.75 plane each), which this leaves out: GIFs are short
ENCODER_FRAMES = 64


@dataclass
class Composite:
    """What `compose` makes: `frames` (N, 3, H, W) RGB, or (N, 4, H, W) straight RGBA for a layer alone,
    in [0, 1], to be played at `fps`."""

    frames: torch.Tensor
    fps: float


def compose(character: LayerStack, background: LayerStack, motion: str | Path = "source", frames: int | None = None,
            fps: float | None = None, size: tuple[int, int] | None = None, translate: tuple[float, float] = (0.0, 0.0),
            rotate: float = 0.0, scale: float = 1.0, speed: float = 1.0, layers_only: bool = False,
            camera: str = "background") -> Composite:
    """The first character of `character` over the background of `background` (module doc).

    size: (W, H) of the output, default the background's native size; fps: default the background's;
    frames: default the motion played once at the output rate; layers_only: the moved character layer
    alone, with alpha; camera: whose camera move films the output (module doc). Bad values are one
    `UserError`.
    """
    # 1. the output grid and the options, each checked before any work
    width, height = check_size(size, background)
    out_fps = check_fps(fps, background)
    check_motion_options(frames, speed, translate, rotate, scale)
    if camera not in CAMERAS:
        raise UserError(f"--camera: expected one of {', '.join(CAMERAS)}, got {camera[:40]!r}")
    # 2. the motion, its length at the output rate, and the memory that length needs
    path, path_fps = motion_path(str(motion), character, background, (width, height))
    count = output_length(frames, path.shape[0], path_fps, out_fps, speed)
    check_memory(count, (width, height), layers_only)
    # 3. retime to the output rate, then apply the edits after the motion; the camera move likewise
    affines = retime(path, path_fps, out_fps, count, speed)
    affines = geometry.compose(edits(count, out_fps, translate, rotate, scale, (width, height)), affines)
    moves = {"background": background, "source": character, "static": None}[camera]
    cameras = None
    if moves is not None and not moves.background.is_static:
        # the camera keeps its own pace: --speed is the character's
        cameras = retime(moves.relative_cameras(), float(moves.fps), out_fps, count, 1.0)
    # 4. render, a chunk of frames at a time: the layer sampled once into the output grid, over the
    #    background's view of its plate
    rendered = render(character.reference_layer(0), None if layers_only else background, affines,
                      (height, width), cameras)
    return Composite(rendered, out_fps)


def check_size(size: tuple[int, int] | None, background: LayerStack) -> tuple[int, int]:
    """(W, H) of the output: `size`, or the background's native size, within the limits (module doc)."""
    if size is None:
        width, height = background.frame_size[::-1]
        where = f"the background's size {width}x{height} (choose a --size)"
    else:
        if len(size) != 2 or not all(isinstance(side, int) and not isinstance(side, bool) for side in size):
            raise UserError(f"--size: expected two whole numbers of pixels, got {str(size)[:40]}")
        width, height = size
        where = f"--size: {_number(width)}x{_number(height)}"
    if min(width, height) < 2:
        raise UserError(f"{where} is too small: at least 2 pixels a side")
    if max(width, height) > MAX_SIDE or width * height > DEFAULT_MAX_PIXELS:
        raise UserError(f"{where} is over the limit of {MAX_SIDE} pixels a side and "
                        f"{DEFAULT_MAX_PIXELS / 1e6:.0f} Mpixel a frame")
    return width, height


def check_fps(fps: float | None, background: LayerStack) -> float:
    """The output frame rate: `fps`, or the background's; finite and within FPS_RANGE. `--fps 0` is an
    error, not "the default"."""
    value = background.fps if fps is None else fps
    low, high = FPS_RANGE
    if not _is_number(value) or not low <= value <= high:
        named = f"--fps must be from {low:g} to {high:g}" if fps is not None else \
            f"the background's frame rate must be from {low:g} to {high:g} (choose an --fps)"
        raise UserError(f"{named}, got {_number(value)}")
    return float(value)


def check_motion_options(frames: int | None, speed: float, translate: tuple[float, float], rotate: float,
                         scale: float) -> None:
    """`frames` within 1..MAX_FRAMES, `speed` finite and positive, the edits finite (`scale` positive)."""
    if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int)
                               or not 1 <= frames <= MAX_FRAMES):
        raise UserError(f"--frames must be from 1 to {MAX_FRAMES}, got {_number(frames)}")
    if not _is_number(speed) or not 0 < speed < math.inf:
        raise UserError(f"--speed must be a finite number above 0, got {_number(speed)}")
    if len(translate) != 2 or not all(_is_number(value) and math.isfinite(value) for value in (*translate, rotate)):
        raise UserError("--translate and --rotate must be finite numbers")
    if not _is_number(scale) or not 0 < scale < math.inf:
        raise UserError(f"--scale must be a finite number above 0, got {_number(scale)}")


def output_length(frames: int | None, path_frames: int, path_fps: float, fps: float, speed: float) -> int:
    """`frames`, or the motion played once at `fps` and `speed`; refused over MAX_FRAMES (a tiny --speed
    asks for an endless video)."""
    if frames is not None:
        return frames
    length = path_frames * fps / path_fps / speed  # a float: may be huge or infinite, so checked before round
    if not length <= MAX_FRAMES:
        raise UserError(f"playing the motion once at --speed {_number(speed)} and {fps:g} fps takes "
                        f"{_number(length)} frames, over the limit of {MAX_FRAMES}; raise --speed or set --frames")
    return max(1, round(length))


def memory_needed(frames: int, size: tuple[int, int], layers_only: bool = False) -> int:
    """Bytes that composing `frames` frames of `size` (W, H) and writing them hold at the peak, beyond
    what the process held before: the result (float32 RGB, or RGBA with `layers_only`), and on top of it
    the larger of what rendering holds (the plate at the output size and one chunk's temporaries,
    CHUNK_FLOATS values a pixel) and what the encoder holds afterwards (ENCODER_FRAMES). Within 20 % of
    the measured peak (docs/reliability.md)."""
    result = (4 if layers_only else 3) * frames
    rendering = 3 + CHUNK_FLOATS * min(frames, chunk_frames(size))
    return 4 * size[0] * size[1] * (result + max(rendering, min(frames, ENCODER_FRAMES)))


def check_memory(frames: int, size: tuple[int, int], layers_only: bool) -> None:
    """Refuse an output whose rendering needs more than MAX_CLIP_BYTES (`memory_needed`)."""
    needed = memory_needed(frames, size, layers_only)
    if needed > MAX_CLIP_BYTES:
        raise UserError(f"{frames} frames of {size[0]}x{size[1]} need {needed / 1024**3:.1f} GB in memory "
                        f"(limit {MAX_CLIP_BYTES / 1024**3:.0f} GB); ask for fewer --frames or a smaller --size")


def chunk_frames(size: tuple[int, int]) -> int:
    """How many output frames of `size` (W, H) are rendered at once (at least one)."""
    return max(1, CHUNK_PIXELS // (size[0] * size[1]))


def render(layer: CharacterLayer, background: LayerStack | None, affines: torch.Tensor, size: tuple[int, int],
           cameras: torch.Tensor | None = None) -> torch.Tensor:
    """`layer` moved by `affines` (T, 2, 3) over `background`'s plate at `size` (H, W): (T, 3, H, W) RGB;
    with no background, the moved layer alone as straight RGBA (T, 4, H, W). cameras: None (a static
    camera) or (T, 3, 3) output frame i -> the background's reference frame, normalized (module doc).

    Rendered a chunk of frames at a time into the result: rendering all at once held several copies of
    the moved layer and of the frames at the peak (12.6 to 13 float32 values a pixel measured, where the
    result has 3).
    """
    height, width = size
    count = len(affines)
    result = torch.empty(count, 3 if background is not None else 4, height, width)
    plate = None
    if background is not None and cameras is None:
        plate = background.background.plate if background.background.is_static else reference_view(background)
        plate = BackgroundLayer.static(plate, 1).views(1, size)[0]
    step = chunk_frames((width, height))
    for start in range(0, count, step):
        stop = min(count, start + step)
        # a function call, so that a chunk's temporaries are freed before the next chunk is rendered
        chunk = None if cameras is None else cameras[start:stop]
        result[start:stop] = _render_chunk(layer, background, plate, affines[start:stop], chunk, size)
    return result


def reference_view(stack: LayerStack) -> torch.Tensor:
    """(3, H, W) the reference frame's view of a stack's plate, at its frame size."""
    camera = stack.background.camera[stack.reference][None]
    return BackgroundLayer(stack.background.plate, camera).views(size=stack.frame_size)[0]


def _render_chunk(layer: CharacterLayer, background: LayerStack | None, plate: torch.Tensor | None,
                  affines: torch.Tensor, cameras: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
    """Output frames of `render` for a chunk of its affines (N, 2, 3) and cameras (N, 3, 3) or None."""
    if cameras is None:
        moved = layer.moved(affines, size)
        views = None if background is None else plate[None]
    else:
        # output pixel p shows the layer at M^-1 C p and the plate at H_reference C p
        cameras = cameras.double()
        to_layer = torch.linalg.solve(geometry.to_homogeneous(affines.double()), cameras)
        moved = geometry.camera_view(premultiply(layer.rgba.float()), to_layer, size).clamp(0, 1)
        views = None
        if background is not None:
            to_plate = background.background.camera[background.reference].double() @ cameras
            views = geometry.camera_view(background.background.plate.float(), to_plate, size, padding_mode="border")
    if background is None:
        return straight(moved)
    return composite(views, [moved])


def motion_path(motion: str, character: LayerStack, background: LayerStack, size: tuple[int, int]
                ) -> tuple[torch.Tensor, float]:
    """Affines (T, 2, 3) normalized and their frame rate for a `motion` value; a trajectory file without
    its own "width"/"height" is read on the output's pixel grid `size` (W, H)."""
    if motion == "source":
        return character.reference_layer(0).affines.float(), float(character.fps)
    if motion == "background":
        return background.reference_layer(0).affines.float(), float(background.fps)
    problem = file_problem(motion, "trajectory file")
    if problem is not None and not os.path.lexists(motion):  # a typo of source or background, or of a path
        raise UserError(f"--motion: {motion[:80]!r} is not 'source', 'background' or an existing trajectory file")
    if problem is not None:  # a FIFO (reading it would block), a folder, a device
        raise UserError(f"--motion: {motion[:80]} {problem}")
    affines, info = read_trajectory(motion, width=size[0], height=size[1])
    return affines.float(), float(info.get("fps") or background.fps)


def retime(affines: torch.Tensor, source_fps: float, fps: float, frames: int, speed: float) -> torch.Tensor:
    """Sample a motion at the output rate: output frame i shows motion time i / fps * speed (looping)."""
    if not 0 < speed < math.inf:
        raise UserError(f"--speed must be a finite number above 0, got {speed}")
    times = torch.arange(frames, dtype=torch.float64) / fps * speed * source_fps
    if not torch.isfinite(times).all():  # a huge --speed times a huge frame rate
        raise UserError(f"--speed {speed:g} at {fps:g} fps runs the motion's clock past the largest number")
    # loop in float64 before converting: an int64 cast of times beyond 2**63 is undefined
    index = torch.remainder(times.round(), affines.shape[0]).long()
    return affines[index]


def output_size(text: str) -> tuple[int, int]:
    """(width, height) from a `--size` value like "640x360": two whole numbers of at least 2 and at most
    MAX_SIDE (`check_size` checks the area)."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise UserError(f"--size: expected WIDTHxHEIGHT in whole pixels like 640x360, got {text[:40]!r}")
    digits = match.groups()
    if any(len(part.lstrip("0")) > 9 for part in digits):  # int() of thousands of digits is slow, then refused
        raise UserError(f"--size: {text[:40]} is over the limit of {MAX_SIDE} pixels a side")
    width, height = (int(part) for part in digits)
    if width < 2 or height < 2:
        raise UserError(f"--size: {text} is too small: at least 2 pixels a side")
    if max(width, height) > MAX_SIDE:
        raise UserError(f"--size: {text} is over the limit of {MAX_SIDE} pixels a side")
    return width, height


# WxH in ASCII digits: str.isdigit() also accepts "²" and other digits that int() refuses
_SIZE = re.compile(r"\s*([0-9]+)\s*[xX]\s*([0-9]+)\s*")


def _is_number(value) -> bool:
    """An int or float that is not a bool (the API may be handed anything)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value) -> str:
    """A number for a message, short: a huge integer or float in exponent form."""
    if _is_number(value) and abs(value) >= 1e6:
        try:
            return f"{float(value):.3g}"
        except OverflowError:
            return "a number too large for a float"
    return str(value)[:40]


def edits(frames: int, fps: float, translate: tuple[float, float], rotate: float, scale: float,
          size: tuple[int, int]) -> torch.Tensor:
    """Per-frame edit affines (frames, 2, 3), normalized for an output of `size` (W, H).

    Rates per second about the frame centre: translate in frame widths/heights, rotate in degrees
    counter-clockwise on screen, scale as a factor. Built in pixels and then normalized, because a
    rotation in normalized coordinates would shear a non-square frame.
    """
    check_motion_options(None, 1.0, translate, rotate, scale)
    width, height = size
    seconds = torch.arange(frames, dtype=torch.float64) / fps
    zero = torch.zeros_like(seconds)
    linear = geometry.from_params(zero, zero, torch.deg2rad(rotate * seconds), scale**seconds)[..., :2]
    centre = torch.tensor([width / 2, height / 2], dtype=torch.float64)
    shift = torch.stack([translate[0] * width * seconds, translate[1] * height * seconds], -1)
    # about the centre: p -> L (p - c) + c + shift
    offset = centre + shift - linear @ centre
    pixel = torch.cat([linear, offset[..., None]], dim=-1)
    normalized = geometry.pixel_to_normalized(pixel, width, height).float()
    # a large rate compounds over a long clip: refuse what overflows or collapses to a point in float32
    if not (torch.isfinite(normalized).all() and torch.isfinite(geometry.invert(normalized)).all()):
        raise UserError(f"--translate/--scale: over {frames} frames the edit leaves the range of numbers it can render")
    return normalized
