"""Writing clips: every output format round-trips through our reader, writes are atomic, bad input is refused.

Also covers the still-image helpers (write_image, read_image, contact_sheet). Frames are tiny (32x24)
smooth pictures, so lossy codecs can be held to tight tolerances.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from PIL import Image

from vidrender.errors import UserError
from vidrender.io.images import contact_sheet, read_image, write_image
from vidrender.io.video import iter_frames, probe, read_video
from vidrender.io.video_write import VideoWriter, write_video

WIDTH, HEIGHT = 32, 24


def picture(seed, width=WIDTH, height=HEIGHT, channels=3):
    """A smooth colour picture that changes with `seed`; with 4 channels, a random (hard) alpha matte."""
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.zeros((height, width, channels), np.uint8)
    image[..., 0] = 30 + cols * 160 // width
    image[..., 1] = 30 + rows * 160 // height
    image[..., 2] = 60 + 25 * seed
    if channels == 4:
        image[..., 3] = np.random.default_rng(seed).integers(0, 256, (height, width))
    return image


def clip(count=5, channels=3, **size):
    return [picture(seed, channels=channels, **size) for seed in range(count)]


def differences(path, frames, alpha=False):
    """Per-frame absolute differences (int arrays) between what was written and what reads back."""
    read = list(iter_frames(path, alpha=alpha))
    assert len(read) == len(frames)
    return [np.abs(got.astype(int) - want.astype(int)) for got, want in zip(read, frames, strict=True)]


def no_leftovers(folder, keep=()):
    """Nothing but `keep` in `folder`: no temporary files or folders from atomic writes."""
    return sorted(entry.name for entry in folder.iterdir()) == sorted(keep)


def test_mp4_round_trip_within_tolerance(tmp_path):
    frames = clip()
    assert write_video(tmp_path / "out.mp4", frames, fps=10) == 5
    diffs = differences(tmp_path / "out.mp4", frames)
    # 4:2:0 chroma alone costs 2.1 levels on average on these pictures (see the webm test); CRF 18 adds little
    assert max(diff.mean() for diff in diffs) < 3
    assert max(diff.max() for diff in diffs) < 16
    info = probe(tmp_path / "out.mp4")
    assert (info.width, info.height, info.frame_count, info.fps) == (WIDTH, HEIGHT, 5, 10)


def test_mp4_pads_odd_sizes_by_repeating_the_edge(tmp_path):
    frames = clip(count=3, width=33, height=25)
    write_video(tmp_path / "odd.mp4", frames, fps=10)
    read = list(iter_frames(tmp_path / "odd.mp4"))
    assert read[0].shape == (26, 34, 3)
    for got, want in zip(read, frames, strict=True):
        assert np.abs(got[:25, :33].astype(int) - want).mean() < 3
        assert np.abs(got[25, :33].astype(int) - want[24]).mean() < 3  # extra row copies the last one
        assert np.abs(got[:25, 33].astype(int) - want[:, 32]).mean() < 3


@pytest.mark.parametrize("suffix", [".webm", ".mov"])
def test_alpha_round_trips_exactly_through_webm_and_mov(tmp_path, suffix):
    frames = clip(channels=4)
    write_video(tmp_path / f"out{suffix}", frames, fps=10)
    assert probe(tmp_path / f"out{suffix}").has_alpha
    diffs = differences(tmp_path / f"out{suffix}", frames, alpha=True)
    assert max(diff[..., 3].max() for diff in diffs) == 0  # the matte survives bit for bit


def test_mov_colour_is_within_one_level(tmp_path):
    frames = clip(channels=4)
    write_video(tmp_path / "out.mov", frames, fps=10)
    assert max(diff.max() for diff in differences(tmp_path / "out.mov", frames, alpha=True)) <= 1


def test_webm_colour_is_lossless_apart_from_chroma_subsampling(tmp_path):
    frames = clip(channels=4)
    write_video(tmp_path / "out.webm", frames, fps=10)
    for got, want in zip(iter_frames(tmp_path / "out.webm", alpha=True), frames, strict=True):
        # VP9 alpha exists only as 4:2:0, whose colour planes are half size: compare with that conversion
        subsampled = av.VideoFrame.from_ndarray(want, format="rgba").reformat(format="yuva420p")
        assert np.array_equal(got[..., :3], subsampled.to_ndarray(format="rgba")[..., :3])


def test_lossy_webm_with_a_quality_setting_is_smaller_and_still_has_alpha(tmp_path):
    frames = clip(channels=4)
    write_video(tmp_path / "lossless.webm", frames, fps=10)
    write_video(tmp_path / "lossy.webm", frames, fps=10, quality=40)
    assert (tmp_path / "lossy.webm").stat().st_size < (tmp_path / "lossless.webm").stat().st_size
    diffs = differences(tmp_path / "lossy.webm", frames, alpha=True)
    assert max(diff[..., 3].mean() for diff in diffs) < 40  # a random matte is the worst case for VP9


@pytest.mark.parametrize("name", ["seq", "seq/"])
def test_png_folder_round_trips_exactly(tmp_path, name):
    frames = clip(channels=4)
    write_video(tmp_path / name if name == "seq" else f"{tmp_path}/{name}", frames, fps=10)
    folder = tmp_path / "seq"
    assert sorted(entry.name for entry in folder.iterdir()) == [f"{index:05d}.png" for index in range(5)]
    assert Image.open(folder / "00000.png").mode == "RGBA"
    assert all(diff.max() == 0 for diff in differences(folder, frames, alpha=True))


def test_gif_is_readable(tmp_path):
    frames = [np.full((HEIGHT, WIDTH, 3), level, np.uint8) for level in (0, 80, 160, 240)]
    write_video(tmp_path / "anim.gif", frames, fps=10)
    assert max(diff.max() for diff in differences(tmp_path / "anim.gif", frames)) <= 2
    assert probe(tmp_path / "anim.gif").fps == pytest.approx(10)


def test_gif_keeps_transparency(tmp_path):
    frames = clip(count=3, channels=4)
    for frame in frames:
        frame[..., 3] = 255
        frame[:8, :8, 3] = 0
    write_video(tmp_path / "alpha.gif", frames, fps=10)
    for frame in iter_frames(tmp_path / "alpha.gif", alpha=True):
        assert (frame[:8, :8, 3] == 0).all() and (frame[8:, 8:, 3] == 255).all()


def test_gif_delays_follow_a_fractional_rate(tmp_path):
    write_video(tmp_path / "thirty.gif", clip(count=6), fps=30)
    with Image.open(tmp_path / "thirty.gif") as gif:
        delays = []
        for index in range(gif.n_frames):
            gif.seek(index)
            delays.append(gif.info["duration"])
    assert sum(delays) == 200 and set(delays) <= {30, 40}


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".mov"])
def test_fractional_fps(tmp_path, suffix):
    write_video(tmp_path / f"ntsc{suffix}", clip(count=3), fps=29.97)
    assert probe(tmp_path / f"ntsc{suffix}").fps == pytest.approx(29.97, abs=0.01)


def test_tensor_frames_are_accepted(tmp_path):
    tensors = [torch.rand(4, HEIGHT, WIDTH) for _ in range(2)]
    write_video(tmp_path / "tensors", tensors, fps=5)
    for got, tensor in zip(iter_frames(tmp_path / "tensors", alpha=True), tensors, strict=True):
        expected = (tensor * 255).round().byte().permute(1, 2, 0).numpy()
        assert np.array_equal(got, expected)


def test_streaming_writer_publishes_only_at_the_end(tmp_path):
    path = tmp_path / "stream.mp4"
    with VideoWriter(path, fps=10) as writer:
        for frame in clip():
            writer.write(frame)
            assert not path.exists()
    assert path.exists() and writer.frames_written == 5
    assert no_leftovers(tmp_path, keep=["stream.mp4"])


@pytest.mark.parametrize("name", ["broken.mp4", "broken.webm", "broken.mov", "broken.gif", "broken"])
def test_failed_write_leaves_nothing_behind(tmp_path, name):
    def frames_then_crash():
        yield from clip(count=2)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_video(tmp_path / name, frames_then_crash(), fps=10)
    assert no_leftovers(tmp_path)


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "keep.mp4"
    write_video(path, clip(count=2), fps=10)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="same size"):
        write_video(path, [picture(0), picture(1, width=16)], fps=10)
    assert path.read_bytes() == before and no_leftovers(tmp_path, keep=["keep.mp4"])


def test_no_frames_is_an_error_and_writes_nothing(tmp_path):
    with pytest.raises(UserError, match="empty.mp4: no frames"):
        write_video(tmp_path / "empty.mp4", [], fps=10)
    assert no_leftovers(tmp_path)


def test_unknown_suffix_lists_the_accepted_ones(tmp_path):
    with pytest.raises(UserError, match=r"clip\.avi.*\.mp4, \.webm, \.mov, \.gif"):
        write_video(tmp_path / "clip.avi", clip(), fps=10)
    assert no_leftovers(tmp_path)


@pytest.mark.parametrize(
    "options,match", [({"fps": 0}, "fps"), ({"fps": float("nan")}, "fps"), ({"fps": 10, "quality": 99}, "quality")]
)
def test_bad_writer_options(tmp_path, options, match):
    with pytest.raises(UserError, match=match):
        write_video(tmp_path / "out.mp4", clip(), **options)
    assert no_leftovers(tmp_path)


def test_png_folder_replaces_an_old_sequence_but_not_other_files(tmp_path):
    write_video(tmp_path / "seq", clip(count=5), fps=10)
    write_video(tmp_path / "seq", clip(count=2), fps=10)
    assert sorted(entry.name for entry in (tmp_path / "seq").iterdir()) == ["00000.png", "00001.png"]
    (tmp_path / "seq" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="other files"):
        write_video(tmp_path / "seq", clip(count=2), fps=10)
    assert (tmp_path / "seq" / "notes.txt").read_text() == "mine"


def test_write_image_and_read_image(tmp_path):
    rgba = picture(1, channels=4)
    write_image(tmp_path / "a.png", rgba)
    assert np.array_equal(read_image(tmp_path / "a.png"), rgba)
    write_image(tmp_path / "gray.png", np.full((HEIGHT, WIDTH), 9, np.uint8))
    assert read_image(tmp_path / "gray.png").shape == (HEIGHT, WIDTH, 3)
    with pytest.raises(UserError, match="a.jpg"):
        write_image(tmp_path / "a.jpg", rgba)  # JPEG has no alpha
    assert no_leftovers(tmp_path, keep=["a.png", "gray.png"])


def test_contact_sheet_tiles_in_rows(tmp_path):
    tiles = [np.full((10, 12, 3), level, np.uint8) for level in (10, 20, 30)]
    sheet = contact_sheet(tiles, cols=2, gap=2)
    assert sheet.shape == (22, 26, 3) and sheet.dtype == np.uint8
    assert sheet[0, 0, 0] == 10 and sheet[0, 14, 0] == 20 and sheet[12, 0, 0] == 30
    assert (sheet[12:, 14:] == 255).all()  # the empty cell and the gaps are white
    transparent = np.zeros((16, 16, 4), np.uint8)
    checker = contact_sheet([transparent], cols=1)
    assert set(np.unique(checker)) == {153, 204}  # transparency is shown as a checkerboard


def test_mp4_quality_zero_is_bit_exact(tmp_path):
    frames = list((np.random.default_rng(0).random((4, 17, 23, 3)) * 255).astype(np.uint8))
    write_video(tmp_path / "lossless.mp4", frames, 24, quality=0)
    decoded, info = read_video(tmp_path / "lossless.mp4")
    assert (info.width, info.height) == (23, 17)  # odd sizes need no padding in RGB
    assert np.array_equal((decoded * 255).round().byte().permute(0, 2, 3, 1).numpy(), np.stack(frames))
