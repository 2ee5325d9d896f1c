"""Pipeline `scene3d`'s training task for the shared loop (`vidrender/train.py`): data, model, loss."""

from __future__ import annotations

import torch

from vidrender.pipelines.scene3d.config import Scene3dConfig
from vidrender.pipelines.scene3d.data import SceneDataset, resolve_split
from vidrender.pipelines.scene3d.model import SceneRenderer
from vidrender.pipelines.scene3d.step import preview, training_step


class Scene3dTask:
    """Pairs of views of one scene per item (and, when temporal, of two times within `max_gap`)."""

    name = "scene3d"

    def __init__(self, config: Scene3dConfig, data: str):
        self.config = config
        self.data = resolve_split(data, "train")
        temporal = config.temporal.timesteps > 1
        self.dataset = SceneDataset(
            self.data,
            size=config.model.image_size,
            temporal=temporal,
            max_gap=config.temporal.max_gap if temporal else None,
            seed=config.train.seed,
        )

    def build_model(self) -> SceneRenderer:
        return SceneRenderer.from_config(self.config)

    def build_dataset(self) -> torch.utils.data.Dataset:
        return self.dataset

    def training_loss(self, model, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        return training_step(model, batch, self.config)

    def preview(self, model, batch: dict) -> torch.Tensor:
        return preview(model, batch)

    def artifact(self, model) -> dict:
        """Inference needs only the weights and the config; record which data trained the model."""
        return {"train_data": str(self.data), "scene_shape": list(model.scene_shape)}
