"""The `vidrender` command line: one typer app, commands registered by each pipeline.

Every command reports a mistake the user can fix (`UserError`, a bad option, an error of the operating
system such as a full disk) as one line on stderr and exit code 2; `--debug` shows the full traceback
instead. Ctrl-C, SIGTERM and SIGHUP stop a command the same way (temporary outputs removed, training
saved at a step boundary) with one line and exit code 128 + the signal's number (130 for Ctrl-C).
Heavy imports (torch, av) happen inside commands so that `vidrender --help` stays fast.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vidrender import __version__
from vidrender.bench.command import register as register_bench
from vidrender.errors import Interrupted, UserError

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
# click's UsageError (bad or missing options), whether typer vendors click or imports it
_UsageError = next(base for base in typer.BadParameter.__mro__ if base.__name__ == "UsageError")
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
    camera: Annotated[
        str | None, typer.Option(help="Camera motion of every clip: pan, zoom, handheld or pan-zoom (default: static).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing clip folders (ones holding only sample files).")
    ] = False,
) -> None:
    """Write synthetic clips with ground truth (plate, mattes, affines) for training and `eval`."""
    from vidrender.io.outputs import Output, claim_outputs
    from vidrender.synth.truth import TRUTH_NAMES, sample_folders, write_samples

    shape = size if aspect is None else (_width_for(aspect, size), size)
    outputs = [Output(folder, folder=True, own_names=TRUTH_NAMES) for folder in sample_folders(directory, count)]
    with claim_outputs(outputs, overwrite=overwrite):
        paths = write_samples(directory, n=count, size=shape, frames=frames, seed=seed, coverage=coverage,
                              camera=camera)
    for path in paths:
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
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop_on_signal)
    command = typer.main.get_command(app)
    try:
        _run(command, args)
        sys.exit(0)  # as click's own main does, so callers of main() see one way of ending
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except UserError as err:
        if _debug["enabled"]:
            raise
        _error_line(f"[bold red]error:[/] {err}")
        sys.exit(2)
    except OSError as err:
        # the commands turn the OS errors they expect into UserErrors with context; this is the net for the
        # rest (a full disk mid-log, a file vanishing under us): still one line, never a traceback
        if _debug["enabled"]:
            raise
        where = f"{err.filename}: " if err.filename else ""
        _error_line(f"[bold red]error:[/] {where}{err.strerror or err} (add --debug for the traceback)")
        sys.exit(2)
    except KeyboardInterrupt as err:
        if _debug["enabled"]:
            raise
        stop = err if isinstance(err, Interrupted) else Interrupted()
        _error_line(f"[bold red]stopped:[/] {stop}")
        sys.exit(128 + stop.signum)


def _run(command, args: list[str]) -> None:
    """Parse `args` and run the command, raising what goes wrong (typer's own main would turn Ctrl-C into a
    silent exit and a bad option into a box of lines); a bad option becomes a UserError."""
    try:
        with command.make_context("vidrender", args) as context:
            command.invoke(context)
    except _UsageError as err:
        if type(err).__name__ != "NoArgsIsHelpError":
            raise UserError(_one_line(err)) from err
        err.ctx.get_help()  # `vidrender` or `vidrender scene` alone: typer prints the help
        raise typer.Exit(2) from None


def _stop_on_signal(signum: int, frame) -> None:
    """SIGTERM and SIGHUP stop a command as Ctrl-C does (see the module doc)."""
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}", signum)


def _one_line(err: Exception) -> str:
    """A usage error with the command it is about, on one line."""
    command = err.ctx.command_path if err.ctx is not None else "vidrender"
    message = " ".join(err.format_message().split())
    return f"{command}: {message} (see {command} --help)"


def _error_line(text: str) -> None:
    Console(stderr=True, highlight=False, soft_wrap=True).print(text, markup=True)
