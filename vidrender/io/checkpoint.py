"""Checkpoint files (`.pt`): plain dicts of tensors and JSON-able values, safe to open.

Layout of every vidrender checkpoint::

    {
      "format_version": int,        # FORMAT_VERSION when written; newer files are refused
      "pipeline": str,              # "motion" | "scene3d"; the wrong pipeline is refused
      "vidrender_version": str,
      "config": dict,               # the run's config, JSON-able
      "weights": {name: Tensor},    # the model's state_dict
      "artifact": dict,             # what inference needs without the training data (per pipeline)
    }

Loading uses `torch.load(weights_only=True)`: the restricted unpickler builds only tensors and plain
containers, so a file that asks to construct any other object (and so could run code) is refused.
Saving is atomic (temp file, then rename).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from vidrender import __version__
from vidrender.errors import UserError
from vidrender.io.atomic import atomic_path

# 2: motion's artifact holds one layer stack per clip (version-1 files are converted when read)
FORMAT_VERSION = 2
REQUIRED_KEYS = ("format_version", "pipeline", "config", "weights", "artifact")


def save_checkpoint(
    path: str | Path, pipeline: str, config: dict, weights: dict[str, torch.Tensor], artifact: dict[str, Any]
) -> Path:
    """Write a checkpoint atomically. Tensors are detached, moved to CPU and made contiguous."""
    payload = {
        "format_version": FORMAT_VERSION,
        "pipeline": pipeline,
        "vidrender_version": __version__,
        "config": config,
        "weights": {name: tensor.detach().cpu().contiguous() for name, tensor in weights.items()},
        "artifact": _to_cpu(artifact),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().contiguous()
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_cpu(item) for item in value]
    return value


def load_checkpoint(path: str | Path, pipeline: str) -> dict[str, Any]:
    """Read and check a checkpoint of `pipeline`; returns the plain dict described in the module doc.

    Raises `UserError` for a missing file, a file that is not a checkpoint, one holding pickled objects
    (refused unexecuted), one of another pipeline, one written by a newer format version, or one whose
    config, weights or artifact is not a dict (weights: of named tensors). The contents of the artifact
    and whether the weights fit a model are the pipeline's to check (`check_weights`).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" in str(err) or "global" in str(err):
            # the restricted unpickler met an instruction to import and call something: never run it
            raise UserError(f"{path}: refused, it holds pickled objects that could run code") from None
        raise UserError(f"{path}: not a readable vidrender checkpoint (corrupt pickle)") from None
    except Exception as err:  # torch.load raises assorted types (KeyError, RuntimeError, EOFError) on garbage
        reason = (str(err).splitlines() or [type(err).__name__])[0][:160]
        raise UserError(f"{path}: not a readable vidrender checkpoint ({reason})") from None
    if not isinstance(payload, dict) or any(key not in payload for key in REQUIRED_KEYS):
        raise UserError(f"{path}: not a vidrender checkpoint (missing {', '.join(REQUIRED_KEYS)})")
    version = payload["format_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise UserError(f"{path}: not a vidrender checkpoint (format_version {str(version)[:20]!r} is not 1, 2, ...)")
    if version > FORMAT_VERSION:
        raise UserError(
            f"{path}: checkpoint format version {version} is newer than this vidrender reads "
            f"({FORMAT_VERSION}); upgrade vidrender"
        )
    if payload["pipeline"] != pipeline:
        raise UserError(f"{path}: this is a '{str(payload['pipeline'])[:40]}' checkpoint, expected a '{pipeline}' one")
    _check_layout(payload, path)
    return payload


def _check_layout(payload: dict, path: Path) -> None:
    """The containers every pipeline relies on have their documented types (an edited file may not)."""
    for key in ("config", "artifact", "weights"):
        if not isinstance(payload[key], dict):
            raise UserError(f"{path}: damaged checkpoint, '{key}' is a {type(payload[key]).__name__}, not a dict")
    bad = [str(name)[:60] for name, tensor in payload["weights"].items()
           if not isinstance(name, str) or not isinstance(tensor, torch.Tensor)]
    if bad:
        raise UserError(f"{path}: damaged checkpoint, weights must be named tensors (not: {', '.join(bad[:3])})")


def check_weights(weights: dict[str, torch.Tensor], model: torch.nn.Module, path: str | Path) -> None:
    """Refuse weights with missing, unexpected or wrongly shaped tensors before loading them."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise UserError(
            f"{path}: weights do not match the model (missing: {missing[:3]}, unexpected: {unexpected[:3]})"
        )
    for name, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor) or tensor.shape != expected[name].shape:
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise UserError(f"{path}: weight {name} has shape {shape}, the model needs {tuple(expected[name].shape)}")
