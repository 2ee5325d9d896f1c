"""Config loading: defaults, YAML, overrides, and strict refusal of unknown keys and wrong types."""

import dataclasses

import pytest

from vidrender.config import TrainConfig, from_dict, load_config, to_dict
from vidrender.errors import UserError


@dataclasses.dataclass
class Model:
    channels: int = 16
    name: str = "small"


@dataclasses.dataclass
class Schema:
    model: Model = dataclasses.field(default_factory=Model)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


def test_defaults_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  channels: 32\ntrain:\n  lr: 3e-4\n  steps: 50\n")
    config = load_config(Schema, path, ["train.steps=7", "model.name=big"])
    assert config.model.channels == 32
    assert config.train.steps == 7  # the override wins over the file
    assert config.model.name == "big"
    assert isinstance(config.train.lr, float) and config.train.lr == pytest.approx(3e-4)
    assert config.train.batch_size == TrainConfig().batch_size


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.lrr=0.1"], "lrr"),
        (["train.steps=many"], "many"),
        (["steps"], "key=value"),
        (["train.mixed_precision=fp8"], "mixed_precision"),
        (["train.batch_size=0"], "batch_size"),
    ],
)
def test_bad_overrides_are_one_line_errors(overrides, message):
    with pytest.raises(UserError, match=message) as info:
        load_config(Schema, None, overrides)
    assert "\n" not in str(info.value)


def test_unknown_key_in_file_is_refused(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("trian:\n  steps: 3\n")
    with pytest.raises(UserError, match="trian"):
        load_config(Schema, path)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_config(Schema, tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [1\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(Schema, broken)


def test_dict_round_trip_is_strict():
    config = load_config(Schema, None, ["model.channels=8"])
    assert from_dict(Schema, to_dict(config), "checkpoint") == config
    with pytest.raises(UserError, match="extra"):
        from_dict(Schema, {**to_dict(config), "extra": 1}, "checkpoint")
