"""Atomic writes: build an output under a temporary name beside it, then rename it into place.

A crash, Ctrl-C or error mid-write leaves the previous file (or nothing) at the destination, never a
half-written one. Works for single files and for whole folders (PNG sequences, export layers).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `destination`; on success rename it over `destination`.

    The temporary name keeps the destination's suffix (so encoders that pick a format from the
    extension still work). If `is_dir`, the temporary folder is created for the caller. On any
    exception the temporary file or folder is removed and the destination is left untouched.
    An existing destination folder is replaced only after the new one is complete.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_name(f".{destination.stem}.{uuid.uuid4().hex[:8]}.tmp{destination.suffix}")
    if is_dir:
        tmp.mkdir()
    try:
        yield tmp
        if is_dir:
            if destination.exists():
                old = destination.with_name(f".{destination.name}.{uuid.uuid4().hex[:8]}.old")
                destination.rename(old)
                tmp.rename(destination)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(destination)
        else:
            os.replace(tmp, destination)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
