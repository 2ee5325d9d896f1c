"""`vidrender bench`: measured speed and memory figures, one section per subject (docs/design.md section 5).

Sections are functions registered by name with `@bench_section("name")` (see `registry.py`); the
framework brings `machine` (CPU, versions, measured peak fp32 matrix-product FLOP/s) and `video`
(decode and encode frames/s). Pipelines add theirs with `add_section_module`. `measure.py` holds the
timing, memory and FLOP-counting helpers that sections share; `report.py` prints the rich table and the
one-line JSON; `command.py` adds the command to a typer app. Importing this package does not import
torch, so registering sections costs nothing at CLI start-up.
"""

from vidrender.bench.registry import SECTIONS, add_section_module, bench_section, load_sections

__all__ = ["SECTIONS", "add_section_module", "bench_section", "load_sections"]
