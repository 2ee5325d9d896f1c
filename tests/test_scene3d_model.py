"""Tests of the scene3d model side: config checks, the ENR model and its temporal slices, the
swap-rendering step, inference helpers, and a short training run on a toy voxel scene."""

from pathlib import Path

import pytest
import torch

from vidrender.config import load_config, to_dict
from vidrender.errors import UserError
from vidrender.geometry3d import object_rotation, relative_rotation, rotate_scene
from vidrender.io.checkpoint import save_checkpoint
from vidrender.pipelines.scene3d.bench import random_batch
from vidrender.pipelines.scene3d.commands import PIPELINE, load_model
from vidrender.pipelines.scene3d.config import ModelConfig, Scene3dConfig, TemporalConfig
from vidrender.pipelines.scene3d.infer import (
    infer_scenes,
    orbit_frames,
    orbit_timelapse_frames,
    render,
    time_range,
    timelapse_frames,
)
from vidrender.pipelines.scene3d.model import (
    PointwiseConv2d,
    PointwiseConv3d,
    SceneRenderer,
    count_parameters,
    fold_depth,
    lift_to_volume,
    select_time,
    spherical_mask,
    time_slice_position,
)
from vidrender.pipelines.scene3d.step import preview, swap_render, training_step

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "scene3d"
SIZE = 16


def tiny_model_config(**changes) -> ModelConfig:
    values = dict(
        image_size=SIZE,
        channels_2d=[8, 8, 16, 16],
        strides_2d=[1, 2, 1, 1],
        channels_3d=[8, 16, 16, 8],
        strides_3d=[1, 2, 1, -2],
        inverse_projection_channels=[32, 64],
        projection_channels=[32, 16],
        scene_channels=4,
    )
    values.update(changes)
    return ModelConfig(**values)


def tiny_config(timesteps: int = 1, max_gap: int = 0, **model_changes) -> Scene3dConfig:
    return Scene3dConfig(
        model=tiny_model_config(**model_changes),
        temporal=TemporalConfig(timesteps=timesteps, max_gap=max_gap),
    )


class TestConfig:
    def test_yaml_presets_load(self):
        paper = load_config(Scene3dConfig, CONFIGS / "paper.yaml")
        assert paper.model.scene_shape() == (64, 16, 16, 16)
        assert load_config(Scene3dConfig, CONFIGS / "paper.yaml", ["model.image_size=128"]).model.scene_shape() == (
            64,
            32,
            32,
            32,
        )
        cpu = load_config(Scene3dConfig, CONFIGS / "cpu.yaml")
        assert cpu.model.image_size <= 64
        temporal = load_config(Scene3dConfig, CONFIGS / "temporal.yaml")
        assert temporal.temporal.timesteps >= 2 * temporal.temporal.max_gap + 1 > 1
        assert temporal.model.scene_channels == 3

    def test_paper_model_size(self):
        model = SceneRenderer(ModelConfig(image_size=128))
        assert model.scene_shape == (64, 32, 32, 32)
        assert abs(count_parameters(model) - 11.5e6) < 0.1e6

    @pytest.mark.parametrize(
        "changes, message",
        [
            (dict(strides_2d=[1, 2, 1]), "equal length"),
            (dict(strides_3d=[1, 3, 1, -2]), "only hold 1, 2 and -2"),
            (dict(image_size=17), "odd size"),
            (dict(inverse_projection_channels=[32, 60]), "divisible by the depth"),
            (dict(channels_2d=[8, 0, 16, 16]), "positive"),
        ],
    )
    def test_bad_model_settings(self, changes, message):
        with pytest.raises(UserError, match=message):
            tiny_model_config(**changes)

    def test_temporal_range_is_validated(self):
        TemporalConfig(timesteps=21, max_gap=10)
        with pytest.raises(UserError, match="at least 2 \\* max_gap \\+ 1 = 21"):
            TemporalConfig(timesteps=20, max_gap=10)
        with pytest.raises(UserError, match="smoothness"):
            TemporalConfig(timesteps=1, smoothness_weight=0.1)

    def test_yaml_error_names_the_key(self, tmp_path):
        bad = tmp_path / "bad.yaml"
        bad.write_text("temporal:\n  timesteps: 5\n  max_gap: 3\n")
        with pytest.raises(UserError, match="temporal.timesteps"):
            load_config(Scene3dConfig, bad)


class TestModel:
    def test_shapes_and_ranges(self):
        model = SceneRenderer(tiny_model_config())
        images = torch.rand(3, 3, SIZE, SIZE)
        scenes = model.inverse_render(images)
        assert scenes.shape == (3, 1, 4, 8, 8, 8)
        assert model.scene_shape == (4, 8, 8, 8)
        rendered = model.render(scenes[:, 0])
        assert rendered.shape == (3, 3, SIZE, SIZE)
        assert rendered.min() > 0 and rendered.max() < 1

    def test_projection_reshapes_put_channel_c_depth_d_at_c_times_depth_plus_d(self):
        channels, depth = 3, 4  # unequal, and H != W, so a swapped or misordered pattern fails
        features = torch.arange(2 * channels * depth * 5 * 6, dtype=torch.float32).view(2, channels * depth, 5, 6)
        volume = lift_to_volume(features, depth)
        assert volume.shape == (2, channels, depth, 5, 6)
        for c in range(channels):
            for d in range(depth):
                assert torch.equal(volume[:, c, d], features[:, c * depth + d])
        assert torch.equal(fold_depth(volume), features)
        assert torch.equal(lift_to_volume(fold_depth(volume), depth), volume)

    def test_model_projections_use_the_channel_depth_layout(self):
        torch.manual_seed(0)
        model = SceneRenderer(tiny_model_config())
        channels, depth = tiny_model_config().lifted_shape()
        images = torch.rand(2, 3, SIZE, SIZE)
        with torch.no_grad():
            features = model.inverse_projection(model.inverse_2d(images))
            lifted = features.view(2, channels, depth, *features.shape[2:])
            assert torch.equal(model.features_3d(images), model.inverse_3d(lifted))
            scenes = torch.rand(2, *model.scene_shape)
            volume = model.forward_3d(scenes)
            folded = volume.reshape(2, -1, *volume.shape[3:])
            expected = torch.sigmoid(model.to_rgb(model.forward_2d(model.projection(folded))))
            assert torch.equal(model.render(scenes), expected)

    @pytest.mark.parametrize("dims", [2, 3])
    @pytest.mark.parametrize("bias", [True, False])
    def test_pointwise_convolution_is_a_1x1_convolution(self, dims, bias):
        torch.manual_seed(0)
        pointwise = (PointwiseConv2d if dims == 2 else PointwiseConv3d)(5, 7, bias=bias)
        conv = (torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d)(5, 7, 1, bias=bias)
        conv.load_state_dict(pointwise.state_dict())  # same parameter names and shapes
        x = torch.randn(2, 5, *(3, 4, 6)[-dims:])
        torch.testing.assert_close(pointwise(x), conv(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast, reference = pointwise(x), conv(x)
        assert fast.dtype == torch.bfloat16
        torch.testing.assert_close(fast.float(), reference.float(), atol=0.05, rtol=0.02)

    def test_spherical_mask(self):
        mask = spherical_mask(8)
        assert mask.shape == (8, 8, 8)
        # radius 3.5 around (3.5, 3.5, 3.5): a corner is out, the centre in, (0, 4, 4) just outside
        assert mask[0, 0, 0] == 0 and mask[3, 4, 3] == 1 and mask[1, 4, 4] == 1 and mask[0, 4, 4] == 0
        assert spherical_mask(5)[0, 2, 2] == 1  # odd size: the face centre lies exactly on the sphere
        torch.testing.assert_close(mask, mask.flip(0))
        model = SceneRenderer(tiny_model_config())
        scenes = model.inverse_render(torch.rand(2, 3, SIZE, SIZE))
        assert scenes[..., mask == 0].abs().max() == 0
        assert scenes[..., mask == 1].abs().max() > 0

    def test_time_slice_position(self):
        lower, fraction = time_slice_position(torch.tensor([-2, 0, 2, 0.5, -1.25]), 5)
        assert lower.tolist() == [0, 2, 3, 2, 0]
        torch.testing.assert_close(fraction, torch.tensor([0.0, 0.0, 1.0, 0.5, 0.75]))
        with pytest.raises(ValueError, match="time offsets"):
            time_slice_position(torch.tensor([3]), 5)
        with pytest.raises(ValueError, match="time offsets"):
            time_slice_position(torch.tensor([1]), 1)

    def test_select_time_integer_and_half_steps(self):
        scenes = torch.randn(3, 5, 2, 4, 4, 4)
        picked = select_time(scenes, torch.tensor([-2, 0, 2]))
        for item, slice_index in enumerate([0, 2, 4]):
            assert torch.equal(picked[item], scenes[item, slice_index])
        halfway = select_time(scenes, torch.tensor([0.5, -1.5, 1.5]))
        for item, first in enumerate([2, 0, 3]):
            torch.testing.assert_close(halfway[item], (scenes[item, first] + scenes[item, first + 1]) / 2)

    def test_even_timestep_count_centres_on_t_half(self):
        # T = 4: offsets -2..1, offset 0 is slice 2
        scenes = torch.randn(1, 4, 1, 2, 2, 2)
        assert torch.equal(select_time(scenes, torch.tensor([0])), scenes[:, 2])
        assert torch.equal(select_time(scenes, torch.tensor([-2])), scenes[:, 0])

    def test_single_slice_head_equals_slicing_all(self):
        model = SceneRenderer(tiny_model_config(), timesteps=5)
        images = torch.rand(4, 3, SIZE, SIZE)
        offsets = torch.tensor([-2.0, 0.0, 1.5, 2.0])
        everything = model.inverse_render(images)
        assert everything.shape == (4, 5, 4, 8, 8, 8)
        torch.testing.assert_close(
            model.inverse_render(images, offsets), select_time(everything, offsets), atol=1e-5, rtol=1e-5
        )

    def test_rotate_uses_scene_rotation(self):
        model = SceneRenderer(tiny_model_config())
        scenes = torch.rand(2, 4, 8, 8, 8)
        rotation = object_rotation(torch.tensor([30.0, 90.0]), torch.tensor([10.0, 0.0]))
        torch.testing.assert_close(model.rotate(scenes, rotation), rotate_scene(scenes, rotation))


class TestStep:
    def test_swap_render_wiring(self):
        torch.manual_seed(0)
        model = SceneRenderer(tiny_model_config())
        batch = random_batch(3, SIZE)
        rendered, targets, _ = swap_render(model, batch)
        assert rendered.shape == targets.shape == (6, 3, SIZE, SIZE)
        assert torch.equal(targets, torch.cat([batch["image_b"], batch["image_a"]]))
        # item 1: a's scene turned into b's view; item 3 + 1: b's scene turned into a's view
        with torch.no_grad():
            for item, (src, dst) in ((1, ("a", "b")), (4, ("b", "a"))):
                pair = item % 3
                scene = model.inverse_render(batch[f"image_{src}"][pair : pair + 1])[:, 0]
                rotation = relative_rotation(
                    batch[f"azimuth_{src}"][pair],
                    batch[f"elevation_{src}"][pair],
                    batch[f"azimuth_{dst}"][pair],
                    batch[f"elevation_{dst}"][pair],
                )
                expected = model.render(model.rotate(scene, rotation))[0]
                torch.testing.assert_close(rendered[item].detach(), expected, atol=1e-5, rtol=1e-4)

    def test_temporal_step_uses_the_gap_slice(self):
        torch.manual_seed(0)
        config = tiny_config(timesteps=5, max_gap=1)
        model = SceneRenderer(config.model, timesteps=5)
        batch = random_batch(2, SIZE)
        batch["time_b"] = batch["time_a"] + torch.tensor([1, 1])  # a uses slice 3, b slice 1
        loss, logs = training_step(model, batch, config)
        loss.backward()
        slice_grad = model.scene_head.weight.grad.view(5, 4, -1).abs().sum(dim=(1, 2))
        assert slice_grad[1] > 0 and slice_grad[3] > 0
        assert slice_grad[0] == slice_grad[2] == slice_grad[4] == 0
        assert {"loss", "pixel", "ssim", "psnr"} <= logs.keys()

    def test_smoothness_term(self):
        config = tiny_config(timesteps=3, max_gap=1)
        config.temporal.smoothness_weight = 0.5
        model = SceneRenderer(config.model, timesteps=3)
        loss, logs = training_step(model, random_batch(2, SIZE, max_gap=1), config)
        assert logs["smoothness"] > 0
        assert logs["loss"] == pytest.approx(
            logs["pixel"] + 0.05 * (1 - logs["ssim"]) + 0.5 * logs["smoothness"], rel=1e-5
        )

    def test_step_goes_through_forward_of_wrappers(self):
        # DDP and accelerate's mixed precision hook forward(): the step must call the model, not its parts
        class AutocastWrapper(torch.nn.Module):
            def __init__(self, module):
                super().__init__()
                self.module = module

            def forward(self, *args):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return self.module(*args)

        model = SceneRenderer(tiny_model_config())
        calls = []
        model.register_forward_hook(lambda module, inputs, output: calls.append(output[0].dtype))
        loss, logs = training_step(AutocastWrapper(model), random_batch(2, SIZE), tiny_config())
        loss.backward()
        assert calls == [torch.bfloat16]
        assert all(parameter.grad is not None for parameter in model.parameters())
        with pytest.raises(TypeError, match="SceneRenderer"):
            training_step(torch.nn.Identity(), random_batch(2, SIZE), tiny_config())

    def test_bad_batches(self):
        model = SceneRenderer(tiny_model_config())
        batch = random_batch(2, SIZE)
        with pytest.raises(ValueError, match="lacks"):
            swap_render(model, {key: value for key, value in batch.items() if key != "azimuth_b"})
        batch["image_b"] = torch.rand(2, 3, 8, 8)
        with pytest.raises(ValueError, match="image_b"):
            swap_render(model, batch)

    def test_preview_image(self):
        model = SceneRenderer(tiny_model_config())
        picture = preview(model, random_batch(5, SIZE), max_pairs=2)
        assert picture.shape[0] == 3 and picture.min() >= 0 and picture.max() <= 1
        assert picture.shape[1] == 2 * (SIZE + 2) + 2 and picture.shape[2] == 4 * (SIZE + 2) + 2


def toy_volume(seed: int = 0, size: int = SIZE) -> torch.Tensor:
    """(4, D, H, W) coloured blobs: RGB + density, asymmetric so every view differs."""
    generator = torch.Generator().manual_seed(seed)
    axis = (2 * torch.arange(size) + 1) / size - 1
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)
    volume = torch.zeros(4, size, size, size)
    for _ in range(4):
        centre = (torch.rand(3, generator=generator) - 0.5) * 0.9
        colour = torch.rand(3, generator=generator)
        blob = torch.exp(-((points - centre) ** 2).sum(-1) / 0.04)
        volume[:3] += colour[:, None, None, None] * blob
        volume[3] += 6 * blob
    return volume


def toy_views(volume: torch.Tensor, azimuth: torch.Tensor, elevation: torch.Tensor) -> torch.Tensor:
    """Emission-absorption renders (B, 3, H, W) of the volume seen from camera angles (degrees)."""
    batch = azimuth.shape[0]
    turned = rotate_scene(volume.expand(batch, *volume.shape), object_rotation(azimuth, elevation))
    colour, density = turned[:, :3].clamp(0, 1), turned[:, 3:]
    alpha = 1 - torch.exp(-density * (2 / volume.shape[1]) * 4)
    # D grows towards the camera: composite from the last slice backwards over a white background
    alpha, colour = alpha.flip(2), colour.flip(2)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha[:, :, :-1]], 2), 2)
    weights = alpha * transmittance
    image = (weights * colour).sum(2) + (1 - weights.sum(2))
    return image.clamp(0, 1)


def test_training_on_toy_scene_lowers_loss():
    torch.manual_seed(0)
    volume = toy_volume()
    config = tiny_config()
    config.train.lr = 2e-3
    model = SceneRenderer(config.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(30):
        angles = torch.rand(4, 8, generator=generator) * torch.tensor([360.0, 180, 360, 180])[:, None]
        angles[1::2] -= 90
        batch = {
            "image_a": toy_views(volume, angles[0], angles[1]),
            "image_b": toy_views(volume, angles[2], angles[3]),
            "azimuth_a": angles[0],
            "elevation_a": angles[1],
            "azimuth_b": angles[2],
            "elevation_b": angles[3],
        }
        loss, logs = training_step(model, batch, config)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(logs["loss"])
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.65 * first


class TestInference:
    def model(self, timesteps: int = 1) -> SceneRenderer:
        torch.manual_seed(0)
        return SceneRenderer(tiny_model_config(), timesteps=timesteps)

    def test_render_and_orbit(self):
        model = self.model()
        image = torch.rand(3, SIZE, SIZE)
        view = render(model, image, azimuth=40.0, elevation=10.0)
        assert view.shape == (3, SIZE, SIZE) and 0 <= view.min() and view.max() <= 1
        frames = orbit_frames(model, image, frames=4, source_azimuth=15.0, source_elevation=5.0)
        assert frames.shape == (4, 3, SIZE, SIZE)
        same_view = render(model, image, 15.0 + 90, 5.0, source_azimuth=15.0, source_elevation=5.0)
        torch.testing.assert_close(frames[1], same_view, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(frames[0], frames[2], atol=1e-3)

    def test_wrong_image_and_offsets_are_user_errors(self):
        model = self.model()
        with pytest.raises(UserError, match="16x16"):
            infer_scenes(model, torch.rand(3, 20, 20))
        with pytest.raises(UserError, match="static"):
            render(model, torch.rand(3, SIZE, SIZE), dt=1)
        with pytest.raises(UserError, match="timelapse"):
            timelapse_frames(model, torch.rand(3, SIZE, SIZE))

    def test_timelapse_and_fractional_time(self):
        model = self.model(timesteps=5)
        assert time_range(model) == (-2, 2)
        image = torch.rand(3, SIZE, SIZE)
        frames = timelapse_frames(model, image)
        assert frames.shape == (5, 3, SIZE, SIZE)
        torch.testing.assert_close(frames[2], render(model, image, dt=0), atol=1e-5, rtol=1e-4)
        fine = timelapse_frames(model, image, frames=9)
        torch.testing.assert_close(fine[::2], frames, atol=1e-5, rtol=1e-4)
        with pytest.raises(UserError, match="-2, 2"):
            render(model, image, dt=2.5)

    def test_orbit_while_time_runs(self):
        model = self.model(timesteps=5)
        image = torch.rand(3, SIZE, SIZE)
        frames = orbit_timelapse_frames(model, image, frames=4, source_azimuth=10.0)
        assert frames.shape == (4, 3, SIZE, SIZE)
        # frame 3 of 4: a three-quarter turn, at the end of the time range (+2)
        torch.testing.assert_close(frames[3], render(model, image, 10.0 + 270, 0.0, 2.0, 10.0), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(frames[0], render(model, image, 10.0, 0.0, -2.0, 10.0), atol=1e-5, rtol=1e-4)
        with pytest.raises(UserError, match="static"):
            orbit_timelapse_frames(self.model(), image)


class TestCheckpoint:
    def test_old_checkpoint_with_retired_channels_last_key_loads(self, tmp_path):
        # checkpoints written before model.channels_last was removed store it in their config
        torch.manual_seed(0)
        config = tiny_config(timesteps=3, max_gap=1)
        saved = SceneRenderer.from_config(config)
        stored = to_dict(config)
        stored["model"]["channels_last"] = False
        path = save_checkpoint(tmp_path / "old.pt", PIPELINE, stored, saved.state_dict(), {})
        model, loaded = load_model(path)
        assert loaded == config
        for name, tensor in saved.state_dict().items():
            torch.testing.assert_close(model.state_dict()[name], tensor, rtol=0, atol=0)

    def test_unknown_model_keys_are_still_refused(self, tmp_path):
        config = tiny_config()
        stored = to_dict(config)
        stored["model"]["channel_last"] = False
        weights = SceneRenderer.from_config(config).state_dict()
        path = save_checkpoint(tmp_path / "typo.pt", PIPELINE, stored, weights, {})
        with pytest.raises(UserError, match="channel_last"):
            load_model(path)
