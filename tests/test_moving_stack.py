"""The layer stack of a clip filmed by a moving camera (`pipelines/motion/stack.py`) and its compose
(`pipelines/motion/composing.py`): render, frame and world motion, checkpoint and export round trips, and
the three cameras of compose, on a hand-built stack whose camera pans by whole pixels (exact sampling)."""

from __future__ import annotations

import json

import pytest
import torch

from vidrender import geometry
from vidrender.errors import UserError
from vidrender.pipelines.motion.composing import compose
from vidrender.pipelines.motion.stack import BackgroundLayer, CharacterLayer, LayerStack, read_export

FRAMES, HEIGHT, WIDTH = 6, 24, 32
PAN_PX = 2  # frame t sees the world plate PAN_PX * t pixels further right
PLATE_WIDTH = WIDTH + PAN_PX * (FRAMES - 1)


def _pan_cameras(frames: int = FRAMES, step: int = PAN_PX) -> torch.Tensor:
    """(T, 3, 3) normalized cameras of a pan by `step` whole pixels a frame over a plate PLATE_WIDTH wide."""
    pixel = torch.eye(3, dtype=torch.float64).repeat(frames, 1, 1)
    pixel[:, 0, 2] = step * torch.arange(frames, dtype=torch.float64)
    return geometry.camera_to_normalized(pixel, (WIDTH, HEIGHT), (PLATE_WIDTH, HEIGHT)).float()


def _moving_stack(walk_px: float = 0.0) -> LayerStack:
    """A random world plate, a pan, and a square character (inside the reference frame's view) that walks
    `walk_px` pixels right a frame in the world (0: it stands still while the camera pans)."""
    generator = torch.Generator().manual_seed(0)
    plate = torch.rand(3, HEIGHT, PLATE_WIDTH, generator=generator)
    rgba = torch.zeros(4, HEIGHT, PLATE_WIDTH)
    rgba[:3] = torch.rand(3, HEIGHT, PLATE_WIDTH, generator=generator)
    rgba[3, 8:16, 10:18] = 1
    pixel = torch.eye(2, 3, dtype=torch.float64).repeat(FRAMES, 1, 1)
    pixel[:, 0, 2] = walk_px * torch.arange(FRAMES, dtype=torch.float64)
    affines = geometry.pixel_to_normalized(pixel, PLATE_WIDTH, HEIGHT).float()
    return LayerStack(BackgroundLayer(plate, _pan_cameras()), [CharacterLayer(rgba, affines, 0)], 12.0,
                      (WIDTH, HEIGHT), "pan")


class TestMovingStack:
    def test_render_sees_the_world_through_the_camera(self):
        stack = _moving_stack()
        frames = stack.render()
        assert stack.size == (HEIGHT, PLATE_WIDTH) and stack.frame_size == (HEIGHT, WIDTH)
        assert frames.shape == (FRAMES, 3, HEIGHT, WIDTH)
        world = stack.characters[0].rgba
        composite = world[:3] * world[3:] + stack.background.plate * (1 - world[3:])
        for t in range(FRAMES):
            left = PAN_PX * t
            assert torch.allclose(frames[t], composite[:, :, left : left + WIDTH], atol=1e-5)

    def test_a_character_standing_still_moves_against_the_pan_in_the_frames(self):
        stack = _moving_stack()
        pixel = geometry.normalized_to_pixel(stack.frame_affines(0).double(), WIDTH, HEIGHT)
        expected = -PAN_PX * torch.arange(FRAMES, dtype=torch.float64)
        assert torch.allclose(pixel[:, 0, 2], expected, atol=1e-4)
        assert torch.allclose(pixel[:, :, :2], torch.eye(2, dtype=torch.float64).expand(FRAMES, 2, 2), atol=1e-6)
        # the matte each frame shows is the square, PAN_PX * t further left
        mattes = stack.character_frames(0)[:, 3]
        for t in range(FRAMES):
            assert torch.equal(mattes[t] > 0.5, torch.nn.functional.pad(
                torch.ones(8, 8, dtype=torch.bool), (10 - PAN_PX * t, WIDTH - 18 + PAN_PX * t, 8, HEIGHT - 16)))

    def test_relative_cameras_and_reference_layer(self):
        stack = _moving_stack(walk_px=1.0)
        relative = stack.relative_cameras()
        assert torch.allclose(relative[0], torch.eye(3, dtype=torch.float64), atol=1e-6)
        assert torch.allclose(relative[3, 0, 2], torch.tensor(2 * 3 * PAN_PX / WIDTH, dtype=torch.float64))
        layer = stack.reference_layer(0)
        assert layer.rgba.shape == (4, HEIGHT, WIDTH)
        assert torch.equal(layer.rgba[3] > 0.5, stack.characters[0].rgba[3, :, :WIDTH] > 0.5)
        walked = geometry.normalized_to_pixel(layer.affines.double(), WIDTH, HEIGHT)[:, 0, 2]
        assert torch.allclose(walked, torch.arange(FRAMES, dtype=torch.float64), atol=1e-4)

    def test_checkpoint_round_trip_keeps_frame_and_world_sizes(self):
        stack = _moving_stack()
        back = LayerStack.from_dict(stack.to_dict(), "test", version=2)
        assert back.native_size == (WIDTH, HEIGHT) and back.size == (HEIGHT, PLATE_WIDTH)
        assert torch.equal(back.render(), stack.render())

    def test_a_static_camera_plate_must_be_the_frame(self):
        entry = _moving_stack().to_dict()
        entry["background"]["camera"] = torch.eye(3).repeat(FRAMES, 1, 1)
        with pytest.raises(UserError, match="the plate is 42x24 but native_size is 32x24"):
            LayerStack.from_dict(entry, "test", version=2)

    def test_export_round_trip_within_8_bits(self, tmp_path):
        stack = _moving_stack(walk_px=1.0)
        stack.export(tmp_path / "layers")
        folder = tmp_path / "layers"
        assert sorted(path.name for path in folder.iterdir()) == [
            "affine.json", "affine_world.json", "alpha", "background", "camera.json", "character", "stack.json",
            "world_plate.png"]
        manifest = json.loads((folder / "stack.json").read_text())
        assert manifest["version"] == 3 and (manifest["width"], manifest["height"]) == (WIDTH, HEIGHT)
        assert manifest["background"]["plate_width"] == PLATE_WIDTH
        assert len(list((folder / "background").iterdir())) == FRAMES == len(list((folder / "character").iterdir()))
        frame_motion = json.loads((folder / "affine.json").read_text())
        assert (frame_motion["width"], frame_motion["height"]) == (WIDTH, HEIGHT)
        # a standing-still-plus-one-pixel walk against a two-pixel pan: one pixel left a frame in the frames
        assert [round(matrix[0][2], 4) for matrix in frame_motion["frames"]] == [-t for t in range(FRAMES)]
        back = read_export(folder)
        assert back.frame_size == stack.frame_size and back.size == stack.size
        assert (back.render() - stack.render()).abs().max() < 3 / 255
        assert torch.allclose(back.characters[0].affines, stack.characters[0].affines, atol=1e-5)


class TestComposeWithCameras:
    def test_a_moving_stack_composed_onto_itself_is_its_render(self):
        stack = _moving_stack(walk_px=1.0)
        out = compose(stack, stack)
        assert out.frames.shape == (FRAMES, 3, HEIGHT, WIDTH)
        assert (out.frames - stack.render()).abs().max() < 1e-4

    def test_static_camera_shows_the_reference_view_without_the_pan(self):
        stack = _moving_stack()  # the character stands still in the world: nothing moves without the pan
        out = compose(stack, stack, camera="static").frames
        assert (out - out[0]).abs().max() < 1e-5
        assert (out[0] - stack.render()[0]).abs().max() < 1e-5

    def test_a_panning_character_onto_a_static_background_keeps_still(self):
        moving = _moving_stack()
        plate = torch.rand(3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(1))
        static = LayerStack(BackgroundLayer.static(plate, FRAMES), [moving.reference_layer(0)], 12.0, (WIDTH, HEIGHT))
        out = compose(moving, static).frames
        assert (out - out[0]).abs().max() < 1e-5  # no shake: the camera that filmed it is gone
        followed = compose(moving, static, camera="source").frames
        assert (followed[3] - followed[0]).abs().max() > 0.1  # with its camera, the pan comes back

    def test_the_background_camera_keeps_the_character_planted(self):
        moving = _moving_stack()
        plate = torch.rand(3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(1))
        static = LayerStack(BackgroundLayer.static(plate, FRAMES), [moving.reference_layer(0)], 12.0, (WIDTH, HEIGHT))
        out = compose(static, moving, motion="source").frames
        # the static clip's character stands still; B's camera pans: it slides left with B's world
        alpha = static.characters[0].rgba[3]
        columns = (alpha > 0.5).any(dim=0).nonzero()[:, 0]
        for t in range(FRAMES):
            shifted = columns - PAN_PX * t
            assert torch.allclose(out[t][:, 8:16, shifted], static.characters[0].rgba[:3, 8:16, columns], atol=1e-5)

    def test_unknown_camera_is_one_user_error(self):
        stack = _moving_stack()
        with pytest.raises(UserError, match="--camera: expected one of background, source, static"):
            compose(stack, stack, camera="tripod")


def test_compose_command_reads_moving_export_folders_and_takes_camera(tmp_path):
    """The command line: a moving-camera export folder as character and background, each camera."""
    import contextlib
    import io

    from vidrender.cli import main
    from vidrender.io.video import read_video

    stack = _moving_stack(walk_px=1.0)
    stack.export(tmp_path / "layers")
    for camera in ("background", "static"):
        output = tmp_path / camera  # a PNG folder: lossless
        with contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as done:
            main(["compose", "--character", str(tmp_path / "layers"), "--background", str(tmp_path / "layers"),
                  "-o", str(output), "--camera", camera])
        assert done.value.code == 0
        frames, _ = read_video(output)
        assert frames.shape == (FRAMES, 3, HEIGHT, WIDTH)
    panned, _ = read_video(tmp_path / "background")
    still, _ = read_video(tmp_path / "static")
    assert (panned - stack.render()).abs().max() < 3 / 255  # its own render, at 8 bits
    assert (still[-1] - panned[-1]).abs().mean() > 0.1
    stderr = io.StringIO()
    with pytest.raises(SystemExit) as exited, contextlib.redirect_stderr(stderr):
        main(["compose", "--character", str(tmp_path / "layers"), "--background", str(tmp_path / "layers"),
              "-o", str(tmp_path / "bad.mp4"), "--camera", "dolly"])
    assert exited.value.code == 2 and stderr.getvalue().count("\n") == 1 and "--camera" in stderr.getvalue()
    assert not (tmp_path / "bad.mp4").exists()
