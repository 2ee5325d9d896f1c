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

"Safe to open" also means bounded: a few hundred bytes must not cost gigabytes. Three holes remain in
torch's safe loader, and each is closed before anything uses the file:
- it builds some objects vidrender never writes at whatever size the file declares (`bytearray(10**10)`
  fills 10 GB with zeros inside `torch.load`), and it inflates compressed zip entries: so the archive
  must be uncompressed and its pickle may name only what `torch.save` writes for a dict of tensors
  (`_check_archive`, before `torch.load`);
- a tensor is a view (size, stride, offset) of its storage, so one stored value with zero strides can
  declare 3 x 200000 x 200000 values, and several entries can view the same values: every tensor must be
  contiguous, backed value for value by its storage, of a dtype vidrender writes and no larger than an
  RGBA frame at the reader's limit, and no two tensors may share values (`_check_contents`, after);
- containers can be listed many times over or inside themselves, which multiplies the work of every
  reader: the contents may not hold more references than the pickle has instructions.
"""

from __future__ import annotations

import math
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Any

import torch

from vidrender import __version__
from vidrender.errors import UserError
from vidrender.io.atomic import atomic_path
from vidrender.io.paths import require_file
from vidrender.io.video import DEFAULT_MAX_PIXELS

# 2: motion's artifact holds one layer stack per clip (version-1 files are converted when read)
FORMAT_VERSION = 2
REQUIRED_KEYS = ("format_version", "pipeline", "config", "weights", "artifact")
# What vidrender's writers store: float weights and layers (in any float width a model trains in), int64
# and int32 counters and indices, uint8 mattes (format version 1), bool masks
TENSOR_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.uint8,
                 torch.bool)
# The largest tensor a vidrender writer makes is an RGBA layer of a frame at the video reader's limit
MAX_TENSOR_VALUES = 4 * DEFAULT_MAX_PIXELS
# The globals `torch.save` pickles for a dict of tensors: the rebuild function, the storage classes of the
# standard dtypes (others are refused by dtype, after loading, with a clearer message) and OrderedDict
PICKLE_GLOBALS = frozenset({
    "collections OrderedDict", "torch._utils _rebuild_tensor_v2",
    *(f"torch {kind}Storage" for kind in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char",
                                          "Byte", "Bool", "ComplexFloat", "ComplexDouble")),
})
# Plain values a checkpoint holds besides tensors (its config is JSON-able)
PLAIN_TYPES = (str, int, float, bool, type(None))


def save_checkpoint(
    path: str | Path, pipeline: str, config: dict, weights: dict[str, torch.Tensor], artifact: dict[str, Any]
) -> Path:
    """Write a checkpoint atomically. Tensors are detached, moved to CPU and made contiguous, each with
    values of its own (`load_checkpoint` refuses tensors that share values)."""
    owned: set[int] = set()
    payload = {
        "format_version": FORMAT_VERSION,
        "pipeline": pipeline,
        "vidrender_version": __version__,
        "config": config,
        "weights": {name: _to_cpu(tensor, owned) for name, tensor in weights.items()},
        "artifact": _to_cpu(artifact, owned),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _to_cpu(value: Any, owned: set[int]) -> Any:
    """`value` with its tensors detached, on the CPU and contiguous; a tensor over a storage that `owned`
    (addresses of the storages taken so far) already holds is copied, so that no two share values."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        if tensor.numel() and tensor.untyped_storage().data_ptr() in owned:
            tensor = tensor.clone()
        owned.add(tensor.untyped_storage().data_ptr())
        return tensor
    if isinstance(value, dict):
        return {key: _to_cpu(item, owned) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_cpu(item, owned) for item in value]
    return value


def load_checkpoint(path: str | Path, pipeline: str) -> dict[str, Any]:
    """Read and check a checkpoint of `pipeline`; returns the plain dict described in the module doc.

    Raises `UserError` for a missing file, a file that is not a checkpoint, one holding pickled objects
    (refused unexecuted), one of another pipeline, one written by a newer format version, one whose
    config, weights or artifact is not a dict (weights: of named tensors), or one whose tensors are not
    what vidrender writes (module doc: views declaring more values than they store, other dtypes, more
    than MAX_TENSOR_VALUES values, values shared between tensors). What the artifact's tensors mean and
    whether the weights fit a model are the pipeline's to check (`check_weights`).
    """
    path = Path(path)
    require_file(path, "checkpoint file")
    instructions = _check_archive(path)
    try:
        # mmap stays off: torch then compares each storage record's size with the one the pickle declares
        # before allocating it (a mapped file skips that comparison)
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" in str(err) or "global" in str(err):
            # the restricted unpickler met an instruction to import and call something: never run it
            raise UserError(f"{path}: refused, it holds pickled objects that could run code") from None
        raise UserError(f"{path}: not a readable vidrender checkpoint (corrupt pickle)") from None
    except Exception as err:  # torch.load raises assorted types (KeyError, RuntimeError, EOFError) on garbage
        reason = (str(err).splitlines() or [type(err).__name__])[0][:160]
        raise UserError(f"{path}: not a readable vidrender checkpoint ({reason})") from None
    # before any value is used, even printed: a tensor declaring 10**11 values must not be touched
    _check_contents(payload, path, instructions)
    if not isinstance(payload, dict) or any(key not in payload for key in REQUIRED_KEYS):
        raise UserError(f"{path}: not a vidrender checkpoint (missing {', '.join(REQUIRED_KEYS)})")
    version = payload["format_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise UserError(f"{path}: not a vidrender checkpoint (format_version {_short(version, 20)!r} is not 1, 2, ...)")
    if version > FORMAT_VERSION:
        raise UserError(
            f"{path}: checkpoint format version {_short(version, 20)} is newer than this vidrender reads "
            f"({FORMAT_VERSION}); upgrade vidrender"
        )
    if not isinstance(payload["pipeline"], str) or payload["pipeline"] != pipeline:
        raise UserError(
            f"{path}: this is a '{_short(payload['pipeline'], 40)}' checkpoint, expected a '{pipeline}' one")
    _check_layout(payload, path)
    return payload


def _check_layout(payload: dict, path: Path) -> None:
    """The containers every pipeline relies on have their documented types (an edited file may not)."""
    for key in ("config", "artifact", "weights"):
        if not isinstance(payload[key], dict):
            raise UserError(f"{path}: damaged checkpoint, '{key}' is a {type(payload[key]).__name__}, not a dict")
    bad = [_short(name, 60) for name, tensor in payload["weights"].items()
           if not isinstance(name, str) or not isinstance(tensor, torch.Tensor)]
    if bad:
        raise UserError(f"{path}: damaged checkpoint, weights must be named tensors (not: {', '.join(bad[:3])})")


def _check_archive(path: Path) -> int:
    """Refuse, before `torch.load` runs, a file whose loading alone could take more memory than its size;
    returns how many pickle instructions it holds (the bound on references, `_check_contents`).

    `torch.save` writes an uncompressed zip whose pickle names only PICKLE_GLOBALS. A compressed entry
    inflates (about 1000x for zeros), and the other globals torch's safe loader accepts include objects
    built at a declared size (`bytearray(n)`, legacy tensor constructors, sparse tensors): both are refused.
    """
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            # an entry listed twice could be scanned in one copy and loaded from the other
            if len({entry.filename for entry in entries}) != len(entries):
                raise UserError(f"{path}: not a readable vidrender checkpoint (a zip entry is listed twice)")
            for entry in entries:
                if entry.compress_type != zipfile.ZIP_STORED or entry.file_size > size:
                    raise UserError(f"{path}: damaged checkpoint, zip entry {entry.filename[:60]!r} is compressed "
                                    f"or larger than the file; vidrender writes uncompressed ones")
            pickles = [archive.read(entry) for entry in entries if entry.filename.endswith(".pkl")]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0][:120]
        raise UserError(f"{path}: not a readable vidrender checkpoint (not an intact zip archive: {reason})") from None
    return sum(_pickle_instructions(data, path) for data in pickles)


def _pickle_instructions(data: bytes, path: Path) -> int:
    """The number of instructions in pickle `data`, refusing globals outside PICKLE_GLOBALS (nothing runs:
    `pickletools.genops` only reads)."""
    count, refused = 0, None
    try:
        for opcode, argument, _ in pickletools.genops(data):
            count += 1
            if opcode.name in ("GLOBAL", "STACK_GLOBAL", "INST") and argument not in PICKLE_GLOBALS:
                refused = ".".join(str(argument).split(" ")) if argument else "a global named on the stack"
                break
    except Exception as err:  # genops raises assorted types (ValueError, UnicodeDecodeError, ...) on garbage
        reason = (str(err).splitlines() or [type(err).__name__])[0][:120]
        raise UserError(f"{path}: not a readable vidrender checkpoint (corrupt pickle: {reason})") from None
    if refused is not None:
        raise UserError(f"{path}: refused, it holds pickled objects that could run code or take memory vidrender "
                        f"never writes ({refused[:60]!r})")
    return count


def _check_contents(payload: dict, path: Path, budget: int) -> None:
    """Check every tensor anywhere in `payload` (`_check_tensor`), that every other value is a plain one
    (PLAIN_TYPES, in dicts, lists and tuples), that no two tensors share values, and that the contents hold
    no more references than `budget`, the pickle's instruction count.

    The walk follows references, not objects: a container listed twice is walked twice, as every reader
    after it would. Each reference in a file vidrender wrote costs at least one pickle instruction, so
    only containers listed many times over, or inside themselves, exceed the budget, and the walk stops
    there instead of running on.
    """
    spans = []  # (storage address, first byte, end byte, where) of every tensor holding values
    pending = [(payload, None)]
    visits = 0
    while pending:
        value, where = pending.pop()
        visits += 1
        if visits > budget:
            raise UserError(f"{path}: damaged checkpoint, its containers are listed inside themselves or many "
                            f"times over (more references than its {budget} pickle instructions can list, at "
                            f"{_where(where)})")
        if isinstance(value, torch.Tensor):
            _check_tensor(value, _where(where), path)
            if value.numel():
                start = value.storage_offset() * value.element_size()
                spans.append((value.untyped_storage().data_ptr(), start, start + value.nbytes, where))
        elif isinstance(value, dict):
            strange = [key for key in value if not isinstance(key, PLAIN_TYPES)]
            if strange:  # a tensor as a key would escape this walk
                raise UserError(f"{path}: damaged checkpoint, {_where(where)} has a key of type "
                                f"{type(strange[0]).__name__[:40]}, which vidrender never writes")
            pending.extend((item, (where, key)) for key, item in value.items())
        elif isinstance(value, (list, tuple)):
            pending.extend((item, (where, index)) for index, item in enumerate(value))
        elif not isinstance(value, PLAIN_TYPES):
            raise UserError(f"{path}: damaged checkpoint, {_where(where)} is a {type(value).__name__[:40]}, "
                            f"which vidrender never writes")
    _check_not_shared(spans, path)


def _check_tensor(tensor: torch.Tensor, where: str, path: Path) -> None:
    """Refuse a tensor vidrender would not have written: not a plain CPU tensor of TENSOR_DTYPES, values
    declared beyond its storage (zero or overlapping strides, an offset past the end), or more than
    MAX_TENSOR_VALUES values. Reads only sizes, strides and the storage's length, never the values."""
    if tensor.layout != torch.strided or tensor.is_quantized or tensor.device.type != "cpu":
        raise UserError(f"{path}: damaged checkpoint, {where} is a {tensor.layout} {tensor.device.type} tensor; "
                        f"vidrender writes dense CPU tensors")
    if tensor.dtype not in TENSOR_DTYPES:
        raise UserError(f"{path}: damaged checkpoint, {where} holds {str(tensor.dtype)[6:]} values; vidrender writes "
                        f"{', '.join(str(dtype)[6:] for dtype in TENSOR_DTYPES)}")
    shape = "x".join(str(size) for size in tensor.shape) or "1"
    values = math.prod(tensor.shape)  # Python ints: the product of hostile sizes cannot overflow
    stored = tensor.untyped_storage().nbytes()
    if not tensor.is_contiguous() or (tensor.storage_offset() + values) * tensor.element_size() > stored:
        raise UserError(f"{path}: damaged checkpoint, {where} declares {shape} values in a storage of {stored} bytes")
    if values > MAX_TENSOR_VALUES:
        raise UserError(f"{path}: damaged checkpoint, {where} holds {shape} values, over the limit of "
                        f"{MAX_TENSOR_VALUES} (an RGBA frame of {DEFAULT_MAX_PIXELS / 1e6:.0f} Mpixel)")


def _check_not_shared(spans: list[tuple], path: Path) -> None:
    """Refuse tensors whose values overlap in one storage: vidrender writes each tensor's values once, so
    a shared stretch can only make one stored layer count as many (many layers' work from one's bytes)."""
    spans.sort(key=lambda span: span[:3])
    reach = None  # the span reaching furthest so far in the current storage
    for span in spans:
        if reach is not None and reach[0] == span[0] and span[1] < reach[2]:
            raise UserError(f"{path}: damaged checkpoint, {_where(span[3])} and {_where(reach[3])} share their "
                            f"values; vidrender stores each tensor's own")
        if reach is None or reach[0] != span[0] or span[2] > reach[2]:
            reach = span


def _where(where) -> str:
    """A path in the payload as `artifact.clips[0].background.plate` from its (parent, key) chain."""
    keys = []
    while where is not None:
        where, key = where
        keys.append(key)
    keys.reverse()
    if len(keys) > 8:  # nesting can be deep in a damaged file; the ends say where
        keys = [*keys[:4], "...", *keys[-4:]]
    text = ""
    for key in keys:
        if isinstance(key, str) and (key.isidentifier() or key == "...") and len(key) <= 40:
            text += f".{key}" if text else key
        else:
            text += f"[{_short(key, 40) if isinstance(key, int) else repr(_short(key, 40))}]"
    return text or "the checkpoint"


def _short(value: Any, limit: int) -> str:
    """`str(value)` cut to `limit` characters; Python refuses to print integers of over 4300 digits."""
    try:
        return str(value)[:limit]
    except ValueError:
        return f"a {type(value).__name__} too long to show"


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
