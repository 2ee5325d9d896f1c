"""Configuration of pipeline `motion`: model sizes, loss weights, affine variant, pair gaps, training sizes.

Plain dataclasses with simple typed fields, so `vidrender.config.load_config(MotionConfig, yaml)` merges a
YAML file (`configs/motion/*.yaml`) into them and rejects unknown keys. `train` is the shared loop's
section (steps, batch size, lr, ...); `validate` (run on construction) checks the values a user can get
wrong and raises `UserError` naming the option.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vidrender.config import TrainConfig, at_least, between, positive
from vidrender.errors import UserError
from vidrender.pipelines.motion.predictors import VARIANTS

# Ranges of the sizes (docs/configs.md). 16 px is the smallest frame the layer fit works on
# (`vidrender.pipelines.motion.data.MIN_CLIP_SIDE`); the largest sizes are the video reader's 8192 px
# side; larger values only run out of memory.
MIN_TRAIN_SIZE = 16
MAX_TRAIN_SIZE = 8192
MAX_INFER_SIZE = 8192
MAX_GAP = 1000
MAX_WIDTH = 4096  # channels of a network layer
CAMERAS = ("homography", "affine", "similarity", "static")


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
    # the camera model fitted to every clip (homography, affine, similarity; a clip whose camera does not
    # move takes the static path), or static: the camera is not estimated (a tripod shot; saves its time)
    camera: str = "homography"


@dataclass
class InferConfig:
    """After training: how the per-frame affines, matte, plate and character layer are built."""

    max_size: int = 256  # the layers are fitted on frames shrunk to at most max_size^2 pixels (memory and time)
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
    """Check user-settable values; raise `UserError` naming the first bad option. Returns `config`.

    Every number must be finite (`load_config` refuses NaN and infinity for all keys; the range helpers
    here refuse NaN too, for configs built in Python) and within its meaning, listed in docs/configs.md.
    """
    if config.variant not in VARIANTS:
        raise UserError(f"variant: unknown affine variant {config.variant!r}; choose one of {', '.join(VARIANTS)}")
    _validate_data(config.data)
    _validate_model(config.model)
    _validate_loss(config.loss)
    _validate_infer(config.infer)
    return config


def _validate_data(data: DataConfig) -> None:
    if not MIN_TRAIN_SIZE <= data.size <= MAX_TRAIN_SIZE or data.size % 8:
        raise UserError(f"data.size: must be a multiple of 8 from {MIN_TRAIN_SIZE} to {MAX_TRAIN_SIZE}, "
                        f"got {data.size}")
    # the pair list holds (2 max_gap) candidates per frame: a huge gap only costs time, never adds a pair
    between("data.max_gap", data.max_gap, 1, MAX_GAP)
    at_least("data.warm_start_steps", data.warm_start_steps, 0)
    if data.camera not in CAMERAS:
        raise UserError(f"data.camera: unknown camera model {data.camera!r}; choose one of {', '.join(CAMERAS)}")


def _validate_model(model: ModelConfig) -> None:
    for name, value in vars(model).items():
        between(f"model.{name}", value, 1, MAX_WIDTH)
    if model.feature_channels % model.feature_groups:
        raise UserError(
            f"model.feature_groups: {model.feature_groups} does not divide "
            f"model.feature_channels={model.feature_channels}"
        )


def _validate_loss(loss: LossConfig) -> None:
    for name, value in vars(loss).items():  # weights, and the warmup's steps: 0 switches a term off
        at_least(f"loss.{name}", value, 0)
    # a colour distance the plate-agreement term divides by (squared): 0 would make it NaN
    positive("loss.plate_agreement_scale", loss.plate_agreement_scale)


def _validate_infer(infer: InferConfig) -> None:
    if not MIN_TRAIN_SIZE <= infer.max_size <= MAX_INFER_SIZE:
        raise UserError(f"infer.max_size: must be from {MIN_TRAIN_SIZE} to {MAX_INFER_SIZE}, got {infer.max_size}")
    for name in ("reference", "rounds", "track_steps", "refine_steps"):
        at_least(f"infer.{name}", getattr(infer, name), 0)
    for name in ("track_lr", "refine_lr", "layer_lr"):
        positive(f"infer.{name}", getattr(infer, name))
