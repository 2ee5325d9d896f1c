"""Reading JSON from a file, with every way it can fail as one `UserError` naming the file.

Every JSON file vidrender reads (trajectories, export manifests, cameras, truth folders, data sets'
`render_params.json`) goes through `read_json`. Files are UTF-8, with or without a byte-order mark:
Windows editors (Notepad, PowerShell's `Out-File`) write one, and RFC 8259 lets a parser ignore it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vidrender.errors import UserError
from vidrender.io.paths import require_file


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """The JSON value in `path`. A missing path or one that is not a regular file (a folder, a FIFO,
    which would block the read, a device), an unreadable file and invalid JSON (bad syntax, bytes that are
    not UTF-8, an integer of over 4300 digits, too deep nesting) are each a `UserError`; `what` names the
    file in the first kind ("no such trajectory file")."""
    path = require_file(path, what)
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: drops a leading byte-order mark, if any
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not valid JSON (not UTF-8 text: {str(err)[:100]})") from None
    except OSError as err:
        raise UserError(f"{path}: cannot be read ({err.strerror or err})") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        raise UserError(f"{path}: not valid JSON ({str(err)[:120]})") from None


def read_json_object(path: str | Path) -> dict:
    """The JSON object (a dict) in `path` (`read_json`); a JSON value that is not an object is a
    `UserError` too."""
    payload = read_json(path)
    if not isinstance(payload, dict):
        raise UserError(f"{path}: expected a JSON object")
    return payload
