"""Pipeline `motion`'s training task: what the shared loop (`vidrender/train.py`) needs to train it.

`MotionTask(config, clips)` holds the clips in memory (frames at the resolution they were read, any
size; a training copy resized to `data.size`), builds the model and the pair data set, computes the
loss of a batch (with the gap curriculum and the tracked-affine warm start of the label-free variants),
draws preview grids, and after training turns the model into the checkpoint's `artifact` (per clip:
plate, character RGBA, one affine per frame, mattes; `infer.py`).
"""

from __future__ import annotations

import torch

from pipelines.motion import infer
from pipelines.motion.config import MotionConfig
from pipelines.motion.data import Clip, PairDataset, check_clip, median_plate, relative_affine, resize_frames
from pipelines.motion.losses import motion_loss
from pipelines.motion.model import MotionModel
from vidrender.errors import UserError


class MotionTask:
    """The `TrainTask` of pipeline `motion` for one or more clips (each keeps its own background).

    clips: `Clip`s with frames (T, 3, H, W) in [0, 1]; for `variant == "known"` every clip needs
    `affines`. tracked: optional per-clip tracked affines (T, 2, 3) for the warm start; when the config
    asks for a warm start and none are given they are computed with OpenCV (`tracking.py`).
    """

    name = "motion"

    def __init__(self, config: MotionConfig, clips: list[Clip], tracked: list[torch.Tensor] | None = None):
        if not clips:
            raise UserError("motion: no clips to train on")
        for clip in clips:
            check_clip(clip)
        if config.variant == "known":
            missing = [clip.name for clip in clips if clip.affines is None]
            if missing:
                raise UserError(f"{missing[0]}: variant 'known' needs affines for every clip (--affines)")
        self.config = config
        self.clips = clips
        self.train_frames = [resize_frames(clip.frames.float(), config.data.size) for clip in clips]
        self.known = [None if clip.affines is None else clip.affines.float() for clip in clips]
        self.tracked = tracked if tracked is not None else self._track_if_needed()

    def _track_if_needed(self) -> list[torch.Tensor | None]:
        if self.config.variant == "known" or self.config.data.warm_start_steps == 0:
            return [None] * len(self.clips)
        from pipelines.motion.tracking import track_affines

        return [track_affines(clip.frames.float()).float() for clip in self.clips]

    def build_model(self) -> MotionModel:
        """The model with every clip's plate set to the temporal median of its training frames."""
        model = MotionModel(self.config.model, self.config.variant, len(self.clips), self.config.data.size)
        for index, frames in enumerate(self.train_frames):
            model.plates.initialise(index, median_plate(frames))
        return model

    def build_dataset(self) -> PairDataset:
        return PairDataset(self.train_frames, self.config.data.max_gap, self.known, self.tracked)

    def max_gap_at(self, step: int) -> int:
        """Largest pair gap used at `step`: grows linearly from 1 to `data.max_gap` over the curriculum."""
        data = self.config.data
        if data.curriculum_steps == 0 or step >= data.curriculum_steps:
            return data.max_gap
        return 1 + (data.max_gap - 1) * step // data.curriculum_steps

    def _apply_curriculum(self, batch: dict, step: int) -> dict:
        """Shorten every pair's gap to at most `max_gap_at(step)`, keeping its direction.

        A gap g becomes sign(g) * (1 + (|g| - 1) mod k): uniform on 1..k when g is uniform on 1..K, and the
        new target lies between source and old target, so it is inside the clip. Done here rather than
        in the data set because loader workers hold their own copies of it, which the step cannot reach.
        """
        limit = self.max_gap_at(step)
        if limit >= self.config.data.max_gap:
            return batch
        batch = dict(batch)
        gap = batch["gap"]
        new_gap = gap.sign() * (1 + (gap.abs() - 1) % limit)
        target_index = batch["source_index"] + new_gap
        targets, known, tracked = [], [], []
        pairs = zip(batch["clip"].tolist(), batch["source_index"].tolist(), target_index.tolist(), strict=True)
        for clip, source, target in pairs:
            targets.append(self.train_frames[clip][target])
            known.append(self._relative(self.known[clip], source, target))
            tracked.append(self._relative(self.tracked[clip], source, target))
        device = batch["target"].device
        batch.update(
            target=torch.stack(targets).to(device),
            target_index=target_index,
            gap=new_gap,
            affine=torch.stack(known).to(device),
            tracked=torch.stack(tracked).to(device),
        )
        return batch

    @staticmethod
    def _relative(table: torch.Tensor | None, source: int, target: int) -> torch.Tensor:
        return torch.eye(2, 3) if table is None else relative_affine(table, source, target).float()

    def warm_start_weight(self, step: int) -> float:
        """How far the label-free warm start still is from over at `step`: 1 for the first half of
        `data.warm_start_steps`, then fading linearly to 0 by its end; 0 without tracking or for `known`."""
        warm = self.config.data.warm_start_steps
        if self.config.variant == "known" or warm == 0:
            return 0.0
        return min(1.0, max(0.0, 2.0 - 2.0 * step / warm))

    def training_loss(self, model, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss of a batch of pairs and named float logs (`losses.motion_loss`, plus `max_gap`).

        Label-free variants with tracking give the model the tracked affines as a guide (each pair's
        layers learn from the better of tracked and predicted motion, `MotionModel.forward`), and pull
        their predictor to the tracked affines with weight `loss.tracked` at the start, fading to
        `loss.tracked_prior` over the warm start (`warm_start_weight`): a teacher while the predictor
        knows nothing, then an anchor that keeps it from leaving the character.
        """
        batch = self._apply_curriculum(batch, step)
        known = batch["affine"] if self.config.variant == "known" else None
        has_tracks = self.config.variant != "known" and self.tracked[0] is not None
        out = model(batch["source"], batch["target"], batch["clip"], known, batch["tracked"] if has_tracks else None)
        warm = self.warm_start_weight(step)
        tracked = 0.0
        if has_tracks:
            tracked = warm * self.config.loss.tracked + (1 - warm) * self.config.loss.tracked_prior
        loss, logs = motion_loss(out, batch, self.config.loss, step, tracked, warm)
        logs["max_gap"] = float(self.max_gap_at(step))
        return loss, logs

    @torch.no_grad()
    def preview(self, model: MotionModel, batch: dict) -> torch.Tensor:
        """(3, 5 * S, n * S) grid for up to 4 pairs of `batch`; columns are pairs, rows: source, target,
        render, alpha, plate."""
        count = min(4, batch["source"].shape[0])
        part = {key: value[:count] for key, value in batch.items()}
        known = part["affine"] if self.config.variant == "known" else None
        out = model(part["source"], part["target"], part["clip"], known)
        rows = [part["source"], part["target"], out["frame"], out["alpha"].expand(-1, 3, -1, -1), out["background"]]
        grid = torch.stack(rows)  # (5, n, 3, S, S)
        rows_count, columns, channels, size, _ = grid.shape
        grid = grid.permute(2, 0, 3, 1, 4).reshape(channels, rows_count * size, columns * size)
        return grid.clamp(0, 1).cpu()

    def artifact(self, model: MotionModel) -> dict:
        """What inference needs without the clips (`infer.clip_artifact` per clip), JSON-able + tensors."""
        model.eval()
        clips = [
            infer.clip_artifact(model, clip, index, self.config.infer, self.known[index], self.tracked[index])
            for index, clip in enumerate(self.clips)
        ]
        return {"variant": self.config.variant, "train_size": self.config.data.size, "clips": clips}
