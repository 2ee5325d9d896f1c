"""`vidrender bench`: run the registered bench sections, print a table per section and one JSON line.

    vidrender bench [--quick] [--only SECTION ...] [--json-out FILE] [--threads N]

`register(app)` adds the command to a typer app. This module imports no torch: the sections (and torch)
load when the command runs, so `vidrender --help` stays fast.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from vidrender.errors import UserError


def register(app: typer.Typer) -> None:
    """Add the `bench` command to `app`."""
    app.command("bench")(bench)


def bench(
    quick: Annotated[
        bool, typer.Option("--quick", help="Seconds-long measurements (for CI): same figures, rougher.")
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only", metavar="SECTION", help="Run only this section; repeat or comma-separate. Default: all."
        ),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json-out", metavar="FILE", help="Also write the JSON object to FILE.")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", min=1, help="torch threads to measure with (default: torch's choice)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --json-out file.")] = False,
) -> None:
    """Measure speed and memory: a table per section, then all figures as one JSON object on the last line."""
    from rich.console import Console

    from vidrender.bench.registry import load_sections
    from vidrender.bench.report import json_line, print_tables, report_object, run_sections
    from vidrender.io.outputs import Output, claim_outputs

    outputs = [Output(json_out)] if json_out is not None else []
    with claim_outputs(outputs, overwrite=overwrite):
        chosen = _choose_sections(load_sections(), only)
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        started = time.perf_counter()
        results = run_sections(chosen, quick, Console(stderr=True))
        report = report_object(results, quick, time.perf_counter() - started)
        print_tables(results, Console(highlight=False))
        line = json_line(report)
        if json_out is not None:
            from vidrender.io.atomic import atomic_path

            with atomic_path(json_out) as tmp:
                tmp.write_text(line + "\n")
    print(line, flush=True)


def _choose_sections(sections: dict, only: list[str] | None) -> dict:
    """The sections `--only` names (comma-separated or repeated), in registry order; all without it."""
    if not only:
        return dict(sections)
    wanted = [name.strip() for value in only for name in value.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in sections]
    if unknown:
        raise UserError(
            f"--only {', '.join(unknown)}: no such bench section; choose from {', '.join(sections)}"
        )
    return {name: function for name, function in sections.items() if name in wanted}
