"""`vidrender demo`: the whole job on built-in samples (until the motion pipeline lands, it says so)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vidrender.errors import UserError


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the demo's outputs.")] = Path(
            "vidrender-demo"
        ),
    ) -> None:
        """Make sample clips, train on them and compose a new video (minutes on a laptop CPU)."""
        raise UserError(
            "the demo needs the motion pipeline (train + compose), which is not built yet; "
            f"nothing was written to {output}"
        )
