"""Why a path is not a file that can be read, in words a user can act on.

`Path.is_file()` answers False alike for a missing file, a folder, a FIFO, a device and a socket, and
raises for a name that is too long or a folder that may not be entered, so a message built on it says
"no such file" to all of them. `file_problem` tells them apart with one `os.stat` and never opens the
path: opening a FIFO for reading blocks until another process writes to it, and reading a device such
as /dev/zero never ends. `require_file` turns the answer into the one-line `UserError` of the CLI.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from vidrender.errors import UserError

# what a path that exists but is not a regular file is, by its mode
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISSOCK, "a socket"),
)
# reasons `os.stat` gives that a user can act on; any other is shown with the system's own words
_STAT_ERRORS = {
    errno.EACCES: "permission denied (a folder on the way may not be entered)",
    errno.EPERM: "permission denied",
    errno.ENAMETOOLONG: "the name is too long for the file system",
    errno.ELOOP: "is a loop of symbolic links",
}


def file_problem(path: str | os.PathLike, what: str = "file") -> str | None:
    """None if `path` is a regular file (after symbolic links) that this process may read; otherwise why
    not, as the end of a message `f"{path}: {reason}"`: "no such checkpoint file", "is a folder, not a
    checkpoint file", "is a FIFO (named pipe), not a checkpoint file", "is a device, not ...", "is a
    socket, not ...", "permission denied", "is a broken symbolic link", ... (`what` names the file)."""
    try:
        mode = os.stat(path).st_mode
    except ValueError:  # a NUL character in the name: no file can have it
        return f"no such {what} (the name holds a NUL character)"
    except OSError as err:
        return _stat_problem(path, err, what)
    if stat.S_ISREG(mode):
        # a file the process may not read fails later with a traceback-shaped OSError; say it now
        return None if os.access(path, os.R_OK) else "permission denied (the file may not be read)"
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return f"is {kind}, not a {what}"


def _stat_problem(path: str | os.PathLike, err: OSError, what: str) -> str:
    """The reason for a failed `os.stat`: a missing file is also told from a link to one."""
    if err.errno in (errno.ENOENT, errno.ENOTDIR):
        return "is a broken symbolic link" if os.path.islink(path) else f"no such {what}"
    return _STAT_ERRORS.get(err.errno, f"cannot be read ({err.strerror or err})")


def require_file(path: str | os.PathLike, what: str = "file") -> Path:
    """`path` as a `Path` if it is a readable regular file; otherwise one `UserError` naming it and saying
    what it is instead (`file_problem`)."""
    problem = file_problem(path, what)
    if problem is not None:
        raise UserError(f"{path}: {problem}")
    return Path(path)
