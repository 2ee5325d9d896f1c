"""Which pipelines add commands to the CLI; the CLI asks here so that it names no pipeline itself."""

from __future__ import annotations

from collections.abc import Callable

import typer


def command_registrars() -> list[Callable[[typer.Typer], None]]:
    """Functions that each add one pipeline's commands to the top-level app."""
    from vidrender.pipelines.demo import register as register_demo
    from vidrender.pipelines.motion.cli import register as register_motion
    from vidrender.pipelines.scene3d.cli import register as register_scene3d

    return [register_motion, register_demo, register_scene3d]
