"""Invariant checks per primitive kind, derived from the op history alone.

``checks_for(name, info)`` gives the checks for one primitive of a run (``info`` is what
run.json records about it). Each kind's checks live in the module this table names, which
defines ``checks_for(name, info) -> list[Check]``; a kind not in the table gets none here
(semaphores and locks are checked in ``sim.checks``). Modules are imported on first use, so
a run only pays for the kinds it has.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.checks import Check

__all__ = ["checks_for"]

_MODULES = {
    "rlock": "mutex",
    "condition": "condition",
    "event": "event",
    "barrier": "barrier",
    "queue": "queue",
    "joinable_queue": "queue",
    "pipe": "pipe",
    "value": "counter",
    "array": "counter",
    "shared_memory": "counter",
}


def checks_for(name: str, info: Mapping[str, Any]) -> list[Check]:
    """The kind-specific checks for primitive ``name``."""
    module_name = _MODULES.get(str(info.get("kind")))
    if module_name is None:
        return []
    module = importlib.import_module(f"{__name__}.{module_name}")
    found: list[Check] = module.checks_for(name, info)
    return found
