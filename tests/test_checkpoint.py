"""Checkpoint files: round trip, refusals (pipeline, version, not a checkpoint) and no code execution."""

import os
import pickle

import pytest
import torch

from vidrender.errors import UserError
from vidrender.io.checkpoint import FORMAT_VERSION, check_weights, load_checkpoint, save_checkpoint


def _model():
    return torch.nn.Linear(3, 2)


def test_round_trip(tmp_path):
    model = _model()
    artifact = {"plate": torch.rand(3, 4, 4), "fps": 24.0, "clips": [{"name": "a", "size": [4, 4]}]}
    path = save_checkpoint(tmp_path / "m.pt", "motion", {"lr": 0.1}, model.state_dict(), artifact)
    loaded = load_checkpoint(path, "motion")
    assert loaded["format_version"] == FORMAT_VERSION
    assert loaded["config"] == {"lr": 0.1}
    assert torch.equal(loaded["weights"]["weight"], model.weight.detach())
    assert torch.equal(loaded["artifact"]["plate"], artifact["plate"])
    assert loaded["artifact"]["clips"][0]["name"] == "a"
    # the file is a plain dict that torch's safe loader opens by itself
    assert isinstance(torch.load(path, weights_only=True), dict)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind


def test_wrong_pipeline_and_newer_version_are_refused(tmp_path):
    path = save_checkpoint(tmp_path / "s.pt", "scene3d", {}, {}, {})
    with pytest.raises(UserError, match="'scene3d' checkpoint, expected a 'motion'"):
        load_checkpoint(path, "motion")
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, path)
    with pytest.raises(UserError, match="newer"):
        load_checkpoint(path, "scene3d")


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(UserError, match="not a readable"):
        load_checkpoint(text, "motion")
    with pytest.raises(UserError, match="no such"):
        load_checkpoint(tmp_path / "absent.pt", "motion")
    plain = tmp_path / "plain.pt"
    torch.save({"weights": {}}, plain)
    with pytest.raises(UserError, match="not a vidrender checkpoint"):
        load_checkpoint(plain, "motion")


class _RunsCode:
    """Unpickling this would call os.system: a stand-in for a malicious checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    payload = {"format_version": 1, "pipeline": "motion", "config": {}, "weights": {}, "artifact": {}}
    payload["artifact"]["trap"] = _RunsCode(marker)
    torch.save(payload, path)
    # the trap is real: a full unpickle runs the command
    with open(tmp_path / "probe.pkl", "wb") as probe:
        pickle.dump(_RunsCode(marker), probe)
    with open(tmp_path / "probe.pkl", "rb") as probe:
        pickle.load(probe)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UserError, match="refused"):
        load_checkpoint(path, "motion")
    assert not marker.exists()


def test_check_weights_names_the_problem(tmp_path):
    model = _model()
    weights = dict(model.state_dict())
    check_weights(weights, model, "m.pt")
    with pytest.raises(UserError, match="missing"):
        check_weights({"weight": weights["weight"]}, model, "m.pt")
    with pytest.raises(UserError, match="shape"):
        check_weights({**weights, "bias": torch.zeros(5)}, model, "m.pt")
