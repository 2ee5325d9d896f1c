"""The `vidrender` command line: one typer app, commands registered by each pipeline.

Every command reports a mistake the user can fix (`UserError`) as one line on stderr and exit code 2;
`--debug` shows the full traceback instead. Heavy imports (torch, av) happen inside commands so that
`vidrender --help` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vidrender import __version__
from vidrender.bench.command import register as register_bench
from vidrender.errors import UserError

app = typer.Typer(
    name="vidrender",
    help="Take videos and 3-D scenes apart with equivariance, and put them back together.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)
register_bench(app)
_debug = {"enabled": False}
_registered: list[bool] = []


def _show_version(value: bool) -> None:
    if value:
        print(f"vidrender {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _debug["enabled"] = debug


@app.command()
def samples(
    directory: Annotated[Path, typer.Argument(help="Folder to write DIR/clip0, DIR/clip1, ... into.")],
    count: Annotated[int, typer.Option("-n", "--count", help="How many clips.")] = 3,
    size: Annotated[int, typer.Option(help="Frame side in pixels (the height with --aspect).")] = 128,
    aspect: Annotated[str | None, typer.Option(help="Width:height of the frame, e.g. 16:9 or 9:16.")] = None,
    coverage: Annotated[
        float | None, typer.Option(help="Share of the frame the character covers, e.g. 0.04 (default 7-15 %).")
    ] = None,
    frames: Annotated[int, typer.Option(help="Frames per clip.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the first clip (the next ones count up).")] = 0,
) -> None:
    """Write synthetic clips with ground truth (plate, mattes, affines) for training and `eval`."""
    from vidrender.synth.truth import write_samples

    shape = size if aspect is None else (_width_for(aspect, size), size)
    for path in write_samples(directory, n=count, size=shape, frames=frames, seed=seed, coverage=coverage):
        print(path)


def _width_for(aspect: str, height: int) -> int:
    """The even frame width of `height` at `aspect` "W:H" (even: H.264 needs it)."""
    try:
        across, down = (float(part) for part in aspect.split(":"))
    except ValueError:
        raise UserError(f"--aspect: expected W:H like 16:9, got {aspect!r}") from None
    if not (0 < across < 1e4 and 0 < down < 1e4):
        raise UserError(f"--aspect: {aspect} is not a usable frame shape")
    return max(2, 2 * round(height * across / down / 2))


def _register_pipelines() -> None:
    """The one place where the framework reaches into pipelines: each adds its commands to the app."""
    if _registered:
        return
    from vidrender.pipelines import registry

    for register in registry.command_registrars():
        register(app)
    _registered.append(True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script; `argv` defaults to the process arguments."""
    _register_pipelines()
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args[1:]:
        # accept `--debug` after the command too (`vidrender train ... --debug`), where users put it
        args.remove("--debug")
        args.insert(0, "--debug")
    try:
        app(args=args, prog_name="vidrender")
    except UserError as err:
        if _debug["enabled"]:
            raise
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {err}", markup=True)
        sys.exit(2)
    except KeyboardInterrupt:
        if _debug["enabled"]:
            raise
        Console(stderr=True).print("[bold red]interrupted[/]")
        sys.exit(130)
