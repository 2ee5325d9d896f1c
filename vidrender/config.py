"""Typed configs: dataclass schemas, YAML files and command-line overrides, merged by OmegaConf.

Every pipeline describes its settings as a dataclass (fields with types and defaults). A run's config is
the schema's defaults, then a YAML file, then `key.sub=value` overrides, merged by OmegaConf structured
configs, so an unknown key or a value of the wrong type is an error naming the key, never silently
ignored. OmegaConf's YAML loader reads `3e-4` as a float (plain PyYAML would read a string).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vidrender.errors import UserError

Schema = TypeVar("Schema")


@dataclasses.dataclass
class TrainConfig:
    """Settings of the shared training loop (`vidrender/train.py`), common to every pipeline."""

    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-3
    lr_schedule: str = "constant"  # "constant" | "cosine": decays from lr to lr * lr_final over the run
    lr_final: float = 0.1  # cosine: the last step's rate as a fraction of lr
    grad_accum: int = 1  # gradient accumulation steps; effective batch = batch_size * grad_accum * processes
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16" (accelerate)
    seed: int = 0
    log_every: int = 25
    preview_every: int = 250  # 0 disables preview images
    save_every: int = 500  # training-state checkpoints for --resume; 0 saves only at the end
    keep_checkpoints: int = 2
    num_workers: int = 0
    tensorboard: bool = True  # used only when the tensorboard package is installed

    def __post_init__(self) -> None:
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise UserError(f"train.mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise UserError(f"train.lr_schedule must be constant or cosine, got {self.lr_schedule!r}")
        if not 0 <= self.lr_final <= 1:
            raise UserError(f"train.lr_final must be between 0 and 1, got {self.lr_final}")
        for name in ("steps", "batch_size", "grad_accum", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise UserError(f"train.{name} must be at least 1, got {getattr(self, name)}")


def _one_line(err: OmegaConfBaseException) -> str:
    """OmegaConf messages span several lines (full key, object type); keep the first, which says what."""
    return str(err).strip().splitlines()[0]


def load_config(schema: type[Schema], yaml_path: str | Path | None = None, overrides: list[str] = ()) -> Schema:
    """Build a `schema` instance from its defaults, an optional YAML file and `a.b=value` overrides.

    Raises `UserError` for a missing/unparsable file, an unknown key, a value of the wrong type, or an
    override not written as `key=value`.
    """
    try:
        merged = OmegaConf.structured(schema)
        if yaml_path is not None:
            path = Path(yaml_path)
            if not path.is_file():
                raise UserError(f"config {path}: no such file")
            try:
                from_file = OmegaConf.load(path)
            except Exception as err:  # yaml.YAMLError and friends: the file is not valid YAML
                raise UserError(f"config {path}: not valid YAML ({str(err).splitlines()[0]})") from None
            merged = _merge(merged, from_file, f"config {path}")
        for item in overrides:
            if "=" not in item:
                raise UserError(f"override {item!r}: write it as key=value, e.g. train.steps=200")
            merged = _merge(merged, OmegaConf.from_dotlist([item]), f"override {item!r}")
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise UserError(f"config: {_one_line(err)}") from None


def _merge(base, update, where: str):
    try:
        return OmegaConf.merge(base, update)
    except OmegaConfBaseException as err:
        raise UserError(f"{where}: {_one_line(err)}") from None


def to_dict(config: Any) -> dict:
    """A config dataclass as a plain JSON-able dict (what checkpoints store)."""
    return dataclasses.asdict(config)


def from_dict(schema: type[Schema], values: dict, where: str) -> Schema:
    """Rebuild a config stored in a checkpoint, with the same strict checks as `load_config`."""
    try:
        return OmegaConf.to_object(_merge(OmegaConf.structured(schema), OmegaConf.create(values), where))
    except OmegaConfBaseException as err:
        raise UserError(f"{where}: {_one_line(err)}") from None
