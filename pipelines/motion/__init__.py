"""Pipeline `motion`: take a clip apart into a layer stack (a background, characters moving by affines)
with an affine-equivariant model, and put layers of different clips together.

The Python API (imported on first use, so that `vidrender --help` does not pay for torch)::

    fit(clips, config, run_dir) -> Decomposition      pipeline.py
    load(path) -> Decomposition; load_stack(path)     decomposition.py (a .pt, or an export folder)
    compose(character, background, ...) -> frames     composing.py
    LayerStack, MotionConfig, load_clips              stack.py, config.py, inputs.py
"""

from __future__ import annotations

import importlib

_API = {
    "fit": "pipeline", "Decomposition": "decomposition", "load": "decomposition", "load_stack": "decomposition",
    "compose": "composing", "LayerStack": "stack", "MotionConfig": "config", "load_clips": "inputs",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
