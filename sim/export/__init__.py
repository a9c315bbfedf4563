"""A run's history in other formats: Chrome trace (Perfetto), CSV; and what they share.

Each format is a submodule with one entry point taking a :class:`~sim._replay.LoadedRun`:
:func:`sim.export.chrome.export_chrome` and :func:`sim.export.csv.export_csv`. They read the
run's history (sim.history) like every other consumer; pictures are :func:`sim.plot.plot` and
the terminal replay :func:`sim.player.play`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from sim._replay import LoadedRun

__all__ = ["describe_params", "speedup_of"]


def speedup_of(loaded: LoadedRun) -> float | None:
    """Simulated seconds per wall second, if the run's config says."""
    return None if loaded.config is None else float(loaded.config.clock.speedup)


def describe_params(loaded: LoadedRun, width: int = 0) -> str:
    """The run's parameters in one line: ``capacity=15, cars=40, drive=exponential(20)``."""
    if loaded.config is None:
        return ""
    params = msgspec.to_builtins(loaded.config.params)
    parts = []
    for key, value in params.items() if isinstance(params, dict) else ():
        if isinstance(value, dict) and "dist" in value:
            # A Duration: its distribution and mean, in simulated minutes like every duration.
            value = f"{value['dist']}({value.get('mean', '?'):g})"
        elif isinstance(value, float):
            value = f"{value:g}"
        parts.append(f"{key}={value}")
    text = ", ".join(parts)
    if width and len(text) > width:
        text = text[: width - 1].rstrip(", ") + "…"
    return text
