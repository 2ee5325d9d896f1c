"""Run bench sections and report their figures: a rich table per section, then one JSON object.

The JSON object (`json_line`) holds each section's figures under its name and the run's own settings
under "bench"; it is printed as the last line of standard output so scripts can read it. Numbers are
rounded to 4 significant digits (finer than the run-to-run noise of any timing), non-finite numbers
become null.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from vidrender import __version__
from vidrender.bench.registry import RESERVED_NAME, SectionFunction

SIGNIFICANT_DIGITS = 4


def run_sections(
    sections: dict[str, SectionFunction], quick: bool, progress_console: Console
) -> dict[str, dict]:
    """Run each section (name -> function) in order with a progress bar; return name -> JSON-ready figures."""
    results = {}
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    progress = Progress(*columns, console=progress_console, transient=True)
    with progress:
        task = progress.add_task("bench", total=len(sections))
        for name, section in sections.items():
            progress.update(task, description=f"bench: {name}{' (quick)' if quick else ''}")
            figures = section(quick)
            if not isinstance(figures, dict):
                raise TypeError(f"bench section {name!r} returned {type(figures).__name__}, not a dict")
            results[name] = jsonable(figures, name)
            progress.advance(task)
    return results


def report_object(results: dict[str, dict], quick: bool, seconds: float) -> dict:
    """The whole report: {"bench": run settings, section name: figures, ...}."""
    settings = {
        "vidrender": __version__,
        "quick": quick,
        "seconds": jsonable(seconds),
        "sections": list(results),
    }
    return {RESERVED_NAME: settings, **results}


def json_line(report: dict) -> str:
    """The report as one line of JSON (no newlines inside, whatever the strings hold)."""
    return json.dumps(report, separators=(", ", ": "), allow_nan=False)


def print_tables(results: dict[str, dict], console: Console) -> None:
    """One two-column table (figure, value) per section; nested figures are named by their path a / b / c."""
    for name, figures in results.items():
        table = Table(title=name, title_justify="left", show_header=False, min_width=40)
        table.add_column("figure", style="cyan", no_wrap=True)
        table.add_column("value", justify="right")
        for key, value in flatten(figures):
            table.add_row(key, format_value(value))
        console.print(table)


def flatten(figures: dict, prefix: str = "") -> Iterable[tuple[str, object]]:
    """(path, value) for every leaf of nested dicts, paths joined with " / ", in insertion order."""
    for key, value in figures.items():
        path = f"{prefix} / {key}" if prefix else str(key)
        if isinstance(value, dict):
            yield from flatten(value, path)
        else:
            yield path, value


def format_value(value: object) -> str:
    """A figure for the table: thousands separated, about 3-4 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, list):
        return ", ".join(format_value(item) for item in value)
    return str(value)


def jsonable(value: object, where: str = "value"):
    """`value` as plain JSON types: numpy/torch scalars unwrapped, floats rounded, NaN/inf -> None.

    Raises TypeError naming `where` (the figure's path) for anything else, which is a section's bug.
    """
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy and torch scalars
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): jsonable(item, f"{where} / {key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item, f"{where} / {index}") for index, item in enumerate(value)]
    raise TypeError(
        f"bench figure {where} is a {type(value).__name__}, not a JSON number, string, list or dict"
    )
