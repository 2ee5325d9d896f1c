"""Reader for scene3d data sets in the reference format: pairs of views of one scene, with poses and times.

Format (Equivariant Neural Rendering's ShapeNet/mountains data read unchanged, and `dataset_writer.py`):

    SPLIT/<scene>/NNNNN.png            RGB (an alpha channel is dropped, as the reference does)
    SPLIT/<scene>/render_params.json   {"NNNNN": {"azimuth": deg, "elevation": deg, "temporal": int}}

`temporal` is optional (0 when absent); other keys are ignored. An image `X.png` is matched to the key
`X`, or to the last five characters of `X` (the reference's rule). Splits are sibling folders
(`DATA-train`, `DATA-val`, `DATA-test`) or subfolders (`DATA/train`, ...); see `resolve_split`.

Decisions where the reference is loose:
* Scenes may have different numbers of views, even or odd (the reference assumes one count and
  silently drops images beyond the first scene's count); pairs are always drawn within one scene.
* Every image must be listed in the JSON and every listed view must have its image (the reference
  fails with a KeyError, or ignores the extra entries); a scene needs at least 2 views.
* Images are centre-cropped to a square (the reference crops 128 x 128, which is the same for its
  128-px data; pass `crop=128` to match it exactly on other sizes), then resized to `size` if given.

Pairs: view a runs over every view that has a partner; view b is drawn uniformly from the other views
of the same scene whose time differs by at most `max_gap` (temporal data) or that share a's time
(`temporal=False`, which treats each time step as its own rigid scene, as in the write-up's baseline).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from PIL import Image

from vidrender.errors import UserError
from vidrender.io.json_file import read_json

SPLITS = ("train", "val", "test")
PARAMS_FILE = "render_params.json"


@dataclass
class SceneViews:
    """The views of one scene. Angles in degrees; `images` is `(N, 3, H, W)` uint8 once loaded."""

    name: str
    paths: list[Path]
    azimuth: torch.Tensor  # (N,) float32
    elevation: torch.Tensor  # (N,) float32
    time: torch.Tensor  # (N,) int64, 0 where the JSON has no "temporal"
    images: torch.Tensor | None = None


def resolve_split(data: str | os.PathLike, split: str) -> Path:
    """Folder of split `split` ("train", "val" or "test") of data set `data`.

    Looks for, in order: `data` itself if it is named `split` or `*-split`; `data/split`; `data-split`;
    the sibling split of a split folder (`X-train` -> `X-val`, `X/train` -> `X/val`); finally `data`
    itself if it directly holds scenes (a folder of scenes given explicitly serves every split).
    """
    data = Path(data)
    candidates = []
    if data.name == split or data.name.endswith(f"-{split}"):
        candidates.append(data)
    candidates += [data / split, data.with_name(f"{data.name}-{split}")]
    for other in SPLITS:
        if data.name == other:
            candidates.append(data.with_name(split))
        elif data.name.endswith(f"-{other}"):
            candidates.append(data.with_name(data.name[: -len(other)] + split))
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    if data.is_dir() and (_has_params(data) or any(_has_params(child) for child in _subfolders(data))):
        return data
    tried = ", ".join(dict.fromkeys(str(candidate) for candidate in candidates))
    raise UserError(f"no {split} split for data set {data}: looked for {tried}")


def _has_params(folder: Path) -> bool:
    return (folder / PARAMS_FILE).is_file()


def _subfolders(folder: Path) -> list[Path]:
    return sorted(child for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))


def _is_png(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".png"


def _number(value, what: str) -> float:
    if isinstance(value, bool):
        raise UserError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{what} must be a number, got {str(value)[:40]}") from None
    if not math.isfinite(number):
        raise UserError(f"{what} must be finite, got {value!r}")
    return number


def _read_params(params_path: Path) -> dict[str, tuple[float, float, int]]:
    """Parse and check a render_params.json -> {key: (azimuth, elevation, time)}."""
    params = read_json(params_path)  # one reader for every JSON file: byte-order mark, FIFOs, bad bytes
    if not isinstance(params, dict):
        raise UserError(f'{params_path}: expected an object {{"NNNNN": {{"azimuth": ...}}}}, got a list/value')
    views = {}
    for key, entry in params.items():
        if not isinstance(entry, dict):
            raise UserError(f"{params_path}: entry {key!r} must be an object with azimuth and elevation")
        for needed in ("azimuth", "elevation"):
            if needed not in entry:
                raise UserError(f"{params_path}: entry {key!r} has no {needed!r}")
        azimuth = _number(entry["azimuth"], f"{params_path}: {key}.azimuth")
        elevation = _number(entry["elevation"], f"{params_path}: {key}.elevation")
        time = _number(entry.get("temporal", 0), f"{params_path}: {key}.temporal")
        if time != int(time):
            raise UserError(f"{params_path}: {key}.temporal must be a whole time step, got {entry['temporal']!r}")
        views[key] = (azimuth, elevation, int(time))
    return views


def _scan_scene(folder: Path) -> SceneViews:
    params_path = folder / PARAMS_FILE
    params = _read_params(params_path)
    images = sorted(path for path in folder.iterdir() if _is_png(path))
    matched: dict[str, Path] = {}
    unlisted = []
    for path in images:
        key = path.stem if path.stem in params else path.stem[-5:]
        if key in params and key not in matched:
            matched[key] = path
        else:
            unlisted.append(path.name)
    if unlisted:
        raise UserError(f"{folder}: images not listed in {PARAMS_FILE}: {_first(unlisted)}")
    missing = [key for key in params if key not in matched]
    if missing:
        raise UserError(f"{params_path} lists views without an image in {folder}: {_first(missing)}")
    if len(matched) < 2:
        raise UserError(f"{folder}: a scene needs at least 2 views, found {len(matched)}")
    keys = sorted(matched)
    return SceneViews(
        name=folder.name,
        paths=[matched[key] for key in keys],
        azimuth=torch.tensor([params[key][0] for key in keys], dtype=torch.float32),
        elevation=torch.tensor([params[key][1] for key in keys], dtype=torch.float32),
        time=torch.tensor([params[key][2] for key in keys], dtype=torch.int64),
    )


def _first(names: list[str], count: int = 3) -> str:
    more = f" and {len(names) - count} more" if len(names) > count else ""
    return ", ".join(names[:count]) + more


def scan_split(split_dir: str | os.PathLike) -> list[SceneViews]:
    """Check a split folder and list its scenes (sorted by folder name) without loading images.

    `split_dir` holds scene folders, or is itself one scene folder (it has a render_params.json).
    Raises `UserError` naming the folder or file for anything malformed.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise UserError(f"data set folder {split_dir} does not exist")
    if _has_params(split_dir):
        return [_scan_scene(split_dir)]
    scenes = []
    for child in _subfolders(split_dir):
        if _has_params(child):
            scenes.append(_scan_scene(child))
        elif any(_is_png(path) for path in child.iterdir()):
            raise UserError(f"{child}: has images but no {PARAMS_FILE}")
    if not scenes:
        nested = [child.name for child in _subfolders(split_dir) if any(map(_has_params, _subfolders(child)))]
        hint = f" (its subfolders {', '.join(nested)} are splits: pass one of them)" if nested else ""
        raise UserError(f"{split_dir} is not a scene data set: no {PARAMS_FILE} in it or its subfolders{hint}")
    return scenes


def load_image(path: Path, size: int | None = None, crop: int | None = None) -> torch.Tensor:
    """Read a PNG as uint8 `(3, H, W)`: RGB, centre-cropped to a square (or to `crop`), resized to `size`."""
    try:
        with Image.open(path) as image:
            pixels = TF.pil_to_tensor(image.convert("RGB"))
    except (OSError, Image.DecompressionBombError) as error:  # PIL refuses images over ~179 Mpixel
        raise UserError(f"{path}: cannot be read as an image ({error})") from None
    side = min(pixels.shape[-2:]) if crop is None else crop
    pixels = TF.center_crop(pixels, [side, side])
    if size is not None and size != side:
        pixels = TF.resize(pixels, [size, size], antialias=True)
    return pixels


def _load_images(paths: list[Path], size: int | None, crop: int | None) -> torch.Tensor:
    """Decode images into one uint8 `(N, 3, H, W)` tensor; they must come out the same size."""
    images = [load_image(path, size, crop) for path in paths]
    _check_one_size(paths, [tuple(image.shape[-2:]) for image in images])
    return torch.stack(images)


def _check_one_size(paths: list[Path], sizes: list[tuple[int, int]]) -> None:
    if len(set(sizes)) > 1:
        odd = next(path for path, size in zip(paths, sizes, strict=True) if size != sizes[0])
        raise UserError(
            f"{odd} is {sizes[paths.index(odd)]} pixels after cropping but {paths[0]} is {sizes[0]};"
            " choose a size to resize every image to"
        )


def load_views(split_dir: str | os.PathLike, size: int | None = None, crop: int | None = None) -> list[SceneViews]:
    """Every scene of a split with its images loaded (`images` uint8 `(N, 3, H, W)`), for evaluation."""
    scenes = scan_split(split_dir)
    for scene in scenes:
        scene.images = _load_images(scene.paths, size, crop)
    return scenes


class SceneDataset(torch.utils.data.Dataset):
    """Pairs of views of one scene from a split folder, for ENR training (see the module docstring).

    Item i is a dict: `image_a`, `image_b` float32 `(3, H, W)` in [0, 1]; `azimuth_a`, `elevation_a`,
    `azimuth_b`, `elevation_b` float32 scalars in degrees; `time_a`, `time_b` int64 scalars (0 without
    times). View a is the i-th view that has a partner (`anchors[i]`, an index into `paths`, whose scene
    is `scenes[scene_index[anchors[i]]]`); view b is another view of that scene.

    size: resize to size x size (None: keep); temporal: pair views across times with |t_b - t_a| <=
    max_gap (None: any gap) instead of only at equal times; fixed_pairs: partner of item i drawn from
    `seed` and i (the same every epoch, for validation) instead of the global torch RNG. Images are
    decoded once into a uint8 tensor when they take at most `preload_bytes`, else on every access.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        size: int | None = None,
        temporal: bool = False,
        max_gap: int | None = None,
        crop: int | None = None,
        fixed_pairs: bool = False,
        seed: int = 0,
        preload_bytes: int = 2**30,
    ):
        if max_gap is not None and max_gap < 0:
            raise UserError(f"max_gap must be 0 or more, got {max_gap}")
        self.scenes = scan_split(root)
        self.size, self.crop, self.fixed_pairs, self.seed = size, crop, fixed_pairs, seed
        self.paths = [path for scene in self.scenes for path in scene.paths]
        self.azimuth = torch.cat([scene.azimuth for scene in self.scenes])
        self.elevation = torch.cat([scene.elevation for scene in self.scenes])
        self.time = torch.cat([scene.time for scene in self.scenes])
        self.scene_index = torch.cat([torch.full_like(s.time, i) for i, s in enumerate(self.scenes)])
        self.max_gap = (max_gap if max_gap is not None else math.inf) if temporal else 0
        self._index_partners()

        first = load_image(self.paths[0], size, crop)
        self.image_size = tuple(first.shape[-2:])
        self.images = None
        if len(self.paths) * first.numel() <= preload_bytes:
            self.images = _load_images(self.paths, size, crop)
        elif size is None and crop is None:
            # decoded lazily, so compare sizes from the PNG headers now rather than fail in a batch later
            sides = []
            for path in self.paths:
                with Image.open(path) as image:
                    sides.append((min(image.size),) * 2)
            _check_one_size(self.paths, sides)

    def _index_partners(self) -> None:
        """Per view: the range `[low, high)` of its candidate partners in `order` (itself included)."""
        span = int(self.time.max() - self.time.min())
        gap = min(self.max_gap, span)
        # one sortable key per view: scenes far apart, times in order within a scene, so a view's
        # partners (same scene, |dt| <= gap) are one contiguous range of the sorted keys
        keys = self.scene_index * (span + 2 * gap + 1) + (self.time - self.time.min())
        self.order = torch.argsort(keys, stable=True)
        sorted_keys = keys[self.order]
        self.low = torch.searchsorted(sorted_keys, keys - gap)
        self.high = torch.searchsorted(sorted_keys, keys + gap, right=True)
        self.position = torch.empty_like(self.order)
        self.position[self.order] = torch.arange(len(self.order))
        has_partner = self.high - self.low >= 2
        for index, scene in enumerate(self.scenes):
            if not has_partner[self.scene_index == index].any():
                limit = "at the same time step" if self.max_gap == 0 else f"within {self.max_gap} time steps"
                raise UserError(f"scene {scene.name}: no two views {limit}, so no training pairs")
        self.anchors = torch.nonzero(has_partner).squeeze(1)

    @property
    def largest_gap(self) -> int:
        """The largest |t_b - t_a| a pair can have (size the model's temporal latent from it)."""
        return int(min(self.max_gap, self.time.max() - self.time.min()))

    def __len__(self) -> int:
        return len(self.anchors)

    def _image(self, view: int) -> torch.Tensor:
        pixels = self.images[view] if self.images is not None else load_image(self.paths[view], self.size, self.crop)
        return pixels.float() / 255

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        a = int(self.anchors[item])
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + item) if self.fixed_pairs else None
        low, high = int(self.low[a]), int(self.high[a])
        # draw among the range without a itself: skip over a's own position
        k = int(torch.randint(low, high - 1, (), generator=generator))
        if k >= self.position[a]:
            k += 1
        b = int(self.order[k])
        return {
            "image_a": self._image(a),
            "image_b": self._image(b),
            "azimuth_a": self.azimuth[a],
            "elevation_a": self.elevation[a],
            "azimuth_b": self.azimuth[b],
            "elevation_b": self.elevation[b],
            "time_a": self.time[a],
            "time_b": self.time[b],
        }
