"""The one compositing function (`vidrender/compositing.py`) and the layer stack (`pipelines/motion/stack.py`):
smoke, shape, error, gradcheck and round-trip tests, and the loading of the forms written before the stack."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from vidrender.compositing import over, premultiply
from vidrender.errors import UserError
from vidrender.geometry import from_params
from vidrender.io.checkpoint import load_checkpoint, save_checkpoint
from vidrender.pipelines.motion.composing import compose
from vidrender.pipelines.motion.data import relative_affine
from vidrender.pipelines.motion.decomposition import load_stack
from vidrender.pipelines.motion.stack import BackgroundLayer, CharacterLayer, LayerStack, read_export, straight

FRAMES, HEIGHT, WIDTH = 5, 24, 32


def _stack(seed: int = 0, reference: int = 0) -> LayerStack:
    """A plate with a soft-edged square character moving and turning over 5 frames; its layer is at the
    pose of frame `reference` (whose affine is the identity)."""
    generator = torch.Generator().manual_seed(seed)
    plate = torch.rand(3, HEIGHT, WIDTH, generator=generator)
    ys, xs = torch.meshgrid(torch.arange(HEIGHT) + 0.5, torch.arange(WIDTH) + 0.5, indexing="ij")
    alpha = ((6 - (xs - 16).abs().maximum((ys - 12).abs())) / 2).clamp(0, 1)
    rgba = torch.cat([torch.rand(3, HEIGHT, WIDTH, generator=generator), alpha[None]])
    steps = torch.arange(FRAMES, dtype=torch.float64)
    affines = relative_affine(from_params(0.08 * steps, -0.05 * steps, 0.1 * steps, 1 + 0.02 * steps), reference,
                              slice(None)).float()
    return LayerStack(BackgroundLayer.static(plate, FRAMES), [CharacterLayer(rgba, affines, reference)], 12.0,
                      (WIDTH, HEIGHT), "square")


class TestOver:
    def test_smoke_opaque_and_clear(self):
        back = torch.rand(3, 4, 4)
        front = torch.rand(4, 4, 4)
        front[3] = 1
        assert torch.equal(over(front, back), front[:3])
        assert torch.equal(over(torch.zeros(4, 4, 4), back), back)

    def test_half_alpha_blends(self):
        colour, back = torch.rand(3, 2, 2), torch.rand(3, 2, 2)
        front = premultiply(torch.cat([colour, torch.full((1, 2, 2), 0.5)]))
        assert torch.allclose(over(front, back), 0.5 * colour + 0.5 * back)

    def test_shapes_broadcast_and_rgba_back(self):
        layers, plate = torch.rand(7, 4, 5, 6), torch.rand(3, 5, 6)
        assert over(layers, plate).shape == (7, 3, 5, 6)
        combined = over(layers[:1], layers[1:2])
        assert combined.shape == (1, 4, 5, 6)
        # alpha of a stack: a + (1 - a) b
        assert torch.allclose(combined[:, 3], layers[0, 3] + (1 - layers[0, 3]) * layers[1, 3])

    def test_numpy_channels_last_matches_torch(self):
        front, back = np.random.rand(5, 6, 4).astype(np.float32), np.random.rand(5, 6, 3).astype(np.float32)
        expected = over(torch.from_numpy(front).permute(2, 0, 1), torch.from_numpy(back).permute(2, 0, 1))
        got = over(front, back, channel_axis=-1)
        assert isinstance(got, np.ndarray) and np.allclose(got, expected.permute(1, 2, 0).numpy())

    def test_errors(self):
        with pytest.raises(ValueError, match="front needs 4 channels"):
            over(torch.rand(3, 2, 2), torch.rand(3, 2, 2))
        with pytest.raises(ValueError, match="back 3 or 4"):
            over(torch.rand(4, 2, 2), torch.rand(2, 2, 2))

    def test_gradcheck(self):
        front = torch.rand(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
        back = torch.rand(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(over, (front, back))


class TestLayerStack:
    def test_render_is_the_character_over_the_plate(self):
        stack = _stack()
        frames = stack.render()
        assert frames.shape == (FRAMES, 3, HEIGHT, WIDTH)
        character = stack.characters[0]
        # frame 0 is at the reference pose: where alpha is 1 the character's colour, where 0 the plate
        alpha = character.rgba[3]
        assert torch.allclose(frames[0][:, alpha == 1], character.rgba[:3][:, alpha == 1], atol=1e-5)
        assert torch.allclose(frames[0][:, alpha == 0], stack.background.plate[:, alpha == 0], atol=1e-6)
        # later frames moved: the character is somewhere else
        assert (frames[-1] - frames[0]).abs().mean() > 0.05

    def test_moved_at_another_size_keeps_relative_place(self):
        character = _stack().characters[0]
        small, large = character.moved(size=(HEIGHT, WIDTH)), character.moved(size=(2 * HEIGHT, 2 * WIDTH))
        assert large.shape == (FRAMES, 4, 2 * HEIGHT, 2 * WIDTH)
        shrunk = torch.nn.functional.avg_pool2d(large[:, 3:], 2)
        assert (shrunk - small[:, 3:]).abs().mean() < 0.02

    def test_static_camera_and_a_moving_one(self):
        stack = _stack()
        assert stack.background.is_static
        assert torch.equal(stack.background.views(FRAMES)[0], stack.background.plate)
        shift = torch.eye(3).repeat(FRAMES, 1, 1)
        shift[:, 0, 2] = 2 * 4 / WIDTH  # frame t sees the plate 4 px further right
        views = BackgroundLayer(stack.background.plate, shift).views()
        assert views.shape == (FRAMES, 3, HEIGHT, WIDTH)
        assert torch.allclose(views[:, :, :, :-4], stack.background.plate[:, :, 4:].expand(FRAMES, -1, -1, -1),
                              atol=1e-5)

    def test_dict_round_trip(self):
        stack = _stack()
        back = LayerStack.from_dict(stack.to_dict(), "test", version=2)
        assert torch.equal(back.render(), stack.render())
        assert (back.fps, back.native_size, back.name) == (12.0, (WIDTH, HEIGHT), "square")

    def test_damaged_dicts_are_one_user_error(self):
        entry = _stack().to_dict()
        entry["characters"][0]["affines"] = entry["characters"][0]["affines"][:2]
        with pytest.raises(UserError, match="disagree|camera has shape"):
            LayerStack.from_dict(entry, "test", version=2)
        with pytest.raises(UserError, match="not a dict"):
            LayerStack.from_dict([1], "test", version=2)

    @pytest.mark.parametrize("reference", [0, 2])
    def test_export_round_trip_within_8_bits(self, tmp_path, reference):
        stack = _stack(reference=reference)
        stack.export(tmp_path / "layers")
        names = sorted(path.name for path in (tmp_path / "layers").iterdir())
        assert names == ["affine.json", "alpha", "background.png", "camera.json", "character", "stack.json"]
        assert len(list((tmp_path / "layers" / "character").iterdir())) == FRAMES
        manifest = json.loads((tmp_path / "layers" / "stack.json").read_text())
        assert manifest["version"] == 2 and manifest["characters"][0]["layer"] == "character"
        back = read_export(tmp_path / "layers")
        assert torch.allclose(back.characters[0].affines, stack.characters[0].affines, atol=1e-5)
        assert (back.render() - stack.render()).abs().max() < 3 / 255
        assert back.fps == stack.fps and back.background.is_static


class TestOlderForms:
    def test_a_version_1_checkpoint_loads_as_the_same_stack(self, tmp_path):
        stack = _stack()
        character = stack.characters[0]
        entry = {"name": "square", "fps": 12.0, "native_size": [WIDTH, HEIGHT], "reference": 0,
                 "plate": stack.background.plate, "character": character.rgba, "affines": character.affines,
                 "mattes": (character.moved()[:, 3:] * 255).round().to(torch.uint8)}
        path = save_checkpoint(tmp_path / "old.pt", "motion", {}, {}, {"variant": "known", "clips": [entry]})
        payload = torch.load(path, weights_only=True)
        payload["format_version"] = 1
        torch.save(payload, path)
        assert load_checkpoint(path, "motion")["format_version"] == 1
        loaded = load_stack(path)
        assert torch.equal(loaded.render(), stack.render())
        assert loaded.background.is_static and loaded.native_size == (WIDTH, HEIGHT)

    def test_an_export_folder_without_manifest_loads(self, tmp_path):
        stack = _stack()
        stack.export(tmp_path / "new")
        shutil.copytree(tmp_path / "new", tmp_path / "old")
        (tmp_path / "old" / "stack.json").unlink()
        (tmp_path / "old" / "camera.json").unlink()
        new, old = read_export(tmp_path / "new"), read_export(tmp_path / "old")
        assert torch.equal(old.render(), new.render()) and old.fps == new.fps

    def test_compose_reads_an_export_folder_like_its_checkpoint(self, tmp_path):
        stack = _stack()
        path = save_checkpoint(tmp_path / "a.pt", "motion", {}, {}, {"clips": [stack.to_dict()]})
        stack.export(tmp_path / "layers")
        from_checkpoint = compose(load_stack(path), load_stack(path)).frames
        from_folder = compose(load_stack(tmp_path / "layers"), load_stack(path)).frames
        assert from_checkpoint.shape == (FRAMES, 3, HEIGHT, WIDTH)
        assert (from_folder - from_checkpoint).abs().max() < 3 / 255


def test_straight_undoes_premultiply_where_alpha_is_not_zero():
    rgba = torch.rand(2, 4, 3, 3)
    rgba[:, 3] = rgba[:, 3].clamp_min(0.1)
    assert torch.allclose(straight(premultiply(rgba)), rgba, atol=1e-6)
    clear = torch.zeros(1, 4, 2, 2)
    assert torch.equal(straight(clear), clear)
