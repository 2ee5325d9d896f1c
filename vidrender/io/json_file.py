"""Reading a JSON object from a file, with every way it can fail as one `UserError` naming the file."""

from __future__ import annotations

import json
from pathlib import Path

from vidrender.errors import UserError


def read_json_object(path: str | Path) -> dict:
    """The JSON object (a dict) in `path`; a missing or unreadable file, invalid JSON (bad syntax or bytes,
    too deep nesting) or a JSON value that is not an object is a `UserError`."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as err:
        raise UserError(f"{path}: cannot read JSON ({str(err)[:120]})") from None
    if not isinstance(payload, dict):
        raise UserError(f"{path}: expected a JSON object")
    return payload
