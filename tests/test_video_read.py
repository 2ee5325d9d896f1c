"""Reading clips: formats, rotation, VFR, resampling, ranges, resizing, image sequences and every error.

Test inputs are made here with PyAV directly (not with our writer), tiny (32x24, a few frames), and
use flat grey levels per frame so a frame can be recognised after lossy coding by its mean.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from media_files import write_audio_only, write_h264
from PIL import Image

from vidrender.errors import UserError
from vidrender.io.video import iter_frames, probe, read_video

WIDTH, HEIGHT = 32, 24
LEVELS = [20 * index for index in range(10)]  # one flat grey level per frame


def encode(
    path,
    frames,
    *,
    codec="libx264",
    pix_fmt="yuv420p",
    rate=10,
    pts=None,
    rotation=None,
    gop=None,
    frame_format="rgb24",
    options=None,
):
    """Write `frames` (numpy arrays in `frame_format`) with PyAV; pts in units of 1/rate."""
    container = av.open(str(path), "w")
    stream = container.add_stream(codec, rate=rate, options=options or {})
    stream.height, stream.width = frames[0].shape[:2]
    stream.pix_fmt = pix_fmt
    if gop:
        stream.codec_context.gop_size = gop
    if rotation is not None:
        stream.set_display_rotation(rotation)
    for index, pixels in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(pixels, format=frame_format)
        frame.pts = index if pts is None else pts[index]
        frame.time_base = Fraction(1, rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode())
    container.close()
    return path


def flat(level, width=WIDTH, height=HEIGHT):
    return np.full((height, width, 3), level, np.uint8)


def gradient(width=WIDTH, height=HEIGHT, channels=3, seed=0):
    """A smooth colour picture with a bright marker in the top-left corner (to see rotations)."""
    rows, cols = np.mgrid[0:height, 0:width]
    picture = np.zeros((height, width, channels), np.uint8)
    picture[..., 0] = 40 + cols * 150 // width
    picture[..., 1] = 40 + rows * 150 // height
    picture[..., 2] = 90 + seed * 10
    picture[:6, :6, :3] = 250
    if channels == 4:
        picture[..., 3] = np.random.default_rng(seed).integers(0, 256, (height, width))
    return picture


def levels_of(path, **options):
    """The grey level of each frame read, rounded to the nearest of LEVELS' step."""
    return [int(round(frame.mean() / 20)) * 20 for frame in iter_frames(path, **options)]


@pytest.fixture
def ten_mp4(tmp_path):
    """10 frames at 10 fps, levels 0..180, a key frame every 2 frames (so seeking has work to do)."""
    return encode(tmp_path / "ten.mp4", [flat(level) for level in LEVELS], gop=2)


def test_probe_describes_the_clip(ten_mp4):
    info = probe(ten_mp4)
    assert (info.width, info.height, info.frame_count, info.rotation) == (WIDTH, HEIGHT, 10, 0)
    assert info.fps == pytest.approx(10)
    assert info.duration == pytest.approx(1.0)
    assert info.frame_count_exact and not info.has_alpha


def test_reads_every_frame_in_order(ten_mp4):
    frames = list(iter_frames(ten_mp4))
    assert len(frames) == 10
    assert all(frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8 for frame in frames)
    assert levels_of(ten_mp4) == LEVELS


@pytest.mark.parametrize(
    "suffix,codec,pix_fmt",
    [
        (".webm", "libvpx-vp9", "yuv420p"),
        (".mkv", "libx264", "yuv420p"),
        (".avi", "mjpeg", "yuvj420p"),
        (".mov", "prores_ks", "yuv444p10le"),
    ],
)
def test_reads_common_containers(tmp_path, suffix, codec, pix_fmt):
    path = encode(tmp_path / f"clip{suffix}", [flat(level) for level in LEVELS[:4]], codec=codec, pix_fmt=pix_fmt)
    assert levels_of(path) == LEVELS[:4]
    assert probe(path).frame_count == 4


def test_reads_animated_gif(tmp_path):
    images = [Image.fromarray(flat(level)) for level in (0, 100, 200)]
    path = tmp_path / "anim.gif"
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
    assert levels_of(path) == [0, 100, 200]
    assert probe(path).fps == pytest.approx(10)


def test_odd_sizes_are_kept(tmp_path):
    path = encode(tmp_path / "odd.webm", [gradient(33, 25)] * 2, codec="libvpx-vp9", options={"lossless": "1"})
    frames = list(iter_frames(path))
    assert frames[0].shape == (25, 33, 3)
    assert np.abs(frames[0].astype(int) - gradient(33, 25)).mean() < 3


def test_grayscale_video_becomes_rgb(tmp_path):
    gray = [np.full((HEIGHT, WIDTH), level, np.uint8) for level in (30, 90, 150)]
    path = encode(tmp_path / "gray.mov", gray, codec="png", pix_fmt="gray", frame_format="gray")
    frames = list(iter_frames(path))
    assert [frame.shape for frame in frames] == [(HEIGHT, WIDTH, 3)] * 3
    assert [int(frame.mean()) for frame in frames] == [30, 90, 150]
    assert all((frame == frame[..., :1]).all() for frame in frames)


def test_grayscale_and_16_bit_images_become_rgb(tmp_path):
    Image.fromarray(np.full((HEIGHT, WIDTH), 77, np.uint8), mode="L").save(tmp_path / "0.png")
    Image.fromarray(np.full((HEIGHT, WIDTH), 257 * 200, np.uint16)).save(tmp_path / "1.png")
    frames = list(iter_frames(tmp_path))
    assert [frame.shape for frame in frames] == [(HEIGHT, WIDTH, 3)] * 2
    assert frames[0].min() == frames[0].max() == 77
    assert frames[1].min() == frames[1].max() == 200


@pytest.mark.parametrize("degrees,turns", [(90, 1), (-90, -1), (180, 2)])
def test_rotation_metadata_turns_frames_upright(tmp_path, degrees, turns):
    stored = gradient()
    path = encode(tmp_path / "rotated.mp4", [stored] * 2, rotation=degrees, options={"crf": "0"})
    info = probe(path)
    upright = np.rot90(stored, turns)
    assert info.rotation == degrees
    assert (info.height, info.width) == upright.shape[:2]
    frame = next(iter_frames(path))
    assert frame.shape == upright.shape
    assert np.abs(frame.astype(int) - upright).mean() < 3
    # the marker is where a player shows it: a quarter turn counter-clockwise puts top-left at bottom-left
    corner = {1: (-1, 0), -1: (0, -1), 2: (-1, -1)}[turns]
    assert frame[corner].min() > 200


def test_variable_frame_rate_resamples_by_timestamp(tmp_path):
    # frames at 0, .1, .2, .5, .6 and 1.0 s: a gap of two frames and one of three
    path = encode(tmp_path / "vfr.mp4", [flat(level) for level in (0, 40, 80, 120, 160, 200)], pts=[0, 1, 2, 5, 6, 10])
    held = [0, 40, 80, 80, 80, 120, 160, 160, 160, 160, 200]
    assert levels_of(path) == held  # uneven timestamps are resampled to the nominal 10 fps by default
    assert levels_of(path, fps=10) == held


@pytest.mark.parametrize("fps,count", [(5, 5), (20, 20), (30, 30), (3, 3), (10, 10)])
def test_fps_resampling_gives_duration_times_fps_frames(ten_mp4, fps, count):
    assert len(list(iter_frames(ten_mp4, fps=fps))) == count


def test_fps_resampling_picks_the_right_frames(ten_mp4):
    assert levels_of(ten_mp4, fps=5) == LEVELS[::2]
    assert levels_of(ten_mp4, fps=20) == [level for level in LEVELS for _ in range(2)]


def test_resampling_millisecond_timestamps_at_the_same_rate_keeps_every_frame(tmp_path):
    # webm rounds 30 fps timestamps to 33, 67, 100 ms...: no frame may be dropped or doubled
    path = encode(tmp_path / "thirty.webm", [flat(level) for level in LEVELS], codec="libvpx-vp9", rate=30)
    assert levels_of(path, fps=30) == LEVELS
    assert levels_of(path, fps=15) == LEVELS[::2]


def test_start_end_step_and_max_frames(ten_mp4):
    assert levels_of(ten_mp4, start=0.5) == LEVELS[5:]
    assert levels_of(ten_mp4, start=0.35, end=0.7) == LEVELS[4:7]
    assert levels_of(ten_mp4, end=0.3) == LEVELS[:3]
    assert levels_of(ten_mp4, step=3) == LEVELS[::3]
    assert levels_of(ten_mp4, max_frames=4) == LEVELS[:4]
    assert levels_of(ten_mp4, step=3, max_frames=2) == [0, 60]
    assert levels_of(ten_mp4, start=0.5, fps=20, max_frames=3) == [100, 100, 120]


def test_start_and_end_on_an_image_folder(tmp_path):
    for index, level in enumerate(LEVELS):  # 25 fps: frame i at i * 0.04 s
        Image.fromarray(flat(level)).save(tmp_path / f"{index}.png")
    assert levels_of(tmp_path, start=0.08, end=0.2) == LEVELS[2:5]


@pytest.mark.parametrize(
    "fit,shape", [("short", (16, 21)), ("crop", (16, 16)), ("pad", (16, 16)), ("stretch", (16, 16))]
)
def test_size_and_fit(ten_mp4, fit, shape):
    frame = next(iter_frames(ten_mp4, size=16, fit=fit))
    assert frame.shape == (*shape, 3)


def test_pad_letterboxes_with_black_and_crop_keeps_the_centre(tmp_path):
    path = encode(tmp_path / "white.mov", [flat(255)], codec="prores_ks", pix_fmt="yuv444p10le")
    padded = next(iter_frames(path, size=16, fit="pad"))
    assert padded[:2].max() == 0 and padded[-2:].max() == 0  # 32x24 in 16x16 leaves bands above and below
    assert padded[8].min() > 250
    stripes = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    stripes[:, 12:20] = 255  # a white band in the middle third
    Image.fromarray(stripes).save(tmp_path / "stripes.png")
    cropped = next(iter_frames(tmp_path / "stripes.png", size=24, fit="crop"))
    assert cropped.shape == (24, 24, 3)
    assert cropped[:, 8:16].min() > 250 and cropped[:, :3].max() == 0


def test_read_video_gives_a_float_tensor_matching_the_frames(ten_mp4, tmp_path):
    video, info = read_video(ten_mp4, size=12)
    assert video.shape == (10, 3, 12, 16) and video.dtype == torch.float32
    assert 0 <= video.min() and video.max() <= 1
    frames = np.stack(list(iter_frames(ten_mp4, size=12)))
    assert torch.equal(video, torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255)
    assert info.width == WIDTH  # the info describes the source, not the tensor
    webm = encode(tmp_path / "clip.webm", [flat(level) for level in LEVELS[:5]], codec="libvpx-vp9")
    video, info = read_video(webm, step=2)  # webm has no exact count: the gather-then-convert path
    assert video.shape == (3, 3, HEIGHT, WIDTH) and not info.frame_count_exact


def test_read_video_with_alpha_gives_four_channels(tmp_path):
    frames = [gradient(channels=4, seed=seed) for seed in range(3)]
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"{index:03d}.png")
    video, info = read_video(tmp_path, alpha=True)
    assert info.has_alpha and video.shape == (3, 4, HEIGHT, WIDTH)
    assert torch.equal((video[:, 3] * 255).round().byte(), torch.from_numpy(np.stack(frames)[..., 3]))


def test_alpha_from_vp9_webm_and_prores_mov(tmp_path):
    frames = [gradient(channels=4, seed=seed) for seed in range(3)]
    webm = encode(
        tmp_path / "alpha.webm",
        frames,
        codec="libvpx-vp9",
        pix_fmt="yuva420p",
        frame_format="rgba",
        options={"lossless": "1"},
    )
    mov = encode(
        tmp_path / "alpha.mov",
        frames,
        codec="prores_ks",
        pix_fmt="yuva444p10le",
        frame_format="rgba",
        options={"profile": "4444"},
    )
    for path in (webm, mov):
        assert probe(path).has_alpha
        read = list(iter_frames(path, alpha=True))
        assert all(frame.shape == (HEIGHT, WIDTH, 4) for frame in read)
        # FFmpeg's own converter, used to make the files, may move alpha by 1/255
        assert (
            max(np.abs(got[..., 3].astype(int) - want[..., 3]).max() for got, want in zip(read, frames, strict=True))
            <= 1
        )
        assert next(iter_frames(path)).shape == (HEIGHT, WIDTH, 3)


def test_alpha_requested_from_an_opaque_source_is_255(ten_mp4):
    frame = next(iter_frames(ten_mp4, alpha=True))
    assert frame.shape == (HEIGHT, WIDTH, 4) and (frame[..., 3] == 255).all()


def test_image_folder_sorts_naturally_and_patterns_work(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for number, level in [(1, 10), (2, 20), (10, 100)]:
        Image.fromarray(flat(level)).save(folder / f"f{number}.png")
    (folder / ".hidden.png").write_text("not an image")
    (folder / "notes.txt").write_text("not an image either")
    assert [int(frame.mean()) for frame in iter_frames(folder)] == [10, 20, 100]
    assert [int(frame.mean()) for frame in iter_frames(f"{folder}/f*.png")] == [10, 20, 100]
    assert [int(frame.mean()) for frame in iter_frames(f"{folder}/f%d.png")] == [10, 20, 100]
    for number in (3, 12):
        Image.fromarray(flat(number)).save(folder / f"{number:05d}.png")
    assert [int(frame.mean()) for frame in iter_frames(f"{folder}/%05d.png")] == [3, 12]
    info = probe(folder)
    assert (info.frame_count, info.fps, info.width, info.height) == (5, 25.0, WIDTH, HEIGHT)


# ---- errors: every one is a UserError naming the file ----


def expect_user_error(path, match, **options):
    with pytest.raises(UserError, match=match) as caught:
        list(iter_frames(path, **options))
    assert str(path) in str(caught.value) or path.name in str(caught.value)
    return str(caught.value)


def test_missing_file(tmp_path):
    expect_user_error(tmp_path / "nope.mp4", "no such video or image file")
    with pytest.raises(UserError, match="nope.mp4"):
        probe(tmp_path / "nope.mp4")


def test_folder_without_images(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    expect_user_error(tmp_path, "no images")


def test_pattern_matching_nothing(tmp_path):
    expect_user_error(tmp_path / "*.png", "no files match")


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "fake.mp4"
    path.write_text("this is not a video\n" * 20)
    expect_user_error(path, "not a video")


def test_audio_only_file(tmp_path):
    expect_user_error(write_audio_only(tmp_path / "sound.m4a"), "no video stream")


def test_zero_frames(tmp_path):
    path = tmp_path / "empty.avi"
    container = av.open(str(path), "w")
    stream = container.add_stream("mjpeg", rate=10)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuvj420p"
    container.start_encoding()
    container.close()
    expect_user_error(path, "no video frames")


def test_nothing_in_the_selected_range(ten_mp4):
    expect_user_error(ten_mp4, "no frames to read between 5", start=5)


def test_truncated_webm_is_reported(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (30, HEIGHT, WIDTH, 3), dtype=np.uint8)
    path = encode(tmp_path / "cut.webm", list(noise), codec="libvpx-vp9")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    expect_user_error(path, "truncated")


def test_decode_error_midway_says_how_many_frames_were_read(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (30, HEIGHT, WIDTH, 3), dtype=np.uint8)
    # moov atom first, so the file still opens after its tail is cut off
    path = write_h264(tmp_path / "cut.mp4", list(noise), {"movflags": "faststart"})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = expect_user_error(path, r"after \d+ frames")
    assert "after 0 frames" not in message


def test_corrupt_frame_is_reported(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (10, HEIGHT, WIDTH, 3), dtype=np.uint8)
    path = encode(tmp_path / "damaged.mov", list(noise), codec="prores_ks", pix_fmt="yuv444p10le")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # inside the frame data (the index sits at the end)
    data[middle : middle + 64] = np.random.default_rng(1).integers(0, 256, 64, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    expect_user_error(path, r"frame \d+ is corrupt")


def test_unreadable_image_in_a_folder(tmp_path):
    Image.fromarray(flat(10)).save(tmp_path / "00000.png")
    (tmp_path / "00001.png").write_text("garbage")
    with pytest.raises(UserError, match="00001.png: cannot read image"):
        list(iter_frames(tmp_path))


def test_image_of_another_size_in_a_folder(tmp_path):
    Image.fromarray(flat(10)).save(tmp_path / "00000.png")
    Image.fromarray(flat(10, width=20)).save(tmp_path / "00001.png")
    with pytest.raises(UserError, match="00001.png: image is 20x24"):
        list(iter_frames(tmp_path))


def test_frames_above_the_pixel_limit_need_a_size(ten_mp4):
    expect_user_error(ten_mp4, "over the limit", max_pixels=500)
    assert next(iter_frames(ten_mp4, max_pixels=500, size=8)).shape == (8, 11, 3)


@pytest.mark.parametrize(
    "options,match",
    [
        ({"fit": "zoom"}, "fit must be"),
        ({"step": 0}, "step"),
        ({"fps": 0}, "fps"),
        ({"start": 2, "end": 1}, "end"),
        ({"size": 0}, "size"),
        ({"max_frames": 0}, "max_frames"),
    ],
)
def test_bad_options(ten_mp4, options, match):
    with pytest.raises(UserError, match=match):
        read_video(ten_mp4, **options)
