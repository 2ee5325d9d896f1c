"""`vidrender scene latent`: the colour map of scene tensors, the depth-slice grid, and the command's outputs."""

import pytest
import torch

from vidrender.cli import main
from vidrender.config import to_dict
from vidrender.errors import UserError
from vidrender.io.checkpoint import save_checkpoint
from vidrender.io.images import read_image, write_image
from vidrender.io.video import probe
from vidrender.pipelines.scene3d.config import ModelConfig, Scene3dConfig, TemporalConfig
from vidrender.pipelines.scene3d.latent import GAP, ColourMap, depth_grid, latent_frames, write_latent
from vidrender.pipelines.scene3d.model import SceneRenderer

SIZE = 16


def tiny_config(timesteps: int = 1, scene_channels: int = 3) -> Scene3dConfig:
    model = ModelConfig(
        image_size=SIZE,
        channels_2d=[8, 16],
        strides_2d=[2, 1],
        channels_3d=[8, 8],
        strides_3d=[1, 1],
        inverse_projection_channels=[32, 64],
        projection_channels=[32, 16],
        scene_channels=scene_channels,
    )  # scene (C, 8, 8, 8)
    return Scene3dConfig(model=model, temporal=TemporalConfig(timesteps=timesteps, max_gap=timesteps // 2))


def tiny_model(timesteps: int = 1, scene_channels: int = 3) -> SceneRenderer:
    torch.manual_seed(0)
    return SceneRenderer.from_config(tiny_config(timesteps, scene_channels)).eval()


def cube_coordinates() -> torch.Tensor:
    """(3, 2, 2, 2): the d, h and w coordinate (-1 or +1) of each voxel of a 2x2x2 cube."""
    signs = torch.tensor([-1.0, 1.0])
    return torch.stack(torch.meshgrid(signs, signs, signs, indexing="ij"))


class TestColourMap:
    def test_three_channels_are_rgb_stretched_to_the_unit_range(self):
        ramp = torch.arange(8.0).view(2, 2, 2)
        scenes = torch.stack([ramp, 2 * ramp + 5, -ramp])[None]  # (T=1, C=3, 2, 2, 2)
        mask = torch.ones(2, 2, 2)
        colour_map = ColourMap.fit(scenes, mask, clip=0)
        pictures = colour_map(scenes, mask)
        assert pictures.shape == (1, 2, 3, 2, 2)  # (T, D, RGB, H, W)
        expected = ramp / 7
        torch.testing.assert_close(pictures[0, :, 0], expected)
        torch.testing.assert_close(pictures[0, :, 1], expected)
        torch.testing.assert_close(pictures[0, :, 2], 1 - expected)  # a falling channel shows dark-to-bright reversed

    def test_outside_the_mask_is_black_and_not_counted(self):
        scenes = torch.arange(8.0).view(1, 1, 2, 2, 2).expand(1, 3, 2, 2, 2).clone()
        scenes[0, :, 1, 1, 1] = 100.0  # an outlier outside the mask must not squash the colour range
        mask = torch.ones(2, 2, 2)
        mask[1, 1, 1] = 0
        pictures = ColourMap.fit(scenes, mask, clip=0)(scenes, mask)
        assert pictures[0, 1, :, 1, 1].abs().max() == 0
        torch.testing.assert_close(pictures[0, 1, 0, 1, 0], torch.tensor(6 / 6))
        torch.testing.assert_close(pictures[0, 0, 0, 0, 0], torch.tensor(0.0))

    def test_frames_share_one_scale(self):
        scenes = torch.stack([torch.zeros(3, 2, 2, 2), torch.ones(3, 2, 2, 2)])  # two time slices
        pictures = ColourMap.fit(scenes, torch.ones(2, 2, 2), clip=0)(scenes, torch.ones(2, 2, 2))
        assert pictures[0].max() == 0 and pictures[1].min() == 1

    def test_many_channels_show_the_principal_components(self):
        # 5 channels: voxels vary along channel 0 (most), 2 and 4 (least), each pattern uncorrelated
        coordinates = cube_coordinates()
        scenes = torch.zeros(1, 5, 2, 2, 2)
        scenes[0, 0], scenes[0, 2], scenes[0, 4] = 3 * coordinates[0], 2 * coordinates[1], coordinates[2]
        scenes[0, 1] = 7.0  # a constant channel adds nothing
        mask = torch.ones(2, 2, 2)
        pictures = ColourMap.fit(scenes, mask, clip=0)(scenes, mask)[0]  # (D, 3, H, W)
        expected = (coordinates + 1) / 2  # (3, D, H, W): red follows d, green h, blue w
        torch.testing.assert_close(pictures.movedim(1, 0), expected, atol=1e-5, rtol=0)
        # the signs are fixed: the same picture for the negated latent with a negated leading channel
        flipped = ColourMap.fit(-scenes, mask, clip=0)(-scenes, mask)[0]
        torch.testing.assert_close(flipped.movedim(1, 0), 1 - expected, atol=1e-5, rtol=0)

    @pytest.mark.parametrize("channels, rows", [(1, [0, 0, 0]), (2, [0, 1, 1])])
    def test_few_channels_are_repeated(self, channels, rows):
        scenes = torch.randn(1, channels, 2, 2, 2, generator=torch.Generator().manual_seed(0))
        mask = torch.ones(2, 2, 2)
        pictures = ColourMap.fit(scenes, mask, clip=0)(scenes, mask)[0]  # (D, 3, H, W)
        for colour, channel in enumerate(rows):
            values = scenes[0, channel]
            expected = (values - values.min()) / (values.max() - values.min())
            torch.testing.assert_close(pictures[:, colour], expected)

    def test_percentile_stretch_saturates_the_tails(self):
        values = torch.arange(101.0).view(1, 1, 101, 1, 1).expand(1, 3, 101, 1, 1)
        mask = torch.ones(101, 1, 1)
        pictures = ColourMap.fit(values, mask, clip=0.1)(values, mask)[0, :, 0, 0, 0]  # red per depth
        assert pictures[:11].max() == 0 and pictures[90:].min() == 1  # the lowest and highest 10 % saturate
        torch.testing.assert_close(pictures[50], torch.tensor(0.5))

    def test_empty_mask_is_refused(self):
        with pytest.raises(ValueError, match="no voxels"):
            ColourMap.fit(torch.randn(1, 3, 2, 2, 2), torch.zeros(2, 2, 2))


def test_depth_grid_layout():
    slices = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 3, 2, 2) / 4
    grid = depth_grid(slices, scale=3, columns=3)
    tile = 2 * 3
    assert grid.shape == (3, 2 * tile + GAP, 3 * tile + 2 * GAP)
    assert grid[0, 0, 0] == 0 and grid[0, tile - 1, tile - 1] == 0  # slice 0 fills the top-left tile
    assert grid[0, tile + GAP, 2 * (tile + GAP) - 1] == 1  # between tiles and the empty sixth cell: white
    assert grid[0, tile + GAP, tile + GAP] == 1.0  # slice 4: second row, second column
    assert grid[0, 0, tile + GAP] == 0.25  # slice 1
    with pytest.raises(ValueError):
        depth_grid(slices, scale=0)


class TestLatentFrames:
    def test_png_and_animation_of_a_temporal_model(self):
        model = tiny_model(timesteps=5)
        image = torch.rand(3, SIZE, SIZE)
        one = latent_frames(model, image, dt=1.0, tile=16, columns=4)
        tile = 8 * 2  # depth 8, H = W = 8, upscaled twice
        assert one.shape == (1, 3, 2 * tile + GAP, 4 * tile + 3 * GAP)
        frames = latent_frames(model, image, dt=None, tile=16, columns=4)
        assert frames.shape == (5, *one.shape[1:])
        torch.testing.assert_close(one[0], frames[3])  # offset +1 is slice T // 2 + 1
        assert 0 <= frames.min() and frames.max() <= 1
        half = latent_frames(model, image, dt=0.5, tile=16, columns=4)[0]
        # the colour map is affine where it does not saturate, so half an offset is the mean of the neighbours
        unsaturated = (frames[2] > 0) & (frames[2] < 1) & (frames[3] > 0) & (frames[3] < 1)
        assert unsaturated.sum() > 1000  # of 3 x 34 x 70 values, most are black (outside the sphere) or gaps
        torch.testing.assert_close(half[unsaturated], ((frames[2] + frames[3]) / 2)[unsaturated], atol=1e-5, rtol=0)

    def test_bad_requests_are_user_errors(self, tmp_path):
        static, image = tiny_model(), torch.rand(3, SIZE, SIZE)
        with pytest.raises(UserError, match="temporal"):
            latent_frames(static, image, dt=None)
        with pytest.raises(UserError, match="outside"):
            latent_frames(tiny_model(timesteps=3), image, dt=2)
        with pytest.raises(UserError, match="--tile"):
            latent_frames(static, image, tile=0)
        with pytest.raises(UserError, match="16x16"):
            latent_frames(static, torch.rand(3, 8, 8))
        with pytest.raises(UserError, match=".jpg"):
            write_latent(static, image, tmp_path / "latent.jpg")


def _run(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(["scene", "latent", *map(str, args)])
    return exited.value.code, capsys.readouterr().err


def test_command_writes_png_and_gif_and_refuses_bad_input(tmp_path, capsys):
    config = tiny_config(timesteps=3, scene_channels=4)
    torch.manual_seed(0)
    model = SceneRenderer.from_config(config)
    checkpoint = save_checkpoint(tmp_path / "m.pt", "scene3d", to_dict(config), model.state_dict(), {})
    image = tmp_path / "view.png"
    write_image(image, torch.rand(3, 40, 32))  # not square, not the model's size: cropped and resized
    assert _run(capsys, checkpoint, "--image", image, "-o", tmp_path / "l.png", "--tile", "8")[0] == 0
    assert read_image(tmp_path / "l.png").shape == (8, 8 * 8 + 7 * GAP, 3)  # one row of 8 slices; 4 channels: PCA
    assert _run(capsys, checkpoint, "--image", image, "-o", tmp_path / "l.gif", "--tile", "8")[0] == 0
    assert probe(tmp_path / "l.gif").frame_count == 3
    code, message = _run(capsys, checkpoint, "--image", tmp_path / "missing.png", "-o", tmp_path / "x.png")
    assert code == 2 and "missing.png" in message
    code, message = _run(capsys, checkpoint, "--image", image, "-o", tmp_path / "x.png", "--dt", "5")
    assert code == 2 and "outside" in message
    assert not (tmp_path / "x.png").exists()
