"""Synthetic clips: determinism, ground-truth consistency (mattes move by the affines), truth folders.

Clips are small (48-96 px, 6-24 frames) so the whole file runs in seconds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vidrender import geometry, metrics
from vidrender.errors import UserError
from vidrender.synth import (
    BACKGROUND_KINDS,
    MotionRanges,
    make_clip,
    read_truth,
    recompose,
    write_samples,
    write_truth,
)
from vidrender.synth import truth as truth_module
from vidrender.synth.sprites import is_rotation_symmetric


def per_frame_iou(pred: torch.Tensor, true: torch.Tensor) -> list[float]:
    return [metrics.matte_iou(p, t) for p, t in zip(pred, true, strict=True)]


def warped_reference(clip, affines: torch.Tensor) -> torch.Tensor:
    """The reference frame's matte moved by each affine: (T, 1, H, W)."""
    reference_alpha = clip.alpha[clip.reference].expand(len(affines), -1, -1, -1).contiguous()
    return geometry.warp(reference_alpha, affines.float())


@pytest.fixture(scope="module")
def clip():
    return make_clip(seed=7, size=64, frames=16)


def test_same_seed_gives_the_same_clip_and_another_seed_does_not():
    first, second = make_clip(seed=3, size=48, frames=6), make_clip(seed=3, size=48, frames=6)
    for name in ("frames", "clean", "background", "alpha", "sprite", "affines", "placement"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    other = make_clip(seed=4, size=48, frames=6)
    assert not torch.equal(first.background, other.background)
    assert not torch.allclose(first.affines, other.affines)


def test_shapes_ranges_and_reference_identity(clip):
    T, H, W = 16, 64, 64
    assert clip.frames.shape == clip.clean.shape == (T, 3, H, W)
    assert clip.background.shape == (3, H, W) and clip.alpha.shape == (T, 1, H, W)
    assert clip.sprite.shape[0] == 4 and clip.affines.shape == (T, 2, 3) and clip.affines.dtype == torch.float64
    for tensor in (clip.frames, clip.clean, clip.background, clip.alpha, clip.sprite):
        assert tensor.min() >= 0 and tensor.max() <= 1
    assert torch.allclose(clip.affines[0], torch.eye(2, 3, dtype=torch.float64), atol=1e-12)
    # anti-aliased: the matte has in-between values on the character's edge
    assert ((clip.alpha > 0.05) & (clip.alpha < 0.95)).any()


def test_reference_matte_moved_by_the_affines_matches_every_frame_and_the_inverse_does_not(clip):
    forward = per_frame_iou(warped_reference(clip, clip.affines), clip.alpha)
    assert min(forward) > 0.9
    backward = per_frame_iou(warped_reference(clip, geometry.invert(clip.affines)), clip.alpha)
    # frames far from the reference have moved enough that the wrong direction misses
    assert np.mean(backward[len(backward) // 2 :]) < 0.7


def test_other_reference_frame_and_non_square_size():
    clip = make_clip(seed=2, size=(96, 64), frames=12, reference=5)
    assert clip.frames.shape == (12, 3, 64, 96)
    assert torch.allclose(clip.affines[5], torch.eye(2, 3, dtype=torch.float64), atol=1e-12)
    assert min(per_frame_iou(warped_reference(clip, clip.affines), clip.alpha)) > 0.9


def test_character_covers_part_of_the_frame_and_stays_inside():
    for seed in range(3):
        clip = make_clip(seed=seed, size=64, frames=24)
        coverage = clip.alpha.mean(dim=(1, 2, 3))
        assert 0.03 < coverage.min() and coverage.max() < 0.3
        assert border(clip.alpha).max() < 0.05


def border(alpha: torch.Tensor) -> torch.Tensor:
    """The outermost rows and columns of mattes (..., H, W), flattened."""
    return torch.cat([alpha[..., 0, :], alpha[..., -1, :], alpha[..., 0], alpha[..., -1]], dim=-1)


def test_leave_frame_exits_completely_and_comes_back():
    clip = make_clip(seed=1, size=64, frames=32, leave_frame=True)
    area = clip.alpha.flatten(1).sum(1)
    gone = torch.nonzero(area == 0).flatten()
    assert len(gone) > 0, "the character never left the frame"
    assert border(clip.alpha[0]).max() < 0.05, "the reference frame must show the whole character"
    assert (area[gone[0] :] > 0.5 * area[0]).any(), "the character never came back"


def test_characters_are_not_rotation_symmetric():
    for seed in range(4):
        sprite = make_clip(seed=seed, size=48, frames=2).sprite
        assert not is_rotation_symmetric(sprite[3].numpy())
    disc = np.zeros((64, 64), np.float32)
    disc[np.hypot(*np.mgrid[-32:32, -32:32]) < 20] = 1
    assert is_rotation_symmetric(disc)


def test_every_background_kind_is_textured():
    for kind in BACKGROUND_KINDS:
        plate = make_clip(seed=0, size=48, frames=2, background=kind).background
        assert plate.std(dim=(1, 2)).max() > 0.02, kind


def test_noise_and_jpeg_change_only_the_model_input():
    plain = make_clip(seed=5, size=48, frames=4)
    noisy = make_clip(seed=5, size=48, frames=4, noise=0.05)
    assert torch.equal(plain.clean, noisy.clean)
    residual = noisy.frames - noisy.clean
    assert 0.03 < residual.std() < 0.06
    compressed = make_clip(seed=5, size=48, frames=4, jpeg_quality=30)
    assert not torch.equal(compressed.frames, compressed.clean)
    assert metrics.psnr(compressed.frames, compressed.clean) > 20


def test_given_character_and_background_are_used_and_recompose_reproduces_a_clip():
    source = make_clip(seed=8, size=64, frames=6)
    plate = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    clip = make_clip(seed=9, size=64, frames=6, character=source.sprite, background=plate)
    assert torch.allclose(clip.background, torch.from_numpy(plate).permute(2, 0, 1).float() / 255)
    assert torch.equal(clip.sprite, source.sprite)
    assert metrics.psnr(recompose(clip, clip.background), clip.clean) > 60


def test_recompose_puts_the_character_on_another_plate():
    character, other = make_clip(seed=10, size=64, frames=6), make_clip(seed=11, size=64, frames=6)
    frames = recompose(character, other.background)
    outside = (character.alpha == 0).expand_as(frames)
    assert torch.allclose(frames[outside], other.background.expand_as(frames)[outside])
    # only the plate changed, and it shows through by (1 - alpha): colour values are in [0, 1]
    assert ((frames - character.clean).abs() <= 1 - character.alpha + 1e-5).all()


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError, match="at least 2 frames"):
        make_clip(frames=1)
    with pytest.raises(UserError, match="16x16"):
        make_clip(size=8)
    with pytest.raises(UserError, match="background kind"):
        make_clip(size=32, frames=2, background="lava")
    with pytest.raises(UserError, match="reference"):
        make_clip(size=32, frames=4, reference=4)
    with pytest.raises(UserError, match="scale"):
        make_clip(size=32, frames=2, motion=MotionRanges(scale=(2.0, 1.0)))


def test_truth_folder_round_trip(tmp_path, clip):
    folder = write_truth(clip, tmp_path / "truth")
    assert sorted(p.name for p in folder.iterdir()) == [
        "affine.json",
        "alpha",
        "background.png",
        "character.png",
        "clip.mp4",
        "frames",
        "meta.json",
    ]
    back = read_truth(folder)
    assert torch.allclose(back.affines, clip.affines, atol=1e-6)  # the file keeps 6 decimals of a pixel
    assert torch.equal(back.background, clip.background) and torch.equal(back.sprite, clip.sprite)
    assert torch.equal(back.placement, clip.placement)
    assert (back.clean - clip.clean).abs().max() <= 0.5 / 255 + 1e-6
    assert (back.alpha - clip.alpha).abs().max() <= 0.5 / 255 + 1e-6
    assert back.frames.shape == clip.frames.shape and metrics.psnr(back.frames, clip.frames) > 25
    assert (back.fps, back.reference, back.settings) == (clip.fps, clip.reference, clip.settings)


def test_truth_without_frames_or_video_re_renders_the_clean_frames(tmp_path, clip):
    folder = write_truth(clip, tmp_path / "lite", clean_frames=False, video=False)
    assert not (folder / "frames").exists() and not (folder / "clip.mp4").exists()
    back = read_truth(folder)
    # exact up to affine.json's 6 decimals: far below one 8-bit level (0.004)
    assert (back.clean - clip.clean).abs().max() < 1e-4
    assert torch.equal(back.frames, back.clean)


def test_affine_json_maps_reference_pixels_to_frame_pixels(tmp_path, clip):
    """Independent of geometry.py: the matte's centroid in pixel coordinates moves by the stored matrices."""
    folder = write_truth(clip, tmp_path / "truth", clean_frames=False, video=False)
    affine = json.loads((folder / "affine.json").read_text())
    assert (affine["width"], affine["height"], affine["reference"]) == (64, 64, 0)
    assert "reference-frame pixel" in affine["convention"]

    def centroid(alpha):  # pixel (i, j) has its centre at (i + 0.5, j + 0.5)
        ys, xs = np.mgrid[0 : alpha.shape[0], 0 : alpha.shape[1]] + 0.5
        return np.array([(xs * alpha).sum(), (ys * alpha).sum()]) / alpha.sum()

    start = centroid(clip.alpha[0, 0].numpy())
    for t, matrix in enumerate(affine["frames"]):
        predicted = np.array(matrix) @ np.append(start, 1.0)
        # centroids of an affinely moved shape move by the same affine (up to resampling); a half-pixel
        # slip in the convention (origin at the first pixel's centre) misses by ~0.5 px here
        assert np.linalg.norm(predicted - centroid(clip.alpha[t, 0].numpy())) < 0.05


def test_read_truth_refuses_what_is_not_a_truth_folder(tmp_path, clip):
    with pytest.raises(UserError, match="not found"):
        read_truth(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a vidrender truth folder"):
        read_truth(tmp_path / "empty")
    folder = write_truth(clip, tmp_path / "broken", clean_frames=False, video=False)
    (folder / "affine.json").write_text('{"frames": [[1, 2]]}')
    with pytest.raises(UserError, match="affine.json"):
        read_truth(folder)


def test_failed_write_leaves_nothing_behind(tmp_path, clip, monkeypatch):
    def broken_writer(*args, **kwargs):
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr(truth_module, "write_video", broken_writer)
    with pytest.raises(RuntimeError):
        write_truth(clip, tmp_path / "truth")
    assert list(tmp_path.iterdir()) == []


def test_write_samples_writes_readable_truth_folders(tmp_path):
    paths = write_samples(tmp_path / "samples", n=2, size=48, frames=6, seed=3)
    assert [p.name for p in paths] == ["clip0", "clip1"]
    clips = [read_truth(p) for p in paths]
    assert clips[0].settings["seed"] == 3 and clips[1].settings["seed"] == 4
    assert clips[0].frames.shape == (6, 3, 48, 48)
