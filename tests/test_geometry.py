"""2-D affine geometry (vidrender/geometry.py): conventions, warps, conversions and camera grids."""

import math

import pytest
import torch

from vidrender import geometry as g
from vidrender.errors import UserError


def _random_affines(n, seed=0):
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(5, n, generator=generator, dtype=torch.float64)
    return g.from_params(u[0] - 0.5, u[1] - 0.5, (u[2] - 0.5) * math.pi, 0.7 + 0.6 * u[3], (u[4] - 0.5) * 0.4)


class TestCompositionAndInverse:
    def test_smoke_identity(self):
        A = g.identity(3)
        assert A.shape == (3, 2, 3)
        assert torch.equal(g.compose(A, A), A)

    def test_inverse_round_trip(self):
        A = _random_affines(8)
        assert torch.allclose(g.compose(A, g.invert(A)), g.identity(8, dtype=torch.float64), atol=1e-12)
        assert torch.allclose(g.compose(g.invert(A), A), g.identity(8, dtype=torch.float64), atol=1e-12)

    def test_compose_order_is_b_then_a(self):
        A, B = _random_affines(1, seed=1), _random_affines(1, seed=2)
        points = torch.rand(1, 5, 2, dtype=torch.float64)
        assert torch.allclose(g.apply(g.compose(A, B), points), g.apply(A, g.apply(B, points)))

    def test_gradient_flows_through_invert(self):
        A = _random_affines(2).requires_grad_(True)
        g.invert(A).sum().backward()
        assert A.grad is not None and torch.isfinite(A.grad).all()


class TestFromParams:
    def test_rotation_is_counter_clockwise_on_screen(self):
        # a quarter turn counter-clockwise on screen (y down) takes the point to the right (1, 0) up to (0, -1)
        A = g.from_params(*(torch.tensor([v]) for v in (0.0, 0.0, math.pi / 2, 1.0)))
        assert torch.allclose(g.apply(A, torch.tensor([[[1.0, 0.0]]])), torch.tensor([[[0.0, -1.0]]]), atol=1e-6)

    def test_translation_and_scale(self):
        A = g.from_params(*(torch.tensor([v]) for v in (0.25, -0.5, 0.0, 2.0)))
        assert torch.allclose(g.apply(A, torch.tensor([[[0.5, 0.5]]])), torch.tensor([[[1.25, 0.5]]]))


class TestWarp:
    def test_shape_and_content_moves_by_a(self):
        image = torch.zeros(2, 3, 16, 16)
        image[:, :, 4, 4] = 1.0
        # half a frame-width to the right is 8 pixels at 16 px
        A = g.from_params(*(torch.tensor([v, v]) for v in (0.0, 0.0, 0.0, 1.0)))
        A[:, 0, 2] = 1.0
        out = g.warp(image, A)
        assert out.shape == image.shape
        assert out[0, 0].argmax().item() == 4 * 16 + 12

    def test_every_channel_alike(self):
        image = torch.rand(1, 1, 12, 12).repeat(1, 4, 1, 1)
        out = g.warp(image, _random_affines(1).float())
        assert torch.allclose(out[:, :1].expand_as(out), out)

    def test_round_trip_inside_frame(self):
        # smooth content: bilinear resampling twice blurs pixel noise, which is not what this checks
        image = torch.nn.functional.interpolate(torch.rand(1, 2, 4, 4), size=(32, 32), mode="bilinear")
        A = g.from_params(*(torch.tensor([v]) for v in (0.05, -0.05, 0.2, 0.9)))
        back = g.warp(g.warp(image, A), g.invert(A))
        centre = (slice(None), slice(None), slice(10, 22), slice(10, 22))
        assert (back[centre] - image[centre]).abs().max() < 0.05  # a wrong-way warp is off by ~0.35

    def test_matches_mapping_of_points(self):
        # the bright pixel ends where g.apply sends its centre
        image = torch.zeros(1, 1, 32, 32)
        image[0, 0, 8, 20] = 1.0
        A = g.from_params(*(torch.tensor([v]) for v in (-0.2, 0.3, 0.5, 1.0)))
        centre = torch.tensor([[[(2 * 20 + 1) / 32 - 1, (2 * 8 + 1) / 32 - 1]]])
        x, y = g.apply(A, centre)[0, 0]
        out = g.warp(image, A)[0, 0]
        row, col = divmod(out.argmax().item(), 32)
        assert abs(col - ((x + 1) * 32 - 1) / 2) <= 1 and abs(row - ((y + 1) * 32 - 1) / 2) <= 1

    def test_gradient(self):
        A = _random_affines(1).float().requires_grad_(True)
        image = torch.rand(1, 2, 8, 8, requires_grad=True)
        g.warp(image, A).sum().backward()
        assert A.grad.abs().sum() > 0 and image.grad.abs().sum() > 0

    def test_errors(self):
        with pytest.raises(ValueError, match="B, C, H, W"):
            g.warp(torch.rand(3, 8, 8), g.identity(1))
        with pytest.raises(ValueError, match="affines of shape"):
            g.warp(torch.rand(2, 3, 8, 8), g.identity(3))


class TestPixelConversion:
    def test_round_trip(self):
        A = _random_affines(4)
        assert torch.allclose(g.pixel_to_normalized(g.normalized_to_pixel(A, 64, 48), 64, 48), A)

    def test_translation_in_pixels(self):
        A = g.identity(1, dtype=torch.float64)
        A[0, 0, 2] = 0.5  # a quarter of the 2-unit-wide frame
        assert torch.allclose(g.normalized_to_pixel(A, 64, 48)[0, 0, 2], torch.tensor(16.0, dtype=torch.float64))

    def test_corner_error_in_pixels(self):
        A = g.identity(1, dtype=torch.float64)
        B = A.clone()
        B[0, 1, 2] = 0.25  # a shift of 0.25 normalized = 6 px on a 48-px-high frame
        assert torch.allclose(g.corner_error(A, B, 64, 48), torch.tensor([6.0], dtype=torch.float64))


class TestCheckAffines:
    def test_accepts_valid(self):
        assert g.check_affines([[[1, 0, 0], [0, 1, 0]]], "traj.json").shape == (1, 2, 3)

    @pytest.mark.parametrize(
        "values, message",
        [
            ([[1, 0, 0], [0, 1, 0]], "2x3"),
            ([], "non-empty"),
            ([[[1, 0, float("nan")], [0, 1, 0]]], "NaN"),
            ([[[0, 0, 0], [0, 0, 0]]], "singular"),
            ("abc", "list of 2x3"),
        ],
    )
    def test_refuses_malformed(self, values, message):
        with pytest.raises(UserError, match=message):
            g.check_affines(values, "traj.json")


class TestCameraGrid:
    def test_an_affine_camera_gives_affine_grid(self):
        camera = g.to_homogeneous(g.from_params(torch.tensor([0.1]), torch.tensor([-0.2]), torch.tensor([0.3]),
                                            torch.tensor([1.2])).double())
        grid = g.camera_grid(camera, (6, 10))
        expected = torch.nn.functional.affine_grid(camera[:, :2], [1, 1, 6, 10], align_corners=False)
        assert grid.shape == (1, 6, 10, 2) and torch.allclose(grid, expected, atol=1e-12)

    def test_perspective_division(self):
        camera = torch.eye(3, dtype=torch.float64)[None].clone()
        camera[0, 2, 2] = 2.0  # every point lands at half its coordinates
        assert torch.allclose(g.camera_grid(camera, (4, 4)), g.camera_grid(torch.eye(3, dtype=torch.float64)[None],
                                                                       (4, 4)) / 2)

    def test_gradcheck(self):
        camera = (torch.eye(3, dtype=torch.float64) + 0.05 * torch.rand(3, 3, dtype=torch.float64))[None]
        assert torch.autograd.gradcheck(lambda c: g.camera_grid(c, (3, 4)), (camera.requires_grad_(),))

    def test_camera_view_samples_at_the_grid(self):
        plate = torch.rand(2, 8, 12, dtype=torch.float64)
        camera = torch.eye(3, dtype=torch.float64)[None].clone()
        camera[0, 0, 2] = 0.25
        expected = torch.nn.functional.grid_sample(plate[None], g.camera_grid(camera, (8, 12)), align_corners=False)
        assert torch.allclose(g.camera_view(plate, camera, (8, 12)), expected)
