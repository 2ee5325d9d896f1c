"""Tests of vidrender.geometry3d: rotation matrices from camera angles and the rotation of scene tensors,
including agreement with the scene3d data renderer's camera convention."""

import math

import pytest
import torch

from vidrender.geometry3d import (
    camera_rotation,
    object_rotation,
    relative_rotation,
    rotate_scene,
    rotation_about,
)


def grid_points(size: int) -> torch.Tensor:
    """(size, size, size, 3) normalized (d, h, w) voxel centres, align_corners=False."""
    axis = (2 * torch.arange(size, dtype=torch.float64) + 1) / size - 1
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)


def smooth_field(points: torch.Tensor) -> torch.Tensor:
    """A smooth, asymmetric scalar field of (..., 3) points (trilinear sampling of it is accurate)."""
    d, h, w = points.unbind(-1)
    return torch.sin(2 * d + 0.5) + torch.cos(1.5 * h) * w + 0.7 * d * h


def inside_sphere(size: int, fraction: float) -> torch.Tensor:
    return grid_points(size).norm(dim=-1) <= fraction


class TestRotationMatrices:
    def test_shapes_and_broadcasting(self):
        assert rotation_about(1, 30.0).shape == (3, 3)
        assert rotation_about(2, torch.zeros(4, 5)).shape == (4, 5, 3, 3)
        assert camera_rotation(torch.zeros(6), 10.0).shape == (6, 3, 3)
        assert relative_rotation(0.0, 0.0, torch.zeros(2, 3), torch.zeros(3)).shape == (2, 3, 3, 3)

    def test_matrices_are_rotations(self):
        generator = torch.Generator().manual_seed(0)
        azimuth = torch.rand(16, generator=generator, dtype=torch.float64) * 360
        elevation = torch.rand(16, generator=generator, dtype=torch.float64) * 180 - 90
        matrix = camera_rotation(azimuth, elevation)
        identity = torch.eye(3, dtype=torch.float64).expand(16, 3, 3)
        torch.testing.assert_close(matrix @ matrix.transpose(-1, -2), identity)
        torch.testing.assert_close(torch.linalg.det(matrix), torch.ones(16, dtype=torch.float64))

    def test_axis_and_direction(self):
        # about axis 1 (H), +90 degrees turns axis 2 (W) into axis 0 (D); about axis 2, D into H
        unit = torch.eye(3)
        torch.testing.assert_close(rotation_about(1, 90.0) @ unit[2], unit[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(rotation_about(2, 90.0) @ unit[0], unit[1], atol=1e-6, rtol=0)
        torch.testing.assert_close(rotation_about(0, 90.0) @ unit[1], unit[2], atol=1e-6, rtol=0)

    def test_camera_object_relative_definitions(self):
        azimuth, elevation = torch.tensor([35.0, -120.0]), torch.tensor([20.0, -60.0])
        camera = rotation_about(1, -azimuth) @ rotation_about(2, -elevation)
        torch.testing.assert_close(camera_rotation(azimuth, elevation), camera)
        torch.testing.assert_close(object_rotation(azimuth, elevation), camera.transpose(-1, -2))
        source, target = object_rotation(10.0, 5.0), object_rotation(azimuth, elevation)
        torch.testing.assert_close(relative_rotation(10.0, 5.0, azimuth, elevation), target @ source.T)

    def test_relative_rotations_compose_and_invert(self):
        views = [(10.0, 20.0), (100.0, -35.0), (250.0, 80.0)]
        r_to_s = relative_rotation(*views[0], *views[1])
        s_to_t = relative_rotation(*views[1], *views[2])
        torch.testing.assert_close(s_to_t @ r_to_s, relative_rotation(*views[0], *views[2]), atol=1e-6, rtol=0)
        torch.testing.assert_close(relative_rotation(*views[1], *views[0]), r_to_s.T)
        torch.testing.assert_close(relative_rotation(*views[2], *views[2]), torch.eye(3), atol=1e-6, rtol=0)

    def test_bad_axis_raises(self):
        with pytest.raises(ValueError, match="axis"):
            rotation_about(3, 10.0)

    def test_angle_gradient(self):
        angle = torch.tensor([17.0, -40.0], dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda a: rotation_about(1, a), (angle,))
        # d/d(angle) of the (0, 0) entry is -sin(angle) * pi / 180
        rotation_about(2, angle)[:, 0, 0].sum().backward()
        expected = -torch.sin(torch.deg2rad(angle.detach())) * math.pi / 180
        torch.testing.assert_close(angle.grad, expected)


class TestRotateScene:
    def test_shape_and_dtype(self):
        scene = torch.rand(2, 3, 6, 6, 6)
        out = rotate_scene(scene, camera_rotation(torch.tensor([10.0, 20.0]), torch.tensor([0.0, 5.0])))
        assert out.shape == scene.shape and out.dtype == scene.dtype
        assert rotate_scene(scene, torch.eye(3)).shape == scene.shape  # one matrix for the batch

    def test_identity_keeps_the_scene(self):
        scene = torch.rand(2, 4, 8, 8, 8)
        torch.testing.assert_close(rotate_scene(scene, torch.eye(3)), scene, atol=1e-6, rtol=0)

    def test_bad_shapes_raise(self):
        with pytest.raises(ValueError, match="B, C, D, H, W"):
            rotate_scene(torch.rand(2, 3, 8, 8), torch.eye(3))
        with pytest.raises(ValueError, match="rotations of shape"):
            rotate_scene(torch.rand(2, 3, 4, 4, 4), torch.eye(3).expand(3, 3, 3))

    @pytest.mark.parametrize("quarter_turns", [1, 2, 3, -1])
    def test_azimuth_quarter_turn_is_axis_permutation(self, quarter_turns):
        # azimuth turns about H: content moves from W towards D for +90 (torch.rot90 from dim W to D)
        scene = torch.rand(2, 3, 6, 6, 6)
        rotation = relative_rotation(0.0, 0.0, 90.0 * quarter_turns, 0.0)
        expected = torch.rot90(scene, quarter_turns, dims=(4, 2))
        torch.testing.assert_close(rotate_scene(scene, rotation), expected, atol=1e-5, rtol=0)

    @pytest.mark.parametrize("quarter_turns", [1, -1])
    def test_elevation_quarter_turn_is_axis_permutation(self, quarter_turns):
        # elevation turns about W: content moves from D towards H for +90
        scene = torch.rand(1, 2, 4, 4, 4)
        rotation = relative_rotation(0.0, 0.0, 0.0, 90.0 * quarter_turns)
        expected = torch.rot90(scene, quarter_turns, dims=(2, 3))
        torch.testing.assert_close(rotate_scene(scene, rotation), expected, atol=1e-5, rtol=0)

    def test_matches_analytic_rotation_of_a_field(self):
        # out(p) = in(R^T p) for an arbitrary rotation, checked against the field evaluated exactly
        size = 32
        points = grid_points(size)
        rotation = relative_rotation(20.0, 10.0, 75.0, -30.0).double()
        scene = smooth_field(points)[None, None]
        rotated = rotate_scene(scene, rotation)[0, 0]
        expected = smooth_field(points @ rotation)  # row vector p @ R = (R^T p)^T
        inside = inside_sphere(size, 0.85)
        assert (rotated - expected)[inside].abs().max() < 0.02
        # the transposed rotation (the wrong direction) is far off: the test can tell them apart
        assert (rotate_scene(scene, rotation.T)[0, 0] - expected)[inside].abs().max() > 0.3

    def test_rotation_then_inverse_is_identity_inside_mask(self):
        size = 32
        scene = smooth_field(grid_points(size)).float()[None, None].repeat(2, 1, 1, 1, 1)
        rotation = camera_rotation(torch.tensor([33.0, 150.0]), torch.tensor([-20.0, 70.0]))
        back = rotate_scene(rotate_scene(scene, rotation), rotation.transpose(1, 2))
        inside = inside_sphere(size, 0.85)
        assert (back - scene)[:, 0][:, inside].abs().max() < 0.03

    def test_composition(self):
        size = 32
        scene = smooth_field(grid_points(size)).float()[None, None]
        first, second = relative_rotation(0.0, 0.0, 40.0, 15.0), relative_rotation(40.0, 15.0, 110.0, -25.0)
        twice = rotate_scene(rotate_scene(scene, first), second)
        once = rotate_scene(scene, second @ first)
        inside = inside_sphere(size, 0.8)
        assert (twice - once)[0, 0][inside].abs().max() < 0.03

    def test_full_precision_under_bf16_autocast(self):
        scene = torch.rand(2, 3, 8, 8, 8)
        rotation = camera_rotation(torch.tensor([10.0, 200.0]), torch.tensor([20.0, -50.0]))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rotated = rotate_scene(scene, rotation)
        assert rotated.dtype == torch.float32
        torch.testing.assert_close(rotated, rotate_scene(scene, rotation))

    def test_gradients(self):
        generator = torch.Generator().manual_seed(1)
        scene = torch.rand(1, 2, 4, 4, 4, dtype=torch.float64, generator=generator, requires_grad=True)
        angle = torch.tensor([23.0], dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(
            lambda s, a: rotate_scene(s, camera_rotation(a, 11.0)), (scene, angle), atol=1e-6
        )


class TestAgreesWithDataRenderer:
    """The model's latent rotation must move a scene the way the data renderer's camera moves."""

    EXTENT = 9.0  # world units spanned by half the voxel grid (objects fit in radius ~8)

    def test_same_camera_matrix(self):
        raymarch = pytest.importorskip("vidrender.pipelines.scene3d.raymarch")
        azimuth, elevation = torch.tensor([0.0, 35.0, 200.0, 310.0]), torch.tensor([0.0, 60.0, -45.0, 10.0])
        torch.testing.assert_close(raymarch.camera_rotation(azimuth, elevation), camera_rotation(azimuth, elevation))

    def occupancy(self, obj, azimuth: float, elevation: float, size: int) -> torch.Tensor:
        """(1, 1, D, H, W) inside-object indicator in the camera frame of a view (D towards the camera)."""
        camera_points = grid_points(size).float().reshape(-1, 3) * self.EXTENT
        world = camera_points @ camera_rotation(azimuth, elevation).T  # p = C q
        return (obj.sdf(world) < 0).float().reshape(1, 1, size, size, size)

    def silhouette_from_volume(self, volume: torch.Tensor, pixels: int) -> torch.Tensor:
        """Perspective silhouette of a camera-frame occupancy volume, with the renderer's pinhole camera."""
        raymarch = pytest.importorskip("vidrender.pipelines.scene3d.raymarch")
        tan_half = math.tan(math.radians(raymarch.FIELD_OF_VIEW_DEG) / 2)
        centres = ((torch.arange(pixels) + 0.5) / pixels * 2 - 1) * tan_half
        down, right = torch.meshgrid(centres, centres, indexing="ij")
        directions = torch.nn.functional.normalize(torch.stack([-torch.ones_like(down), down, right], -1), dim=-1)
        distances = torch.linspace(raymarch.CAMERA_RADIUS - self.EXTENT, raymarch.CAMERA_RADIUS + self.EXTENT, 96)
        origin = torch.tensor([raymarch.CAMERA_RADIUS, 0.0, 0.0])
        points = origin + distances[:, None, None, None] * directions  # (steps, rows, columns, (d, h, w))
        grid = (points / self.EXTENT).flip(-1)[None]  # grid_sample wants (w, h, d)
        samples = torch.nn.functional.grid_sample(volume, grid, align_corners=False)
        # a low threshold keeps thin parts (chair legs) that trilinear sampling of 48^3 voxels dilutes
        return samples[0, 0].amax(0) > 0.2

    @staticmethod
    def iou(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a & b).sum() / (a | b).sum())

    def test_rotated_latent_matches_rendered_view(self):
        objects = pytest.importorskip("vidrender.pipelines.scene3d.objects")
        raymarch = pytest.importorskip("vidrender.pipelines.scene3d.raymarch")
        chair = objects.make_object("chair", seed=3)
        source, target, pixels = (30.0, 20.0), (110.0, -15.0), 40
        scene = self.occupancy(chair, *source, size=48)
        rendered = raymarch.render_views(chair, [target[0]], [target[1]], size=pixels, antialias=1)[0]
        truth = (rendered < 0.98).any(dim=0)
        # the voxel grid of the source view, rotated by the model's convention, then projected
        moved = rotate_scene(scene, relative_rotation(*source, *target))
        assert self.iou(self.silhouette_from_volume(moved, pixels), truth) > 0.8
        # in the volume too: rotated source occupancy ~ target occupancy (thin legs blur when resampled)
        target_scene = self.occupancy(chair, *target, size=48)[0, 0] > 0.5
        assert self.iou(moved[0, 0] > 0.5, target_scene) > 0.7
        # the inverse rotation (a convention mix-up) matches neither
        wrong = rotate_scene(scene, relative_rotation(*target, *source))
        assert self.iou(self.silhouette_from_volume(wrong, pixels), truth) < 0.5
        assert self.iou(wrong[0, 0] > 0.5, target_scene) < 0.3
