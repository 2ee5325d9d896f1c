"""The named sections of `vidrender bench` and the plug-in mechanism that lets pipelines add theirs.

A section is a function `(quick: bool) -> dict` returning its figures as a JSON-able dict (numbers,
strings, booleans, lists, nested dicts); `quick` asks for a seconds-long version for CI. Register one with

    @bench_section("motion")
    def motion_section(quick: bool) -> dict: ...

Modules that define sections are imported only when `vidrender bench` runs, so that `vidrender --help`
does not pay for torch: a pipeline calls `add_section_module("vidrender.pipelines.motion.bench")` from its
`register(app)` and the module's decorators run when `load_sections()` imports it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

SectionFunction = Callable[[bool], dict]

# name -> section, in the order they were registered (`load_sections` gives the order they run in)
SECTIONS: dict[str, SectionFunction] = {}
# the JSON line holds each section under its name, and the run's own settings under this one
RESERVED_NAME = "bench"

_BUILT_IN_MODULES = ("vidrender.bench.machine", "vidrender.bench.video")
_plugin_modules: list[str] = []


def bench_section(name: str) -> Callable[[SectionFunction], SectionFunction]:
    """Decorator registering `function(quick) -> dict` as the bench section `name` (lower-case, no spaces).

    Raises ValueError for a malformed or reserved name, or a name already taken by another function.
    """
    if not name or name != name.strip().lower() or " " in name or "," in name or name == RESERVED_NAME:
        raise ValueError(
            f"bench section name {name!r} must be lower-case, without spaces or commas, not 'bench'"
        )

    def register(function: SectionFunction) -> SectionFunction:
        existing = SECTIONS.get(name)
        # the same function seen again (its module re-imported) is fine; a second function is a clash
        if existing is not None and _origin(existing) != _origin(function):
            raise ValueError(f"bench section {name!r} is already registered by {existing.__module__}")
        SECTIONS[name] = function
        return function

    return register


def _origin(function: SectionFunction) -> tuple[str, str]:
    return function.__module__, function.__qualname__


def add_section_module(module_name: str) -> None:
    """Remember a module (dotted name) whose `@bench_section` functions `load_sections` should import."""
    if module_name not in _plugin_modules:
        _plugin_modules.append(module_name)


def load_sections() -> dict[str, SectionFunction]:
    """Import the built-in and plug-in section modules; return every registered section by name.

    Order: built-ins, then plug-in modules in the order they were added, then sections registered from
    anywhere else; within a module, the order of its decorators.
    """
    modules = (*_BUILT_IN_MODULES, *_plugin_modules)
    for module_name in modules:
        importlib.import_module(module_name)
    rank = {module_name: index for index, module_name in enumerate(modules)}
    return dict(sorted(SECTIONS.items(), key=lambda item: rank.get(item[1].__module__, len(rank))))
