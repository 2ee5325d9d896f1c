"""The output policy every command follows, in one place: claim what you will write before any work.

`claim_outputs` runs before a command does anything slow and holds until it ends. For each output it
refuses, with one line:

- a path that is one of the command's inputs (or a folder holding one), the current folder or a
  folder above it;
- an existing file or folder (an empty folder where a folder is written is fine), unless `--overwrite`
  was given; even then a folder is replaced only if everything in it is something the command itself
  writes (`Output.own_names`), and a file is never replaced by a folder or the other way round;
- a location that cannot be written: a parent that is a file, a read-only file system, no
  permission, a name too long, too little free space (a real test write, as `os.access` misjudges
  root and network file systems);
- a destination another vidrender command is writing right now (a lock file `.NAME.lock` beside it,
  held with `flock`, so the kernel releases it when a process dies, even by SIGKILL).

Holding the lock, it removes the temporary names a killed earlier run left for the same destination
(`vidrender.io.atomic.stale_temporaries`) once they have been untouched for `STALE_SECONDS`: a live
writer touches its temporary file or folder with every frame it adds.
The writes themselves go through `vidrender.io.atomic.atomic_path` (temporary name, then rename).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from vidrender.errors import UserError
from vidrender.io.atomic import stale_temporaries

STALE_SECONDS = 60.0
_NAME_MAX = 255


@dataclass(frozen=True)
class Output:
    """One thing a command writes: a file or a folder at `path`.

    `own_names` matches every name the command writes inside its folder; with `--overwrite`, an existing
    folder is replaced only if all its entries match (so a user's notes in it stop the command).
    """

    path: Path
    folder: bool = False
    own_names: re.Pattern | None = None


@contextlib.contextmanager
def claim_outputs(outputs: Sequence[Output], inputs: Sequence[Path] = (), overwrite: bool = False,
                  free_bytes: int = 0) -> Iterator[None]:
    """Check every output against the policy in the module doc, then hold their locks until the block ends.

    `inputs` are the command's input files and folders; `free_bytes` the disk space the outputs need in all.
    Raises `UserError` before anything is written. In a launched multi-process run only the main process
    (RANK 0) checks and locks: the others would see its lock, and the launcher stops them all if it fails.
    """
    if not launched_main_process():
        yield
        return
    for output in outputs:
        check_output(output, inputs, overwrite)
        check_writable(output.path.parent, free_bytes)
    with contextlib.ExitStack() as held:
        for output in outputs:
            held.enter_context(_locked(output.path))
            remove_stale_temporaries(output.path)
        yield


def launched_main_process() -> bool:
    """False in the secondary processes of a run started by `accelerate launch` (torchrun sets RANK)."""
    return int(os.environ.get("RANK", "0")) == 0


def check_output(output: Output, inputs: Sequence[Path] = (), overwrite: bool = False) -> None:
    """Refuse `output` if writing it would touch an input, the current folder or a user's existing file."""
    path = output.path
    if len(os.fsencode(path.name)) > _NAME_MAX:
        raise UserError(f"{path}: the name is longer than {_NAME_MAX} bytes, which file systems refuse")
    where = path.absolute().resolve()
    cwd = Path.cwd().resolve()
    if not path.name or where == cwd or where in cwd.parents:
        raise UserError(f"{path}: is the current folder or one above it; name a new file or folder to write")
    for source in inputs:
        if _same_or_inside(Path(source), where):
            raise UserError(f"{path}: is the input {source}; choose another output, inputs are never overwritten")
    if not (path.exists() or path.is_symlink()):
        return
    if output.folder and path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        return  # an empty folder made for the output (`mkdir out && ... -o out`) holds nothing to lose
    kind = "folder" if path.is_dir() else "file"
    if not overwrite:
        raise UserError(f"{path}: already exists; pass --overwrite to replace it, or choose another name")
    if output.folder != path.is_dir():
        wanted = "a folder" if output.folder else "a file"
        raise UserError(f"{path}: is a {kind} and this command writes {wanted} there; not replacing it")
    if output.folder:
        foreign = sorted(entry.name for entry in path.iterdir()
                         if output.own_names is None or not output.own_names.fullmatch(entry.name))
        if foreign:
            raise UserError(f"{path}: holds {', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}, which "
                            "this command does not write; not replacing the folder (move them or choose another)")


def check_writable(folder: str | Path, need_bytes: int = 0) -> None:
    """Raise UserError unless `folder` (existing or still to be created) can be written with `need_bytes` free.

    Creates nothing: writes and removes a nameless file in the nearest existing ancestor, then checks the
    free space there with `shutil.disk_usage`.
    """
    folder = Path(folder).absolute()
    existing = next(path for path in [folder, *folder.parents] if path.exists())
    if not existing.is_dir():
        if existing == folder:
            raise UserError(f"{folder}: is a file, not a folder; cannot write into it")
        raise UserError(f"{folder}: cannot be created, {existing} is a file")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise UserError(f"{folder}: cannot write there ({err.strerror or err})") from None
    free = shutil.disk_usage(existing).free
    if free < need_bytes:
        raise UserError(
            f"{folder}: only {free / 1024**2:.0f} MB free on its disk, this needs at least "
            f"{need_bytes / 1024**2:.0f} MB; free some space or write elsewhere"
        )


def remove_stale_temporaries(destination: Path) -> list[Path]:
    """Delete what a killed earlier run left while writing `destination`; returns what was deleted."""
    removed = []
    for leftover in stale_temporaries(destination):
        try:
            if time.time() - leftover.lstat().st_mtime < STALE_SECONDS:
                continue
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        except OSError:
            continue  # gone already, or not ours to remove after all: never fail a command over it
        removed.append(leftover)
    return removed


@contextlib.contextmanager
def _locked(destination: Path) -> Iterator[None]:
    """Hold an exclusive lock on `destination` for the block; refuse at once if another process holds it."""
    lock_path = destination.with_name(f".{destination.name[:200]}.lock")
    destination.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(handle)
            if err.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise UserError(f"{destination}: another vidrender command is writing it now; wait for it to "
                                "finish or choose another output") from None
            raise UserError(f"{destination}: cannot lock it for writing ({err.strerror})") from None
        # the previous holder may have removed the lock file between our open and flock: lock the new one
        if _same_file(handle, lock_path):
            break
        os.close(handle)
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        os.close(handle)


def _same_file(handle: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(handle)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _same_or_inside(source: Path, output: Path) -> bool:
    """True when `source` exists and is `output` itself or lies inside it (so writing `output` replaces it)."""
    if not source.exists():
        return False
    if output.exists() and os.path.samefile(source, output):
        return True  # also a hard link, or the same folder reached through a bind mount
    source = source.absolute().resolve()
    return source == output or output in source.parents
