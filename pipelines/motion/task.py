"""Pipeline `motion`'s training task: what the shared loop (`vidrender/train.py`) needs to train it.

`MotionTask(config, clips)` holds the clips in memory (frames at the resolution they were read, any
size; a training copy resized to `data.size`), builds the model and the pair data set, computes the
loss of a batch (with the tracked-affine warm start of the learned predictors), draws preview grids,
and after training turns the model into one `LayerStack` per clip (`decompose`, `infer.py`) and the
checkpoint's `artifact`.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from einops import rearrange

from vidrender.errors import UserError
from vidrender.pipelines.motion import infer
from vidrender.pipelines.motion.background import lower_median_plate, median_plate
from vidrender.pipelines.motion.config import MAX_INFER_SIZE, MotionConfig
from vidrender.pipelines.motion.data import MIN_CLIP_SIDE, Clip, PairDataset, check_clip, resize_frames
from vidrender.pipelines.motion.decomposition import Decomposition
from vidrender.pipelines.motion.difference_matte import difference_matte
from vidrender.pipelines.motion.losses import motion_loss
from vidrender.pipelines.motion.model import MotionModel
from vidrender.pipelines.motion.predictors import PREDICTORS
from vidrender.pipelines.motion.stack import BackgroundLayer, LayerStack
from vidrender.pipelines.motion.world import WorldClip, find_cameras, stabilise, world_affines


def check_working_size(clip: Clip, max_size: int) -> None:
    """Refuse, before training, a clip so elongated that the layer fit, which shrinks its frames to
    `infer.max_size`^2 pixels (`infer.working_size`), would work on a short side under MIN_CLIP_SIDE px (a
    5000x16 clip at the default 256 would be fitted at 4525x14)."""
    height, width = clip.frames.shape[-2:]
    fit_height, fit_width = infer.working_size(height, width, max_size)
    if min(fit_height, fit_width) < MIN_CLIP_SIDE:
        needed = math.ceil(MIN_CLIP_SIDE * math.sqrt(height * width) / min(height, width))
        hint = f"set infer.max_size to at least {needed}" if needed <= MAX_INFER_SIZE else "crop the clip"
        raise UserError(f"{clip.name}: the layer fit shrinks its {width}x{height} frames to {fit_width}x{fit_height} "
                        f"(infer.max_size={max_size}), under {MIN_CLIP_SIDE} px a side; {hint}")


class MotionTask:
    """The `TrainTask` of pipeline `motion` for one or more clips (each keeps its own background).

    clips: `Clip`s with frames (T, 3, H, W) in [0, 1]; when the variant's predictor `needs_affines`
    every clip needs `affines`. tracked: optional per-clip tracked affines (T, 2, 3) for the warm start
    of a learned predictor; when the config asks for a warm start and none are given they are computed
    with OpenCV (`tracking.py`).

    A clip filmed by a moving camera (`data.camera`, `world.find_cameras`) is learned in its world: its
    frames are stabilised into the world plate (`world.stabilise`) and everything else (training, tracks,
    the layer fit) runs on that static clip of the world; `decompose` puts the cameras back into its
    stack. `self.clips` holds what is learned from (the world clips), `self.worlds` the `WorldClip` of each
    moving-camera clip (None for a static one).
    """

    name = "motion"

    def __init__(self, config: MotionConfig, clips: list[Clip], tracked: list[torch.Tensor] | None = None):
        if not clips:
            raise UserError("motion: no clips to train on")
        for clip in clips:
            check_clip(clip)
            check_working_size(clip, config.infer.max_size)
        self.predictor = PREDICTORS[config.variant]
        if self.predictor.needs_affines:
            missing = [clip.name for clip in clips if clip.affines is None]
            if missing:
                raise UserError(f"{missing[0]}: variant '{config.variant}' needs affines for every clip (--affines)")
        self.config = config
        self.worlds = [None if config.data.camera == "static" else _world_of(clip, config) for clip in clips]
        self.clips = [clip if world is None else _world_clip(clip, world, config.infer.reference)
                      for clip, world in zip(clips, self.worlds, strict=True)]
        clips = self.clips
        self.train_frames = [resize_frames(clip.frames.float(), config.data.size) for clip in clips]
        self.known = [None if clip.affines is None else clip.affines.float() for clip in clips]
        self.tracked = tracked if tracked is not None else self._track_if_needed()
        # what surely moves in each training frame, the floor of `loss.moving_coverage`: the classical
        # difference matte less a one-pixel rim (its blur and closing reach past the character's edge, and a
        # floor there fattened short trainings' mattes)
        self.moving = [-F.max_pool2d(-difference_matte(frames, median_plate(frames)), 3, stride=1, padding=1)
                       for frames in self.train_frames]

    @property
    def guided(self) -> bool:
        """Whether a learned predictor is guided by OpenCV tracks (during and after the warm start)."""
        return self.predictor.learned and self.tracked[0] is not None

    def _track_if_needed(self) -> list[torch.Tensor | None]:
        if not self.predictor.learned or self.config.data.warm_start_steps == 0:
            return [None] * len(self.clips)
        from vidrender.pipelines.motion.tracking import track_affines

        return [track_affines(clip.frames.float()).float() for clip in self.clips]

    def build_model(self) -> MotionModel:
        """The model with every clip's plate set to the temporal median of its training frames."""
        model = MotionModel(self.config.model, self.config.variant, len(self.clips), self.config.data.size)
        for index, frames in enumerate(self.train_frames):
            model.plates.initialise(index, lower_median_plate(frames))
        return model

    def build_dataset(self) -> PairDataset:
        return PairDataset(self.train_frames, self.config.data.max_gap, self.known, self.tracked, self.moving)

    def warm_start_weight(self, step: int) -> float:
        """How far the warm start of a guided predictor still is from over at `step`: 1 for the first half
        of `data.warm_start_steps`, then fading linearly to 0 by its end; 0 when nothing is guided."""
        warm = self.config.data.warm_start_steps
        if not self.guided or warm == 0:
            return 0.0
        return min(1.0, max(0.0, 2.0 - 2.0 * step / warm))

    def training_loss(self, model, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss of a batch of pairs and named float logs (`losses.motion_loss`).

        A guided predictor gets the tracked affines as a guide (each pair's layers learn from the better
        of tracked and predicted motion, `MotionModel.forward`) and is pulled to them with weight
        `loss.tracked` at the start, fading to `loss.tracked_prior` over the warm start
        (`warm_start_weight`): a teacher while the predictor knows nothing, then an anchor that keeps it
        from leaving the character.
        """
        known = batch["affine"] if self.predictor.needs_affines else None
        out = model(batch["source"], batch["target"], batch["clip"], known, batch["tracked"] if self.guided else None)
        warm = self.warm_start_weight(step)
        tracked = 0.0
        if self.guided:
            tracked = warm * self.config.loss.tracked + (1 - warm) * self.config.loss.tracked_prior
        return motion_loss(out, batch, self.config.loss, step, tracked, warm)

    @torch.no_grad()
    def preview(self, model: MotionModel, batch: dict) -> torch.Tensor:
        """(3, 5 * S, n * S) grid for up to 4 pairs of `batch`; columns are pairs, rows: source, target,
        render, alpha, plate."""
        count = min(4, batch["source"].shape[0])
        part = {key: value[:count] for key, value in batch.items()}
        known = part["affine"] if self.predictor.needs_affines else None
        out = model(part["source"], part["target"], part["clip"], known)
        rows = [part["source"], part["target"], out["frame"], out["alpha"].expand(-1, 3, -1, -1), out["background"]]
        grid = rearrange(torch.stack(rows), "row pair c h w -> c (row h) (pair w)")
        return grid.clamp(0, 1).cpu()

    def decompose(self, model: MotionModel) -> list[LayerStack]:
        """Every clip's layer stack, fitted to its frames at their resolution (`infer.decompose`); a moving
        camera's stack is fitted in the world plate and filmed by the clip's cameras."""
        model.eval()
        stacks = []
        for index, (clip, world) in enumerate(zip(self.clips, self.worlds, strict=True)):
            stack = infer.decompose(model, clip, index, self.config.infer, self.known[index], self.tracked[index],
                                    world)
            if world is not None:
                height, width = world.frame_size
                stack = LayerStack(BackgroundLayer(stack.background.plate, world.cameras.float()), stack.characters,
                                   stack.fps, (width, height), stack.name)
            stacks.append(stack)
        return stacks

    def artifact(self, model: MotionModel) -> dict:
        """The checkpoint's artifact: the clips' layer stacks (`Decomposition.artifact`)."""
        return Decomposition(self.config, model.state_dict(), self.decompose(model)).artifact()


def _world_of(clip: Clip, config: MotionConfig) -> WorldClip | None:
    """The clip stabilised into its world plate, or None if its camera does not move (`world.find_cameras`
    with the model `data.camera`, relative to the reference frame of the layers)."""
    try:
        cameras = find_cameras(clip.frames.float(), config.infer.reference, config.data.camera)
    except UserError as error:
        raise UserError(f"{clip.name}: {error}") from None
    return None if cameras is None else stabilise(clip.frames.float(), cameras)


def _world_clip(clip: Clip, world: WorldClip, reference: int) -> Clip:
    """The `Clip` learned from for a moving-camera clip: its stabilised frames, its known affines (frame
    coordinates) carried into the world plate."""
    affines = None if clip.affines is None else world_affines(clip.affines, world.cameras, reference).float()
    return replace(clip, frames=world.frames, affines=affines)
