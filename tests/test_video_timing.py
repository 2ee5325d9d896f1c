"""Reading what players show: mirrored display matrices, cover pictures, animated PNG and WebP, and
variable frame rate clips resampled to a constant rate (`vidrender.io.video`).

Clips are made here with PyAV and Pillow, tiny (32 x 24, a few frames). Orientations are checked
against FFmpeg's own transpose/hflip/vflip filters, run through PyAV's filter graph; timing with flat
grey levels that encode each stored frame's timestamp, so every frame read says which one it is.
"""

from __future__ import annotations

from fractions import Fraction

import av
import av.filter
import numpy as np
import pytest
from media_files import mux_silence, write_audio_with_cover, write_cover_first_mp4
from PIL import Image

from vidrender.errors import UserError
from vidrender.io.video import iter_frames, probe, read_video

WIDTH, HEIGHT = 32, 24
IDENTITY = (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)
# The 8 orientations as PyAV's set_display_rotation(degrees, hflip, vflip) writes them (through
# libavutil's av_display_rotation_set and av_display_matrix_flip), and the filters FFmpeg's autorotate
# inserts for each (fftools/ffmpeg_filter.c: theta = -round(av_display_rotation_get(m)) modulo 360;
# 90 -> transpose cclock_flip if m[3] > 0 else clock; 180 -> hflip if m[0] < 0, vflip if m[4] < 0;
# 270 -> transpose clock_flip if m[3] < 0 else cclock; 0 -> vflip if m[4] < 0).
ORIENTATIONS = {  # (degrees counter-clockwise, hflip, vflip): (display matrix, FFmpeg's filters)
    (0, False, False): (IDENTITY, ()),
    (90, False, False): ((0, -65536, 0, 65536, 0, 0, 0, 0, 1 << 30), ("transpose=cclock",)),
    (180, False, False): ((-65536, 0, 0, 0, -65536, 0, 0, 0, 1 << 30), ("hflip", "vflip")),
    (-90, False, False): ((0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30), ("transpose=clock",)),
    (0, True, False): ((-65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30), ("hflip",)),
    (90, True, False): ((0, -65536, 0, -65536, 0, 0, 0, 0, 1 << 30), ("transpose=clock_flip",)),
    (180, True, False): ((65536, 0, 0, 0, -65536, 0, 0, 0, 1 << 30), ("vflip",)),
    (-90, True, False): ((0, 65536, 0, 65536, 0, 0, 0, 0, 1 << 30), ("transpose=cclock_flip",)),
    # the same mirrors written as vertical flips
    (0, False, True): ((65536, 0, 0, 0, -65536, 0, 0, 0, 1 << 30), ("vflip",)),
    (90, False, True): ((0, 65536, 0, 65536, 0, 0, 0, 0, 1 << 30), ("transpose=cclock_flip",)),
}


def asymmetric_picture(width=WIDTH, height=HEIGHT):
    """Every pixel different from its mirror images and turns: red grows rightwards, green downwards,
    and blue marks the top-left corner."""
    rows, cols = np.mgrid[0:height, 0:width]
    picture = np.zeros((height, width, 3), np.uint8)
    picture[..., 0] = cols * 255 // (width - 1)
    picture[..., 1] = rows * 255 // (height - 1)
    picture[:5, :7, 2] = 255
    return picture


def flat(level, width=WIDTH, height=HEIGHT):
    return np.full((height, width, 3), level, np.uint8)


def levels_of(path, **options):
    """The grey level of each frame read, to the nearest 20 (the step the clips here use)."""
    return [int(round(frame.mean() / 20)) * 20 for frame in iter_frames(path, **options)]


def write_clip(path, frames, *, codec="libx264", pix_fmt="yuv420p", rate=10, pts=None, display=None, options=None):
    """`frames` with PyAV; pts in units of 1/rate (default 0, 1, 2, ...); display: (degrees, hflip, vflip)."""
    container = av.open(str(path), "w")
    stream = container.add_stream(codec, rate=rate, options=options or {})
    stream.height, stream.width = frames[0].shape[:2]
    stream.pix_fmt = pix_fmt
    if display is not None:
        degrees, hflip, vflip = display
        stream.set_display_rotation(degrees, hflip=hflip, vflip=vflip)
    for index, pixels in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        frame.pts = index if pts is None else pts[index]
        frame.time_base = Fraction(1, rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode())
    container.close()
    return path


def through_ffmpeg_filters(pixels, filters):
    """`pixels` (H, W, 3) uint8 run through FFmpeg's filters (e.g. "transpose=clock", "hflip")."""
    graph = av.filter.Graph()
    last = graph.add_buffer(width=pixels.shape[1], height=pixels.shape[0], format="rgb24", time_base=Fraction(1, 10))
    for spec in filters:
        name, _, argument = spec.partition("=")
        node = graph.add(name, argument) if argument else graph.add(name)
        last.link_to(node)
        last = node
    sink = graph.add("buffersink")
    last.link_to(sink)
    graph.configure()
    frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
    frame.pts, frame.time_base = 0, Fraction(1, 10)
    graph.vpush(frame)
    return graph.vpull().to_ndarray(format="rgb24")


# --- display matrices ------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", list(ORIENTATIONS), ids=str)
def test_autorotate_filters_are_ffmpegs(orientation):
    from vidrender.io.video import autorotate_filters  # imported here so the rest of the file runs on old code

    matrix, filters = ORIENTATIONS[orientation]
    assert autorotate_filters(matrix) == filters
    assert autorotate_filters(None) == ()


def test_the_matrices_are_what_pyav_writes(tmp_path):
    """The table's matrices are the ones a file carries (so the end-to-end test below reads them)."""
    for index, (orientation, (matrix, _)) in enumerate(ORIENTATIONS.items()):
        if orientation == (0, False, False):
            continue  # no rotation writes no matrix
        path = write_clip(tmp_path / f"{index}.mov", [asymmetric_picture()], codec="png", pix_fmt="rgb24",
                          display=orientation)
        with av.open(str(path)) as container:
            decoded = next(container.decode(video=0))
            data = bytes(decoded.side_data.get("DISPLAYMATRIX"))
        assert tuple(np.frombuffer(data, np.int32)) == matrix, orientation


@pytest.mark.parametrize("orientation", list(ORIENTATIONS), ids=str)
def test_every_orientation_comes_out_as_ffmpeg_shows_it(tmp_path, orientation):
    stored = asymmetric_picture()
    # PNG in MOV is lossless, so the frames read must equal FFmpeg's filters' output exactly
    path = write_clip(tmp_path / "oriented.mov", [stored, stored[::-1].copy()], codec="png", pix_fmt="rgb24",
                      display=orientation)
    _, filters = ORIENTATIONS[orientation]
    frames = list(iter_frames(path))
    assert len(frames) == 2
    assert np.array_equal(frames[0], through_ffmpeg_filters(stored, filters))
    assert np.array_equal(frames[1], through_ffmpeg_filters(stored[::-1].copy(), filters))
    info = probe(path)
    assert (info.height, info.width) == frames[0].shape[:2]
    # rotation and mirrored describe the same thing: turn counter-clockwise, then mirror left-right
    described = np.rot90(stored, info.rotation // 90)
    assert np.array_equal(frames[0], described[:, ::-1] if info.mirrored else described)


def test_a_mirrored_h264_mp4_with_alpha_and_a_size(tmp_path):
    """End to end through the lossy path most phones produce: H.264 in MP4, read with alpha and resized."""
    stored = asymmetric_picture(64, 48)
    path = write_clip(tmp_path / "mirrored.mp4", [stored] * 2, pix_fmt="yuv444p", display=(90, True, False),
                      options={"crf": "0"})
    expected = through_ffmpeg_filters(stored, ("transpose=clock_flip",))
    frame = next(iter_frames(path, alpha=True))
    assert frame.shape == (64, 48, 4) and (frame[..., 3] == 255).all()
    assert np.abs(frame[..., :3].astype(int) - expected).mean() < 3
    small = next(iter_frames(path, size=24, fit="short"))
    assert small.shape == (32, 24, 3)


# --- cover pictures -------------------------------------------------------------------------------


def test_a_cover_picture_before_the_video_is_not_the_video(tmp_path):
    levels = [0, 60, 120, 180]
    path = write_cover_first_mp4(tmp_path / "cover.mp4", [flat(level) for level in levels], asymmetric_picture(20, 20))
    with av.open(str(path)) as container:  # the file really has the cover first
        assert container.streams.video[0].disposition & av.stream.Disposition.attached_pic
    info = probe(path)
    assert (info.width, info.height, info.frame_count) == (WIDTH, HEIGHT, 4)
    assert levels_of(path) == levels


def write_matroska_audio_with_cover(path):
    """A Matroska audio file with a PNG attachment, which FFmpeg shows as an attached-picture stream."""
    cover = path.with_suffix(".png")
    Image.fromarray(asymmetric_picture(20, 20)).save(cover)
    container = av.open(str(path), "w")
    container.add_attachment("cover.png", "image/png", cover.read_bytes())
    audio = container.add_stream("aac", rate=44100)
    mux_silence(container, audio)
    container.close()
    return path


@pytest.mark.parametrize("suffix", [".mp4", ".mka"])
def test_a_cover_picture_alone_is_refused_in_one_line(tmp_path, suffix):
    if suffix == ".mp4":
        path = write_audio_with_cover(tmp_path / "song.mp4", asymmetric_picture(20, 20))
    else:
        path = write_matroska_audio_with_cover(tmp_path / "song.mka")
    with av.open(str(path)) as container:  # FFmpeg does offer the cover as a video stream
        assert container.streams.video[0].disposition & av.stream.Disposition.attached_pic
    for read in (probe, lambda clip: list(iter_frames(clip))):
        with pytest.raises(UserError, match="only a cover picture") as caught:
            read(path)
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_training_input_skips_the_cover_and_refuses_a_cover_alone(tmp_path):
    from vidrender.pipelines.motion.inputs import load_clips

    clip_path = write_cover_first_mp4(tmp_path / "cover.mp4", [flat(level) for level in (0, 60, 120)],
                                      asymmetric_picture(20, 20))
    (clip,) = load_clips([clip_path], needs_affines=False)
    assert clip.frames.shape == (3, 3, HEIGHT, WIDTH) and clip.native_size == (WIDTH, HEIGHT)
    with pytest.raises(UserError, match="only a cover picture"):
        load_clips([write_audio_with_cover(tmp_path / "song.mp4", asymmetric_picture(20, 20))], needs_affines=False)


# --- animated PNG and WebP ------------------------------------------------------------------------


def save_animation(path, levels, durations, **options):
    images = [Image.fromarray(flat(level)) for level in levels]
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0, **options)
    return path


@pytest.mark.parametrize("suffix,options", [(".png", {}), (".webp", {"lossless": True})])
def test_animated_images_give_every_frame(tmp_path, suffix, options):
    path = save_animation(tmp_path / f"even{suffix}", [0, 100, 200], [100, 100, 100], **options)
    assert levels_of(path) == [0, 100, 200]
    info = probe(path)
    assert (info.frame_count, info.fps, info.variable_frame_rate) == (3, pytest.approx(10), False)


@pytest.mark.parametrize("suffix,options", [(".png", {}), (".webp", {"lossless": True})])
def test_animated_images_keep_their_timing(tmp_path, suffix, options):
    # the middle frame is shown three times as long: at 10 fps it is on screen for three frames
    path = save_animation(tmp_path / f"uneven{suffix}", [0, 100, 200], [100, 300, 100], **options)
    assert levels_of(path) == [0, 100, 100, 100, 200]
    info = probe(path)
    assert (info.fps, info.frame_count, info.duration) == (pytest.approx(10), 5, pytest.approx(0.5))
    assert info.variable_frame_rate and not info.frame_count_exact
    assert levels_of(path, start=0.12) == [100, 100, 100, 200]  # ticks at 0.12, 0.22, 0.32, 0.42 s
    video, _ = read_video(path)
    assert video.shape == (5, 3, HEIGHT, WIDTH)


def test_animated_webp_keeps_its_alpha(tmp_path):
    frames = [np.zeros((HEIGHT, WIDTH, 4), np.uint8) for _ in range(2)]
    frames[0][..., 0], frames[0][..., 3] = 200, 255
    frames[1][..., 1], frames[1][:, : WIDTH // 2, 3] = 200, 255  # right half transparent
    images = [Image.fromarray(frame, "RGBA") for frame in frames]
    path = tmp_path / "alpha.webp"
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0, lossless=True)
    assert probe(path).has_alpha
    read = list(iter_frames(path, alpha=True))
    assert len(read) == 2 and read[1].shape == (HEIGHT, WIDTH, 4)
    assert (read[0][..., 3] == 255).all()
    assert (read[1][:, : WIDTH // 2, 3] == 255).all() and (read[1][:, WIDTH // 2 :, 3] == 0).all()


# --- variable frame rate --------------------------------------------------------------------------

HELD_PTS = [0, 1, 4, 5, 7]  # at 10 fps: frames held for 1, 3, 1, 2 and 1 ticks


def on_screen(pts, ticks):
    """The grey level (20 * pts) of the frame on screen at each tick: the last one shown at or before it."""
    return [20 * max(stamp for stamp in pts if stamp <= tick) for tick in range(ticks)]


@pytest.mark.parametrize("suffix,codec", [(".mp4", "libx264"), (".mkv", "libx264"), (".webm", "libvpx-vp9")])
def test_variable_frame_rate_is_resampled_to_its_nominal_rate(tmp_path, suffix, codec):
    # each frame's grey level is 20 * its timestamp in ticks, so a frame read says when it was shown
    path = write_clip(tmp_path / f"vfr{suffix}", [flat(20 * stamp) for stamp in HELD_PTS], codec=codec, pts=HELD_PTS)
    expected = on_screen(HELD_PTS, 8)  # 0, 20, 20, 20, 80, 100, 100, 140
    assert levels_of(path) == expected
    info = probe(path)
    assert info.variable_frame_rate and info.fps == pytest.approx(10)
    assert info.frame_count == len(expected) and not info.frame_count_exact
    video, read_info = read_video(path)
    assert video.shape[0] == len(expected) and read_info.fps == pytest.approx(10)
    # a range starts on the new rate's ticks from `start`
    assert levels_of(path, start=0.3) == expected[3:]
    assert levels_of(path, end=0.45) == expected[:5]


def test_variable_frame_rate_reaches_training_evenly_spaced(tmp_path):
    from vidrender.pipelines.motion.inputs import load_clips

    path = write_clip(tmp_path / "vfr.mp4", [flat(20 * stamp) for stamp in HELD_PTS], pts=HELD_PTS)
    (clip,) = load_clips([path], needs_affines=False)
    assert clip.fps == pytest.approx(10)
    levels = [int(round(float(frame.mean()) * 255 / 20)) * 20 for frame in clip.frames]
    assert levels == on_screen(HELD_PTS, 8)


def direct_decode(path):
    """Every frame as PyAV decodes it, with no resampling: the reference a constant-rate read must match."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.mark.parametrize(
    "suffix,codec,rate", [(".mp4", "libx264", 10), (".webm", "libvpx-vp9", 30), (".mkv", "libx264", 30000 / 1001)]
)
def test_constant_frame_rate_is_read_frame_by_frame_unchanged(tmp_path, suffix, codec, rate):
    # webm and mkv round timestamps to milliseconds (33, 67, 100 ms ... at 30 fps): still constant
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(12)]
    path = write_clip(tmp_path / f"cfr{suffix}", frames, codec=codec, rate=Fraction(rate).limit_denominator(1001))
    read = list(iter_frames(path))
    reference = direct_decode(path)
    assert len(read) == len(reference) == 12
    assert all(np.array_equal(mine, theirs) for mine, theirs in zip(read, reference, strict=True))
    assert not probe(path).variable_frame_rate


def test_timestamps_too_far_apart_are_damage_not_timing(tmp_path):
    # a frame 100000 s after the others would take a million repeats: read frame by frame instead
    path = write_clip(tmp_path / "far.mkv", [flat(level) for level in (0, 40, 80, 120)], pts=[0, 1, 2, 1_000_000])
    assert levels_of(path) == [0, 40, 80, 120]
    assert not probe(path).variable_frame_rate
