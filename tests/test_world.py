"""A moving-camera clip seen from its world (`pipelines/motion/world.py`), its scores (`evaluation.py`) and
its training (`task.py`): stabilising with known cameras, finding them, the static path kept for static
clips, a cut refused in one line, motion carried between frame and world coordinates, eval of a
moving-camera truth, and a short training that ends with a stack filmed by the clip's cameras."""

from __future__ import annotations

import re

import pytest
import torch

from vidrender import geometry, metrics
from vidrender.compositing import premultiply
from vidrender.errors import UserError
from vidrender.pipelines.motion.evaluation import evaluate
from vidrender.pipelines.motion.stack import BackgroundLayer, CharacterLayer, LayerStack, straight
from vidrender.pipelines.motion.world import (
    find_cameras,
    frame_affines,
    looks_static,
    nearest_affine,
    stabilise,
    world_affines,
)
from vidrender.synth import make_clip, write_truth

SIZE, FRAMES = 64, 16


@pytest.fixture(scope="module")
def pan():
    return make_clip(3, size=SIZE, frames=FRAMES, camera="pan")


def _relative(cameras: torch.Tensor, reference: int) -> torch.Tensor:
    """Cameras frame t -> plate as frame t -> the reference frame (what `find_cameras` returns)."""
    return torch.linalg.solve(cameras[reference].double(), cameras.double())


class TestStabilise:
    def test_the_world_plate_renders_every_frame_background(self, pan):
        world = stabilise(pan.clean, _relative(pan.camera, pan.reference))
        height, width = world.plate.shape[-2:]
        assert width >= 1.5 * SIZE and world.frames.shape == (FRAMES, 3, height, width)
        views = world.in_frames(world.plate[None].expand(FRAMES, -1, -1, -1))
        inside = torch.ones_like(pan.alpha).bool()
        inside[..., :2, :] = inside[..., -2:, :] = inside[..., :2] = inside[..., -2:] = False  # bilinear rims
        background = (pan.alpha < 0.01) & inside
        error = (views - pan.backgrounds()).pow(2).mean(1, keepdim=True)[background].mean()
        assert 10 * torch.log10(1 / error) > 30

    def test_seen_is_each_frame_footprint_and_unseen_pixels_hold_the_plate(self, pan):
        world = stabilise(pan.clean, _relative(pan.camera, pan.reference))
        areas = world.seen.float().sum(dim=(1, 2, 3))
        assert ((areas - SIZE * SIZE).abs() <= 4 * SIZE).all()
        assert torch.equal(torch.where(world.seen, 0, world.frames), torch.where(world.seen, 0, world.plate))

    def test_static_clip_stays_put(self):
        clip = make_clip(0, size=SIZE, frames=FRAMES)
        world = stabilise(clip.frames, torch.eye(3, dtype=torch.float64).repeat(FRAMES, 1, 1))
        assert world.plate.shape[-2:] == (SIZE, SIZE) and world.seen.all()
        assert (world.frames - clip.frames).abs().max() < 1e-5


class TestFindCameras:
    def test_pan_is_found_within_a_third_of_a_pixel(self, pan):
        cameras = find_cameras(pan.frames, pan.reference)
        assert cameras is not None
        assert metrics.camera_corner_error_px(cameras, pan.camera, (SIZE, SIZE), pan.reference) < 0.3

    @pytest.mark.parametrize("size", [32, SIZE])
    def test_static_clip_takes_the_static_path(self, size):
        # at 32 px the frames are too small for features: no camera can be estimated, and none moves
        assert find_cameras(make_clip(1, size=size, frames=8).frames, 0) is None

    @pytest.mark.parametrize("damage", ["cut", "blank frame"])
    def test_a_cut_or_a_blank_frame_is_one_line_naming_the_frames(self, pan, damage):
        frames = pan.frames.clone()
        if damage == "cut":
            frames[8:] = make_clip(5, size=SIZE, frames=FRAMES, camera="pan").frames[8:]
        else:
            frames[8] = 0.5
        assert not looks_static(frames)
        with pytest.raises(UserError, match=r"frames \d+-\d+") as error:
            find_cameras(frames, 0)
        low, high = (int(side) for side in re.search(r"frames (\d+)-(\d+)", str(error.value)).groups())
        assert "\n" not in str(error.value) and low <= 8 <= high


class TestFrameAndWorldMotion:
    def test_round_trip_and_truth(self, pan):
        world = pan.world_affines()[:, :2]
        frames = frame_affines(world, pan.camera, pan.reference)
        assert torch.allclose(frames, pan.affines, atol=1e-9)
        assert torch.allclose(world_affines(frames, pan.camera, pan.reference), world, atol=1e-9)

    def test_nearest_affine_is_exact_for_affines_and_close_for_a_mild_homography(self):
        affine = geometry.to_homogeneous(geometry.from_params(torch.tensor([0.1]), torch.tensor([-0.2]),
                                                              torch.tensor([0.3]), torch.tensor([1.1])).double())
        assert torch.allclose(nearest_affine(affine), affine[:, :2], atol=1e-12)
        tilted = affine.clone()
        tilted[0, 2, 0] = 0.01
        assert (nearest_affine(tilted) - affine[:, :2]).abs().max() < 0.03


def _truth_stack(clip) -> LayerStack:
    """The stack of a moving-camera truth, from its own layers: world plate, cameras, and the character as
    the reference frame shows it carried into the world."""
    height, width = clip.background.shape[-2:]
    frame_rgba = torch.cat([clip.clean[clip.reference], clip.alpha[clip.reference]])
    into_world = torch.linalg.inv(clip.camera[clip.reference])[None]
    rgba = straight(geometry.camera_view(premultiply(frame_rgba)[None], into_world, (height, width))[0])
    character = CharacterLayer(rgba, clip.world_affines()[:, :2].float(), clip.reference)
    return LayerStack(BackgroundLayer(clip.background, clip.camera.float()), [character], clip.fps,
                      (clip.width, clip.height))


class TestEvaluateMovingCamera:
    def test_true_layers_score_as_true_and_a_static_guess_does_not(self, pan, tmp_path):
        write_truth(pan, tmp_path / "truth")
        stack = _truth_stack(pan)
        scores = evaluate(stack, tmp_path / "truth")["model"]
        assert scores["camera_error_px"] < 1e-3
        assert scores["matte_iou"] > 0.95 and scores["background_psnr"] > 30 and scores["affine_error_px"] < 0.05
        frozen = LayerStack(BackgroundLayer(stack.background.plate, stack.background.camera[:1].expand(FRAMES, 3, 3)),
                            stack.characters, stack.fps, stack.native_size)
        wrong = evaluate(frozen, tmp_path / "truth")["model"]
        assert wrong["camera_error_px"] > 10 and wrong["background_psnr"] < scores["background_psnr"] - 5

    @pytest.mark.slow
    def test_classical_baseline_is_scored_in_the_frames(self, pan, tmp_path):
        write_truth(pan, tmp_path / "truth")
        classical = evaluate(_truth_stack(pan), tmp_path / "truth", baseline="classical")["classical"]
        assert classical["camera_error_px"] < 0.5 and classical["background_psnr"] > 25


@pytest.mark.slow
def test_training_on_a_panning_clip_learns_in_the_world(pan):
    from motion_training import train_plainly

    from vidrender.pipelines.motion.config import MotionConfig
    from vidrender.pipelines.motion.data import Clip
    from vidrender.pipelines.motion.task import MotionTask

    config = MotionConfig()
    config.train.steps, config.train.batch_size, config.data.size = 60, 8, 32
    config.data.warm_start_steps, config.infer.refine_steps, config.infer.track_steps = 30, 30, 10
    task = MotionTask(config, [Clip(pan.frames, fps=pan.fps, native_size=(SIZE, SIZE), name="pan")])
    world = task.worlds[0]
    assert world is not None and task.clips[0].frames.shape[-1] >= 1.5 * SIZE
    stack = task.decompose(train_plainly(task))[0]
    assert not stack.background.is_static and stack.frame_size == (SIZE, SIZE)
    assert metrics.camera_corner_error_px(stack.background.camera.double(), pan.camera, (SIZE, SIZE), 0) < 0.3
    assert stack.render().shape == (FRAMES, 3, SIZE, SIZE)
    # nothing of the character lies outside the reference frame's view
    assert (stack.characters[0].rgba[3][~world.seen[0, 0]] < 1e-6).all()


class TestRenderThroughCameras:
    """The layer fit of a moving camera renders the world layers straight into each frame's grid
    (`infer.render_over_plate` with cameras): the same frames as rendering in the world and then looking
    through the cameras, sampled once."""

    def _layers(self):
        generator = torch.Generator().manual_seed(0)
        plate = torch.rand(3, 20, 36, generator=generator, dtype=torch.float64)
        character = torch.rand(3, 20, 36, generator=generator, dtype=torch.float64)
        alpha = torch.zeros(1, 20, 36, dtype=torch.float64)
        alpha[:, 6:14, 10:18] = 1
        shift_x, shift_y, angle, scale = torch.tensor([[0.0, 0.1, -0.05], [0.0, 0.02, 0.05], [0.0, 0.1, -0.2],
                                                      [1.0, 1.05, 0.95]], dtype=torch.float64)
        affines = geometry.from_params(shift_x, shift_y, angle, scale)
        cameras = torch.eye(3, dtype=torch.float64).repeat(3, 1, 1)
        # frames 16 px wide panning over the 36 px plate by whole pixels (1 px = 1/18), so that looking at the
        # world render through a camera resamples nothing
        cameras[:, 0, 0], cameras[:, 0, 2] = 16 / 36, torch.tensor([-10.0, -6.0, 2.0]) / 18
        return plate, character, alpha, affines, cameras

    def test_matches_the_world_render_seen_by_the_cameras(self):
        from vidrender.pipelines.motion.infer import render_over_plate

        plate, character, alpha, affines, cameras = self._layers()
        views = geometry.camera_view(plate, cameras, (20, 16))
        direct, mattes = render_over_plate(character, alpha, affines, views, cameras)
        world, world_mattes = render_over_plate(character, alpha, affines, plate)
        assert direct.shape == (3, 3, 20, 16) and mattes.shape == (3, 1, 20, 16)
        assert torch.allclose(direct, geometry.camera_view(world, cameras, (20, 16)), atol=1e-5)
        assert torch.allclose(mattes, geometry.camera_view(world_mattes, cameras, (20, 16)), atol=1e-5)

    def test_gradcheck_in_the_affines(self):
        from vidrender.pipelines.motion.infer import render_over_plate

        plate, character, alpha, affines, cameras = self._layers()
        views = geometry.camera_view(plate, cameras, (20, 16))
        smooth = torch.nn.functional.avg_pool2d(alpha[None], 3, 1, 1)[0]  # bilinear sampling is smooth inside cells
        assert torch.autograd.gradcheck(lambda a: render_over_plate(character, smooth, a, views[1:2], cameras[1:2])[0],
                                        (affines[1:2].clone().requires_grad_(),), atol=1e-4)
