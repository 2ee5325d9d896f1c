"""Typed configs: dataclass schemas, YAML files and command-line overrides, merged by OmegaConf.

Every pipeline describes its settings as a dataclass (fields with types and defaults). A run's config is
the schema's defaults, then a YAML file, then `key.sub=value` overrides, merged by OmegaConf structured
configs, so an unknown key or a value of the wrong type is an error naming the key, never silently
ignored. OmegaConf's YAML loader reads `3e-4` as a float (plain PyYAML would read a string).

Values are checked in two places. `load_config` and `from_dict` refuse, for every schema, a float that
is NaN or infinite and an integer beyond int64 (`check_numbers`): NaN slips through every range check
(each comparison with it is False) and would surface as a traceback deep inside torch. Each section then
checks its own ranges in `__post_init__` with the helpers `at_least`, `positive` and `between`, which
refuse NaN too, for configs built in Python.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vidrender.errors import UserError
from vidrender.io.paths import file_problem

Schema = TypeVar("Schema")
# torch keeps counters and seeds as int64: a larger integer overflows there
INT64 = 2**63
# accelerate's set_seed seeds numpy too, whose seeds are 32-bit
MAX_SEED = 2**32 - 1


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
        between("train.lr_final", self.lr_final, 0, 1)
        positive("train.lr", self.lr)
        at_least("train.grad_clip", self.grad_clip, 0)
        between("train.seed", self.seed, 0, MAX_SEED)
        for name in ("steps", "batch_size", "grad_accum", "keep_checkpoints", "log_every"):
            at_least(f"train.{name}", getattr(self, name), 1)
        for name in ("preview_every", "save_every", "num_workers"):  # 0 switches each off
            at_least(f"train.{name}", getattr(self, name), 0)


def at_least(name: str, value: float, low: float) -> None:
    """Refuse `value` (config key `name`) unless it is a finite number >= `low`; NaN is refused."""
    if not low <= value < math.inf:
        raise UserError(f"{name} must be at least {low}, got {value}")


def positive(name: str, value: float) -> None:
    """Refuse `value` unless it is a finite number above 0 (a rate, a scale); NaN is refused."""
    if not 0 < value < math.inf:
        raise UserError(f"{name} must be a number above 0, got {value}")


def between(name: str, value: float, low: float, high: float) -> None:
    """Refuse `value` unless `low <= value <= high` (a fraction, a seed); NaN is refused."""
    if not low <= value <= high:
        raise UserError(f"{name} must be between {low} and {high}, got {value}")


def check_numbers(values: Any, where: str = "") -> None:
    """Refuse a NaN or infinite float, or an integer beyond int64, anywhere in a config's plain values
    (nested dicts and lists, as `OmegaConf.to_container` gives them), naming its key."""
    if isinstance(values, dict):
        for key, value in values.items():
            check_numbers(value, f"{where}.{key}" if where else str(key))
    elif isinstance(values, list):
        for index, value in enumerate(values):
            check_numbers(value, f"{where}[{index}]")
    elif isinstance(values, float) and not math.isfinite(values):
        raise UserError(f"{where} must be a finite number, got {values}")
    elif isinstance(values, int) and not isinstance(values, bool) and not -INT64 <= values < INT64:
        raise UserError(f"{where} must fit in 64 bits (|n| < 2**63), got a number of {values.bit_length()} bits")


def _one_line(err: OmegaConfBaseException) -> str:
    """OmegaConf messages span several lines (full key, object type); keep the first, which says what."""
    return str(err).strip().splitlines()[0]


def load_config(schema: type[Schema], yaml_path: str | Path | None = None, overrides: list[str] = ()) -> Schema:
    """Build a `schema` instance from its defaults, an optional YAML file and `a.b=value` overrides.

    Raises `UserError` for a missing/unparsable file, an unknown key, a value of the wrong type, a NaN or
    infinite number, a value out of its key's range, or an override not written as `key=value`.
    """
    try:
        merged = OmegaConf.structured(schema)
        if yaml_path is not None:
            path = Path(yaml_path)
            problem = file_problem(path)
            if problem is not None:  # a FIFO would block the read; say what it is instead of "no such file"
                raise UserError(f"config {path}: {problem}")
            try:
                from_file = OmegaConf.load(path)
            except Exception as err:  # yaml.YAMLError and friends: the file is not valid YAML
                raise UserError(f"config {path}: not valid YAML ({str(err).splitlines()[0]})") from None
            merged = _merge(merged, from_file, f"config {path}")
        for item in overrides:
            merged = _merge(merged, _override(item), f"override {_short(item)}")
        return _checked_object(merged, "config")
    except OmegaConfBaseException as err:
        raise UserError(f"config: {_one_line(err)}") from None


def _override(item: str):
    """One `key=value` override as a config; the value is read as YAML (a number, a list, a string)."""
    if "=" not in item:
        raise UserError(f"override {_short(item)}: write it as key=value, e.g. train.steps=200")
    try:
        return OmegaConf.from_dotlist([item])
    except OmegaConfBaseException as err:
        raise UserError(f"override {_short(item)}: {_one_line(err)}") from None
    except (ValueError, yaml.YAMLError) as err:  # an integer of over 4300 digits, broken YAML such as `[1`
        raise UserError(f"override {_short(item)}: not a value ({str(err).splitlines()[0][:80]})") from None


def _short(item: str) -> str:
    """An override quoted for a message, cut so that the message stays one readable line."""
    return repr(item) if len(item) <= 60 else repr(item[:57] + "...")


def _checked_object(merged, where: str):
    """The dataclass instance of a merged config, once every number in it is finite (`check_numbers`);
    the schema's own `__post_init__` checks run while it is built."""
    try:
        check_numbers(OmegaConf.to_container(merged, resolve=True))
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
    return OmegaConf.to_object(merged)


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
        return _checked_object(_merge(OmegaConf.structured(schema), OmegaConf.create(values), where), where)
    except OmegaConfBaseException as err:
        raise UserError(f"{where}: {_one_line(err)}") from None
