"""Write scene3d data sets of procedural objects in the reference format (Equivariant Neural Rendering).

Layout written for `root = DIR` (the format `data.py` reads, and the reference code reads unchanged):

    DIR-train/<scene>/00000.png, 00001.png, ...   RGB, size x size, plain white background
    DIR-train/<scene>/render_params.json           {"00000": {"azimuth": deg, "elevation": deg,
    DIR-val/...  DIR-test/...                                  "temporal": t}, ...}  (temporal: bend only)

Views: azimuth U[0, 360), elevation U[-90, 90] degrees (uniform in degrees, as the reference data;
camera convention in `raymarch.py`), camera radius 25.

* `bend` (temporal): one scene folder `bend` per split; `views` views at each timestep of the split.
  Timesteps are split as in the temporal write-up: with T = 20, validation {5, 10}, test {9, 16}, the
  rest training. Other T keep the same fractions of T (validation 0.25 T and 0.5 T, test 0.45 T and
  0.8 T, rounded, moved to the nearest free timestep on a clash); below T = 8 only one timestep per held-out
  split (0.25 T and 0.45 T). At least 3 timesteps are needed. See `temporal_split`.
* rigid objects (`chair`, `mug`): `scenes` random objects of `views` views each, split by scene:
  10 % validation, 10 % test (at least one each), the rest training. See `scene_split`.

The split folders are written under temporary names and renamed into place together once all three are
complete: an error or Ctrl-C leaves nothing. Everything is drawn from `seed`, so the same arguments give
the same data set.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from vidrender.errors import UserError
from vidrender.io.atomic import atomic_path
from vidrender.pipelines.scene3d.objects import OBJECT_NAMES, make_object
from vidrender.pipelines.scene3d.raymarch import render_views

SPLITS = ("train", "val", "test")
# the scene folders `write_dataset` puts in a split folder (`dataset --overwrite` replaces only such splits)
SCENE_NAME = re.compile(r"bend|[a-z]+_\d{5}")
# Held-out timesteps as fractions of T; at T = 20 they are the write-up's {5, 10} and {9, 16}.
HELD_OUT_FRACTIONS = {"val": (0.25, 0.5), "test": (0.45, 0.8)}
DEFAULT_RIGID_SCENES = 30
# Views rendered per call: large enough to amortise per-step overhead, small enough for little memory.
RENDER_BATCH = 32


def temporal_split(timesteps: int) -> dict[str, list[int]]:
    """Timesteps of each split for a temporal data set of `timesteps` steps (see the module docstring)."""
    if timesteps < 3:
        raise UserError(f"--timesteps must be at least 3 (one per split), got {timesteps}")
    per_split = 2 if timesteps >= 8 else 1
    taken: dict[str, list[int]] = {"val": [], "test": []}
    used: set[int] = set()
    for split, fractions in HELD_OUT_FRACTIONS.items():
        for fraction in fractions[:per_split]:
            wanted = int(fraction * timesteps + 0.5) % timesteps
            chosen = min((step for step in range(timesteps) if step not in used), key=lambda s: (abs(s - wanted), s))
            used.add(chosen)
            taken[split].append(chosen)
    train = [step for step in range(timesteps) if step not in used]
    return {"train": train, "val": sorted(taken["val"]), "test": sorted(taken["test"])}


def scene_split(scenes: int) -> dict[str, list[int]]:
    """Scene indices of each split for `scenes` rigid objects: 10 % val, 10 % test (>= 1 each), rest train."""
    if scenes < 3:
        raise UserError(f"--scenes must be at least 3 (one per split), got {scenes}")
    held_out = max(1, round(0.1 * scenes))
    train = scenes - 2 * held_out
    return {
        "train": list(range(train)),
        "val": list(range(train, train + held_out)),
        "test": list(range(train + held_out, scenes)),
    }


def _random_angles(seed_words: list[int], count: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed_words)
    return rng.uniform(0.0, 360.0, count), rng.uniform(-90.0, 90.0, count)


def _scene_plan(object_name: str, views: int, timesteps: int, scenes: int | None, seed: int):
    """Per split: a list of scenes `(name, object, [(time or None, azimuths, elevations), ...])`."""
    if object_name == "bend":
        if scenes not in (None, 1):
            raise UserError("--scenes applies to rigid objects; the bend data set has one scene")
        bar = make_object("bend", timesteps=timesteps)
        return {
            split: [("bend", bar, [(step, *_random_angles([seed, step], views)) for step in steps])]
            for split, steps in temporal_split(timesteps).items()
        }
    plan = {}
    for split, indices in scene_split(DEFAULT_RIGID_SCENES if scenes is None else scenes).items():
        plan[split] = []
        for index in indices:
            object_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
            obj = make_object(object_name, seed=object_seed)
            plan[split].append((f"{object_name}_{index:05d}", obj, [(None, *_random_angles([seed, index, 1], views))]))
    return plan


def _save_png(image: torch.Tensor, path: Path) -> None:
    """Save a float `(3, H, W)` image in [0, 1] as an 8-bit RGB PNG."""
    pixels = (image * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(pixels, mode="RGB").save(path, format="PNG", compress_level=4)


def split_folders(root: str | os.PathLike) -> dict[str, Path]:
    """{split: folder} of data set `root`: ROOT-train, ROOT-val, ROOT-test beside each other."""
    root = Path(root)
    if not root.name or root.name in (".", ".."):
        raise UserError(f"data set name {str(root)!r} needs a final folder name to add -train/-val/-test to")
    return {split: root.with_name(f"{root.name}-{split}") for split in SPLITS}


def write_dataset(
    root: str | os.PathLike,
    object: str = "bend",  # named like the CLI option --object
    views: int = 200,
    timesteps: int = 20,
    size: int = 128,
    scenes: int | None = None,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    antialias: int = 2,
) -> dict[str, Path]:
    """Render a data set to `<root>-train`, `<root>-val`, `<root>-test`; returns {split: folder}.

    object: one of `OBJECT_NAMES`; views: views per timestep (bend) or per scene (rigid); timesteps:
    T of the bend (ignored for rigid objects); size: image side in pixels; scenes: rigid objects in
    total (default 30); antialias: samples per side in edge pixels (see `render_views`). Existing split
    folders are replaced only with `overwrite`.
    """
    if object not in OBJECT_NAMES:
        raise UserError(f"unknown object {object!r}; choose one of {', '.join(OBJECT_NAMES)}")
    if views < 2:
        raise UserError(f"--views must be at least 2 (training uses pairs of views), got {views}")
    if size < 8:
        raise UserError(f"--size must be at least 8 pixels, got {size}")
    folders = split_folders(root)
    existing = [str(folder) for folder in folders.values() if folder.exists()]
    if existing and not overwrite:
        raise UserError(f"{', '.join(existing)} already exist; choose another name or replace them with --overwrite")
    plan = _scene_plan(object, views, timesteps, scenes, seed)
    total = sum(len(azimuths) for scenes_ in plan.values() for _, _, groups in scenes_ for _, azimuths, _ in groups)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    # all splits are built under temporary names and renamed into place only once every one is complete
    with contextlib.ExitStack() as splits, Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(f"rendering {object}", total=total)
        for split, split_scenes in plan.items():
            bar.update(task, description=f"rendering {object} {split}")
            split_dir = splits.enter_context(atomic_path(folders[split], is_dir=True))
            for scene_name, obj, groups in split_scenes:
                _write_scene(split_dir / scene_name, obj, groups, size, antialias, lambda n: bar.advance(task, n))
    return folders


def _write_scene(scene_dir: Path, obj, groups, size: int, antialias: int, advance) -> None:
    """Render one scene's views (`groups` of (time, azimuths, elevations)) as PNGs + render_params.json."""
    scene_dir.mkdir()
    params: dict[str, dict] = {}
    for time, azimuths, elevations in groups:
        for start in range(0, len(azimuths), RENDER_BATCH):
            batch = slice(start, start + RENDER_BATCH)
            angles = torch.from_numpy(azimuths[batch]), torch.from_numpy(elevations[batch])
            images = render_views(obj, *angles, size, time, antialias)
            for image, azimuth, elevation in zip(images, azimuths[batch], elevations[batch], strict=True):
                key = f"{len(params):05d}"
                _save_png(image, scene_dir / f"{key}.png")
                params[key] = {"azimuth": float(azimuth), "elevation": float(elevation)}
                if time is not None:
                    params[key]["temporal"] = int(time)
            advance(len(images))
    (scene_dir / "render_params.json").write_text(json.dumps(params, indent=1))
