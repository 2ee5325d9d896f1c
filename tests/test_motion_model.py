"""Unit tests of pipeline `motion`'s model, predictors, losses and pair data (no training)."""

import pytest
import torch

from vidrender.errors import UserError
from vidrender.geometry import from_params, invert, warp
from vidrender.pipelines.motion.config import LossConfig, ModelConfig, MotionConfig
from vidrender.pipelines.motion.data import PairDataset, relative_affine
from vidrender.pipelines.motion.losses import equivariance, motion_loss, moving_coverage
from vidrender.pipelines.motion.model import CharacterEncoder, MotionModel
from vidrender.pipelines.motion.predictors import FeaturePairPredictor, FramePairPredictor

SIZE = 32


def blob_frame(size: int = SIZE, centre=(0.0, 0.0), seed: int = 0) -> torch.Tensor:
    """(1, 3, size, size): a textured square on a dark border-free background (content away from edges)."""
    generator = torch.Generator().manual_seed(seed)
    frame = torch.zeros(1, 3, size, size)
    lo, hi = size // 2 - size // 6, size // 2 + size // 6
    dx, dy = int(centre[0] * size / 2), int(centre[1] * size / 2)
    frame[:, :, lo + dy : hi + dy, lo + dx : hi + dx] = torch.rand(1, 3, hi - lo, hi - lo, generator=generator)
    return frame


def shift(pixels_x: float, pixels_y: float, size: int = SIZE) -> torch.Tensor:
    """(1, 2, 3) normalized translation by whole pixels."""
    A = torch.eye(2, 3)[None].clone()
    A[0, 0, 2], A[0, 1, 2] = 2 * pixels_x / size, 2 * pixels_y / size
    return A


@pytest.fixture
def model() -> MotionModel:
    torch.manual_seed(0)
    return MotionModel(ModelConfig(feature_channels=16, feature_groups=4, encoder_width=16, decoder_width=16,
                                   predictor_width=8), "frame-pair", num_clips=2, size=SIZE).eval()


def test_carry_is_equivariant_with_the_encoder(model):
    """f_c(warp(x, A)) ~= T_A f_c(x) for a translation; the inverse affine (a broken warp) is far off.

    Zero padding makes a CNN only approximately equivariant near the frame's border, so the frame is
    larger than the content and the comparison skips a band along the border.
    """
    size, band = 64, 12
    frame = blob_frame(size)
    A = shift(4, -2, size)  # even pixel counts: the stride-2 context path then commutes exactly
    with torch.no_grad():
        features = model.encoder(frame)
        of_moved = model.encoder(warp(frame, A))
        carried, _ = model.carry(features, A)
        broken, _ = model.carry(features, invert(A))
    inside = torch.zeros(1, 1, size, size, dtype=torch.bool)
    inside[..., band:-band, band:-band] = True
    error = (carried - of_moved).pow(2).mean(1, keepdim=True)[inside].mean()
    broken_error = (broken - of_moved).pow(2).mean(1, keepdim=True)[inside].mean()
    scale = of_moved.pow(2).mean()
    assert error < 0.02 * scale
    assert broken_error > 0.3 * scale


def test_rendered_matte_commutes_with_the_warp(model):
    """The per-pixel matte decoder makes g_c(T_A z) = T_A g_c(z): a matte carried by a large rotation is
    the reference matte moved (what lets one reference frame serve every frame of a clip)."""
    frame = blob_frame()
    A = from_params(torch.tensor([0.1]), torch.tensor([-0.05]), torch.tensor([0.9]), torch.tensor([1.1]))
    clip = torch.tensor([0])
    with torch.no_grad():
        features = model.encoder(frame)
        moved = model.render(frame, features, A, clip)["alpha"]
        still = model.render(frame, features, torch.eye(2, 3)[None], clip)["alpha"]
    expected = warp(still, A)
    assert (moved - expected).abs().max() < 0.05
    assert (moved - warp(still, invert(A))).abs().max() > 0.1


def test_encoder_features_cannot_shrink():
    """Scaling the encoder's last layer down leaves each group at unit variance (GroupNorm, no affine).

    (Only until the pre-norm variance nears GroupNorm's eps; that the loss gains nothing from shrinking
    is the relative equivariance loss's job, tested below.)
    """
    torch.manual_seed(0)
    encoder = CharacterEncoder(ModelConfig(feature_channels=16, feature_groups=4, encoder_width=16))
    with torch.no_grad():
        encoder.head[0].weight.mul_(0.05)
        encoder.head[0].bias.mul_(0.05)
        features = encoder(torch.rand(2, 3, SIZE, SIZE))
    per_group = features.view(2, 4, -1).var(dim=-1, unbiased=False)
    assert torch.allclose(per_group, torch.ones_like(per_group), atol=0.05)


def test_equivariance_loss_is_not_won_by_empty_features():
    """The relative equivariance loss is 0 for matching features and ~1 (not 0) for all-zero warped ones."""
    target = torch.randn(2, 8, SIZE, SIZE)
    seen = torch.ones(2, 1, SIZE, SIZE)
    alpha = torch.zeros(2, 1, SIZE, SIZE)
    alpha[..., 8:24, 8:24] = 1
    assert equivariance(target, seen, target, alpha) < 1e-6
    assert equivariance(torch.zeros_like(target), seen, target, alpha) > 0.9


def test_equivariance_loss_ignores_the_background():
    """Only the matte's pixels count: features may differ freely where alpha is 0."""
    target = torch.randn(1, 8, SIZE, SIZE)
    warped = target.clone()
    warped[..., :8, :] = torch.randn(1, 8, 8, SIZE)
    alpha = torch.zeros(1, 1, SIZE, SIZE)
    alpha[..., 16:, :] = 1
    assert equivariance(warped, torch.ones_like(alpha), target, alpha) < 1e-6
    alpha[..., :8, :] = 1
    assert equivariance(warped, torch.ones_like(alpha), target, alpha) > 0.1


def test_background_depends_only_on_the_clip(model):
    """f_b cannot vary per frame: two different frames of a clip get the identical background."""
    first, second = blob_frame(seed=1), blob_frame(centre=(0.3, 0.2), seed=2)
    clip = torch.tensor([1, 1])
    with torch.no_grad():
        out = model(torch.cat([first, second]), torch.cat([second, first]), clip)
    assert torch.equal(out["background"][0], out["background"][1])
    with torch.no_grad():
        other = model(first, second, torch.tensor([0]))["background"]
        model.plates.initialise(0, torch.zeros(3, SIZE, SIZE))
        assert not torch.equal(model(first, second, torch.tensor([0]))["background"], other)


@pytest.mark.parametrize("predictor", [FramePairPredictor(16, 8), FeaturePairPredictor(16, 8)])
def test_predictors_start_at_identity_and_get_gradients(predictor):
    torch.manual_seed(0)
    frames = torch.rand(3, 3, SIZE, SIZE), torch.rand(3, 3, SIZE, SIZE)
    features = torch.randn(3, 16, SIZE, SIZE), torch.randn(3, 16, SIZE, SIZE)
    A = predictor(*frames, *features)
    assert torch.allclose(A, torch.eye(2, 3).expand(3, 2, 3), atol=1e-6)
    A.sum().backward()
    head = predictor.regressor.delta.weight
    assert head.grad is not None and head.grad.abs().sum() > 0


def test_predicted_affines_stay_invertible():
    """Whatever the head outputs, A's linear part is a matrix exponential (det > 0): no NaN from invert."""
    predictor = FramePairPredictor(16, 8)
    with torch.no_grad():
        predictor.regressor.delta.bias.copy_(torch.tensor([-50.0, 50.0, 9.0, 50.0, -50.0, -9.0]))
    A = predictor(torch.rand(2, 3, SIZE, SIZE), torch.rand(2, 3, SIZE, SIZE), None, None)
    det = torch.linalg.det(A[..., :2])
    assert torch.isfinite(A).all() and (det > 0).all()
    assert A[..., 2].abs().max() <= 1.5


def test_pairs_have_gaps_one_to_k_in_both_directions():
    frames = [torch.rand(10, 3, 8, 8), torch.rand(5, 3, 8, 8)]
    affines = [from_params(torch.linspace(0, 0.5, 10), torch.zeros(10), torch.zeros(10), torch.ones(10)), None]
    data = PairDataset(frames, max_gap=3, affines=affines)
    gaps, seen_clips = set(), set()
    for index in range(len(data)):
        item = data[index]
        clip, source, target = int(item["clip"]), int(item["source_index"]), int(item["target_index"])
        gap = int(item["gap"])
        assert 1 <= abs(gap) <= 3 and target - source == gap
        assert torch.equal(item["source"], frames[clip][source]) and torch.equal(item["target"], frames[clip][target])
        if clip == 0:
            assert torch.allclose(item["affine"], relative_affine(affines[0], source, target))
        else:
            assert torch.equal(item["affine"], torch.eye(2, 3))
        gaps.add(gap)
        seen_clips.add(clip)
    assert gaps == {-3, -2, -1, 1, 2, 3} and seen_clips == {0, 1}
    # every ordered pair within the gap limit, once: sum over clips of 2 * sum_k (T - k)
    assert len(data) == 2 * sum(n - k for n in (10, 5) for k in range(1, 4))


def test_loss_logs_every_term_and_warm_start_only_when_asked(model):
    frame = blob_frame()
    batch = {"source": frame, "target": warp(frame, shift(2, 0)), "clip": torch.tensor([0]),
             "tracked": shift(2, 0), "source_moving": torch.zeros_like(frame[:, :1]),
             "target_moving": torch.zeros_like(frame[:, :1])}
    out = model(batch["source"], batch["target"], batch["clip"])
    loss, logs = motion_loss(out, batch, LossConfig(), step=1000, tracked=0.0)
    assert torch.isfinite(loss) and "tracked" not in logs
    assert {"scene_l1", "scene_ssim", "equivariance", "alpha_sparsity", "alpha_binary", "plate_agreement",
            "moving_coverage"} <= set(logs)
    warm_loss, warm_logs = motion_loss(out, batch, LossConfig(), step=1000, tracked=1.0)
    assert warm_logs["tracked"] > 0 and warm_loss > loss


def test_moving_coverage_is_a_floor_that_fades_out(model):
    """Uncovered moving pixels cost the most at step 0 and nothing once the matte priors have ramped in."""
    frame = blob_frame()
    moving = (frame.mean(1, keepdim=True) > 0.5).float()
    assert moving.sum() > 10
    assert moving_coverage(moving, moving) == 0 and moving_coverage(torch.zeros_like(moving), moving) == 1
    assert moving_coverage(torch.zeros_like(moving), torch.zeros_like(moving)) == 0  # nothing moves
    batch = {"source": frame, "target": frame, "clip": torch.tensor([0]), "tracked": shift(0, 0),
             "source_moving": moving, "target_moving": moving}
    out = model(batch["source"], batch["target"], batch["clip"])
    weights = LossConfig()
    totals = [motion_loss(out, batch, weights, step=step)[0].item() for step in (0, weights.regulariser_warmup)]
    without = LossConfig(moving_coverage=0.0)
    plain = [motion_loss(out, batch, without, step=step)[0].item() for step in (0, weights.regulariser_warmup)]
    uncovered = motion_loss(out, batch, weights, step=0)[1]["moving_coverage"]
    assert uncovered > 0.05  # an untrained matte leaves the blob partly uncovered
    assert totals[0] - plain[0] == pytest.approx(weights.moving_coverage * uncovered, rel=1e-4)
    assert totals[1] == pytest.approx(plain[1], rel=1e-6)


@pytest.mark.parametrize("override", ["variant=sideways", "data.size=20", "loss.scene_l1=-1.0", "data.max_gap=0"])
def test_config_rejects_bad_values(override):
    from vidrender.config import load_config

    with pytest.raises(UserError):
        load_config(MotionConfig, None, [override])
