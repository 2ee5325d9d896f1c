"""Settings of the `scene3d` pipeline (Equivariant Neural Rendering and its temporal extension).

Dataclass schemas for OmegaConf structured configs (`vidrender.config.load_config`): fields are plain
types, lists of ints and nested dataclasses. Each section checks itself in `__post_init__` and raises
`UserError` naming the offending key, so a bad YAML file fails before any model is built. Defaults are
the reference architecture at 64x64 (`configs/scene3d/paper.yaml` spells them out).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vidrender.config import TrainConfig, at_least
from vidrender.errors import UserError

ALLOWED_STRIDES = (1, 2, -2)


@dataclass
class ModelConfig:
    """Architecture. Layer lists describe the inverse renderer; the forward renderer is its transpose.

    In `channels_2d`/`channels_3d` a stride-1 entry is a residual block of that hidden width (the
    channel count flowing through is unchanged), a stride-2 entry a 4x4 stride-2 convolution to that
    many channels, a stride -2 entry a 4x4 stride-2 transposed convolution.
    """

    image_size: int = 64
    channels_2d: list[int] = field(default_factory=lambda: [64, 64, 128, 128, 128, 128, 256, 256, 128, 128, 128])
    strides_2d: list[int] = field(default_factory=lambda: [1, 1, 2, 1, 2, 1, 2, 1, -2, 1, 1])
    channels_3d: list[int] = field(default_factory=lambda: [32, 32, 128, 128, 128, 64, 64, 64])
    strides_3d: list[int] = field(default_factory=lambda: [1, 1, 2, 1, 1, -2, 1, 1])
    # 1x1 convolutions of the 2-D -> 3-D step; the last count is split into (channels, depth).
    inverse_projection_channels: list[int] = field(default_factory=lambda: [256, 512, 1024])
    # 1x1 convolutions of the 3-D -> 2-D step (input: channels * depth, flattened).
    projection_channels: list[int] = field(default_factory=lambda: [512, 256, 256])
    # Channels of the scene tensor; when it differs from channels_3d[-1] (or with time steps) a 1x1x1
    # convolution produces the scene(s) from the last 3-D features.
    scene_channels: int = 64

    def __post_init__(self) -> None:
        if self.image_size < 8:
            raise UserError(f"model.image_size must be at least 8, got {self.image_size}")
        for stack in ("2d", "3d"):
            channels, strides = getattr(self, f"channels_{stack}"), getattr(self, f"strides_{stack}")
            if not channels or len(channels) != len(strides):
                raise UserError(
                    f"model.channels_{stack} and model.strides_{stack} must be non-empty lists of equal"
                    f" length, got {len(channels)} and {len(strides)}"
                )
            if any(stride not in ALLOWED_STRIDES for stride in strides):
                raise UserError(f"model.strides_{stack} may only hold 1, 2 and -2, got {list(strides)}")
        for name in ("channels_2d", "channels_3d", "inverse_projection_channels", "projection_channels"):
            values = getattr(self, name)
            if not values or min(values) < 1:
                raise UserError(f"model.{name} must be a non-empty list of positive counts, got {values}")
        if self.scene_channels < 1:
            raise UserError(f"model.scene_channels must be positive, got {self.scene_channels}")
        self.scene_shape()  # raises UserError when the sizes do not fit together

    def lifted_shape(self) -> tuple[int, int]:
        """(channels, depth) of the volume the inverse projection lifts the 2-D features into."""
        size_2d = _size_after(self.image_size, self.strides_2d, "model.strides_2d", "model.image_size")
        depth_channels = self.inverse_projection_channels[-1]
        if depth_channels % size_2d:
            raise UserError(
                f"model.inverse_projection_channels[-1] = {depth_channels} must be divisible by the depth"
                f" {size_2d} (the 2-D features' size)"
            )
        return depth_channels // size_2d, size_2d

    def scene_shape(self) -> tuple[int, int, int, int]:
        """(C, D, H, W) of one scene tensor (D = H = W), checking that every stage divides evenly."""
        depth = self.lifted_shape()[1]
        size_3d = _size_after(depth, self.strides_3d, "model.strides_3d", f"lifted depth {depth}")
        return (self.scene_channels, size_3d, size_3d, size_3d)


def _size_after(size: int, strides: list[int], key: str, what: str) -> int:
    for stride in strides:
        if stride == 2:
            if size % 2:
                raise UserError(f"{key}: a stride-2 layer meets odd size {size} (from {what}); use sizes 2^k")
            size //= 2
        elif stride == -2:
            size *= 2
    return size


@dataclass
class TemporalConfig:
    """Temporal extension: `timesteps` scenes per image, indexed by time offset around T // 2."""

    timesteps: int = 1  # 1 = the original, static model
    max_gap: int = 0  # largest |t_b - t_a| the pair sampler may produce
    smoothness_weight: float = 0.0  # L2 between neighbouring time slices; 0 disables (and saves its cost)

    def __post_init__(self) -> None:
        if self.timesteps < 1 or self.max_gap < 0:
            raise UserError(
                f"temporal.timesteps must be >= 1 and temporal.max_gap >= 0, got {self.timesteps} and {self.max_gap}"
            )
        if self.timesteps < 2 * self.max_gap + 1:
            raise UserError(
                f"temporal.timesteps = {self.timesteps} cannot index offsets up to +-{self.max_gap}:"
                f" it must be at least 2 * max_gap + 1 = {2 * self.max_gap + 1}"
            )
        at_least("temporal.smoothness_weight", self.smoothness_weight, 0)  # NaN and infinity too
        if self.smoothness_weight > 0 and self.timesteps == 1:
            raise UserError(
                f"temporal.smoothness_weight = {self.smoothness_weight} needs temporal.timesteps > 1 (time slices"
                " to smooth between)"
            )


@dataclass
class LossConfig:
    """Swap-rendering loss: pixel term + ssim_weight * (1 - SSIM)."""

    pixel: str = "l1"  # "l1" | "l2"
    ssim_weight: float = 0.05
    ssim_window: int = 11  # Gaussian window (sigma 1.5), valid padding, as the reference's SSIM

    def __post_init__(self) -> None:
        if self.pixel not in ("l1", "l2"):
            raise UserError(f"loss.pixel must be l1 or l2, got {self.pixel!r}")
        at_least("loss.ssim_weight", self.ssim_weight, 0)  # NaN and infinity too
        if self.ssim_window < 3 or self.ssim_window % 2 == 0:
            raise UserError(f"loss.ssim_window must be an odd number >= 3, got {self.ssim_window}")


def _reference_training() -> TrainConfig:
    # Adam lr 2e-4 as the reference; batch_size counts *pairs* (the reference's 16 images = 8 pairs).
    return TrainConfig(lr=2e-4, batch_size=8, grad_clip=0.0)


@dataclass
class Scene3dConfig:
    """Everything a `scene3d` run needs besides the data paths."""

    model: ModelConfig = field(default_factory=ModelConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=_reference_training)

    def __post_init__(self) -> None:
        if self.loss.ssim_weight > 0 and self.loss.ssim_window > self.model.image_size:
            raise UserError(
                f"loss.ssim_window = {self.loss.ssim_window} is larger than model.image_size = {self.model.image_size}"
            )
