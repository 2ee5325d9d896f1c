"""Atomic writes: build an output under a temporary name beside it, then rename it into place.

A crash, Ctrl-C or error mid-write leaves the previous file (or nothing) at the destination, never a
half-written one. Works for single files and for whole folders (PNG sequences, export layers).

Temporary names are recognisably ours: `.NAME.XXXXXXXX.tmpSUFFIX` while being written and
`.NAME.XXXXXXXX.old` for a replaced folder on its way out (X: 8 hex digits). A process killed with
SIGKILL cannot remove them; `stale_temporaries` finds them so the next command writing the same
destination can (`vidrender.io.outputs`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from vidrender.errors import UserError

# file systems allow 255 bytes per name; the temporary prefix and tag must fit beside a legal name
_NAME_MAX = 255
_SUFFIX_MAX = 16
_TAG = re.compile(r"\.[0-9a-f]{8}\.(tmp.*|old)$")


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `destination`; on success rename it over `destination`.

    The temporary name ends in the destination's suffix. If `is_dir`, the temporary folder is created
    for the caller. On any exception the temporary file or folder is removed and the destination is left untouched.
    An existing destination folder is replaced only after the new one is complete (whether it may be
    replaced at all is the command's output policy, `vidrender.io.outputs`). An OS error while
    writing (full disk, permission, read-only file system) becomes a one-line `UserError`.
    """
    destination = Path(destination)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        # the suffix stays last so encoders that pick a format by extension still work
        suffix = destination.suffix if len(destination.suffix.encode()) <= _SUFFIX_MAX else ""
        tmp = destination.with_name(_tagged(destination.name, f"tmp{suffix}"))
        if is_dir:
            tmp.mkdir()
    except OSError as err:
        raise _write_error(destination, err) from err
    try:
        yield tmp
        if is_dir:
            if destination.exists():
                old = destination.with_name(_tagged(destination.name, "old"))
                destination.rename(old)
                tmp.rename(destination)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(destination)
        else:
            os.replace(tmp, destination)
    except BaseException as err:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _write_error(destination, err) from err
        raise


def stale_temporaries(destination: str | os.PathLike) -> list[Path]:
    """The temporary files and folders `atomic_path` made for `destination` that still exist beside it."""
    destination = Path(destination)
    if not destination.parent.is_dir():
        return []
    stem = _short_stem(destination.name)
    return [path for path in destination.parent.iterdir()
            if path.name.startswith(f".{stem}.") and _TAG.fullmatch(path.name[len(stem) + 1:])]


def _tagged(name: str, tag: str) -> str:
    """`.NAME.XXXXXXXX.TAG`, with NAME cut short enough that the result is a legal file name."""
    return f".{_short_stem(name)}.{uuid.uuid4().hex[:8]}.{tag}"


def _short_stem(name: str) -> str:
    """`name` cut to leave room for the dots, the 8 hex digits, `tmp` and a short suffix within _NAME_MAX."""
    room = _NAME_MAX - len(".") - len(".12345678.tmp") - _SUFFIX_MAX
    encoded = name.encode()
    return name if len(encoded) <= room else encoded[:room].decode(errors="ignore")


def _write_error(destination: Path, err: OSError) -> UserError:
    reason = err.strerror or type(err).__name__
    return UserError(f"{destination}: cannot write it ({reason})")
