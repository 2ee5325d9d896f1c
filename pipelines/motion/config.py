"""Configuration of pipeline `motion`: model sizes, loss weights, affine variant, pair gaps, training sizes.

Plain dataclasses with simple typed fields, so `vidrender.config.load_config(MotionConfig, yaml)` merges a
YAML file (`configs/motion/*.yaml`) into them and rejects unknown keys. `train` is the shared loop's
section (steps, batch size, lr, ...); `validate` (run on construction) checks the values a user can get
wrong and raises `UserError` naming the option.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vidrender.config import TrainConfig
from vidrender.errors import UserError
from vidrender.pipelines.motion.predictors import VARIANTS


@dataclass
class ModelConfig:
    """Network sizes (features z_c have the training resolution)."""

    feature_channels: int = 32  # C of z_c
    feature_groups: int = 8  # GroupNorm groups on z_c: each group has unit variance, so z_c cannot vanish
    encoder_width: int = 32
    decoder_width: int = 32
    predictor_width: int = 32


@dataclass
class LossConfig:
    """Weight of every loss term (0 switches a term off)."""

    scene_l1: float = 1.0  # || render - x_{t+k} ||_1
    scene_ssim: float = 0.2  # (1 - SSIM(render, x_{t+k})) / 2
    equivariance: float = 0.1  # relative || T_A f_c(x_t) - stopgrad f_c(x_{t+k}) ||^2 on the matte
    alignment: float = 1.0  # learned predictors: scene L1 (+ SSIM in scene's ratio) of the predictor's own render
    matte_alignment: float = 1.0  # relative || T_A g_c(f_c(x_t)) - g_c(f_c(x_{t+k})) ||^2, gradient to A only
    alpha_sparsity: float = 0.01  # mean alpha: the character layer only where it explains pixels
    alpha_binary: float = 0.02  # alpha (1 - alpha): a matte, not a blend
    plate_agreement: float = 0.1  # alpha where the plate already explains the target pixel
    plate_agreement_scale: float = 0.05  # colour distance below which "the plate explains the pixel"
    moving_coverage: float = 0.05  # share of the moving pixels the mattes leave uncovered; fades out over the warmup
    regulariser_warmup: int = 200  # steps over which the three alpha terms ramp up from 0 (alpha stays alive)
    tracked: float = 1.0  # label-free: L1 of predicted to tracked affines at step 0 (fades over the warm start)
    tracked_prior: float = 0.1  # ... and after the warm start: an anchor that keeps A from escaping


@dataclass
class DataConfig:
    """Training pairs: frame size, gaps and the schedules that start label-free variants safely."""

    size: int = 64  # training resolution: frames are resized to size x size (affines are normalized)
    max_gap: int = 8  # K: training pairs (t, t+k) and (t+k, t) for k in 1..K
    warm_start_steps: int = 300  # label-free: rendering hands over from tracked to predicted affines


@dataclass
class InferConfig:
    """After training: how the per-frame affines, matte, plate and character layer are built."""

    max_size: int = 256  # the layers are fitted on frames shrunk to this longest side (memory and time)
    reference: int = 0  # the frame whose pose the character layer has; affines map it to every frame
    track_steps: int = 40  # Adam steps aligning each frame to the reference after the predictor's step
    track_lr: float = 1e-2  # their Adam lr (normalized units: 0.03 is one pixel at training size 64)
    refine_steps: int = 150  # Adam steps of each layer fit (coarse, then fine) against all frames
    refine_lr: float = 3e-3  # Adam lr of the affines (normalized units)
    smooth_residual: bool = True  # the affine fit compares 4x4-window averages (removes a sub-pixel bias)
    rounds: int = 2  # affines-then-matte fits; a second round removes the bias of the model's coarse matte
    layer_lr: float = 0.05  # Adam lr of the character layer's RGB and alpha logits


def _motion_training() -> TrainConfig:
    # Cosine decay to 0.1 x lr: at a constant 2e-3 the matte of some runs emptied late (known, seed 1, at
    # step ~450) and frame-pair plateaued at IoU 0.92 on the same clip; with the decay both reached 0.98.
    return TrainConfig(steps=600, batch_size=16, lr=2e-3, lr_schedule="cosine", lr_final=0.1)


@dataclass
class MotionConfig:
    """Everything pipeline `motion` needs; `variant` picks the affine source (see `VARIANTS`)."""

    # The best label-free variant measured (benchmarks/motion_table.py, 5 clips): frame-pair and feature-pair
    # tie on mean IoU (0.991 / 0.991); frame-pair has the better worst clip (0.983 / 0.980) and costs less.
    variant: str = "frame-pair"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=_motion_training)
    infer: InferConfig = field(default_factory=InferConfig)

    def __post_init__(self) -> None:
        validate(self)


def validate(config: MotionConfig) -> MotionConfig:
    """Check user-settable values; raise `UserError` naming the first bad option. Returns `config`."""
    if config.variant not in VARIANTS:
        raise UserError(f"variant: unknown affine variant {config.variant!r}; choose one of {', '.join(VARIANTS)}")
    if config.data.size < 16 or config.data.size % 8:
        raise UserError(f"data.size: must be a multiple of 8 and at least 16, got {config.data.size}")
    if config.data.max_gap < 1:
        raise UserError(f"data.max_gap: must be at least 1, got {config.data.max_gap}")
    if config.data.warm_start_steps < 0:
        raise UserError(f"data.warm_start_steps: must be >= 0, got {config.data.warm_start_steps}")
    if config.model.feature_channels % config.model.feature_groups:
        raise UserError(
            f"model.feature_groups: {config.model.feature_groups} does not divide "
            f"model.feature_channels={config.model.feature_channels}"
        )
    small = [name for name, value in vars(config.model).items() if value < 1]
    if small:
        raise UserError(f"model.{small[0]}: must be positive")
    negative = [name for name, value in vars(config.loss).items() if value < 0]
    if negative:
        raise UserError(f"loss.{negative[0]}: must be >= 0")
    infer = config.infer
    if infer.max_size < 16:
        raise UserError(f"infer.max_size: must be at least 16, got {infer.max_size}")
    counts = {"reference": infer.reference, "rounds": infer.rounds, "track_steps": infer.track_steps,
              "refine_steps": infer.refine_steps}
    rates = {"track_lr": infer.track_lr, "refine_lr": infer.refine_lr, "layer_lr": infer.layer_lr}
    for name, value in counts.items():
        if value < 0:
            raise UserError(f"infer.{name}: must be >= 0, got {value}")
    for name, value in rates.items():
        if value <= 0:
            raise UserError(f"infer.{name}: must be positive, got {value}")
    return config
