"""The primitive kinds, one module each, and the registry that maps the log's ``kind`` to them.

Everything about one kind lives in its module: the spec a scenario declares, the wrapper that
logs every operation, the model that says what its operations mean when the log is read back,
its gauges and its generic checks. Adding a kind means one new module that defines ``KINDS``
(a list of :class:`Kind`) and one line in ``_MODULES`` below (or :func:`register` at run time,
for a kind of your own); see docs/log-format.md, "Adding a primitive kind".
"""

from __future__ import annotations

import importlib
import sys
from types import CodeType

from ._base import (
    RETURNED,
    Display,
    Holds,
    Kind,
    Logged,
    Model,
    PrimSpec,
    Reading,
    Wakes,
    item_key,
    limit,
    returning_codes,
)
from .barrier import Barrier
from .condition import Condition
from .event import Event
from .pipe import Pipe
from .queue import JoinableQueue, Queue
from .rlock import RLock
from .semaphore import BoundedSemaphore, Lock, Semaphore
from .shared import Array, SharedMemory, Value

__all__ = [
    "RETURNED",
    "Array",
    "Barrier",
    "BoundedSemaphore",
    "Condition",
    "Display",
    "Event",
    "Holds",
    "JoinableQueue",
    "Kind",
    "Lock",
    "Logged",
    "Model",
    "Pipe",
    "PrimSpec",
    "Queue",
    "RLock",
    "Reading",
    "Semaphore",
    "SharedMemory",
    "Value",
    "Wakes",
    "all_kinds",
    "find",
    "get",
    "item_key",
    "limit",
    "phenomena",
    "register",
    "wrapper_codes",
]

# The registry: one line per kind module.
_MODULES = (
    "semaphore",
    "rlock",
    "condition",
    "event",
    "barrier",
    "queue",
    "pipe",
    "shared",
    "tcp",
    "udp",
)

_KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    """Make ``kind`` known by its name (a kind of your own, or a replacement)."""
    _KINDS[kind.name] = kind
    return kind


for _module in _MODULES:
    for _kind in importlib.import_module(f"{__name__}.{_module}").KINDS:
        register(_kind)


def find(name: str) -> Kind | None:
    """The kind called ``name``, or None."""
    return _KINDS.get(name)


def get(name: str) -> Kind:
    """The kind called ``name``; raises ScenarioError naming the known ones."""
    kind = _KINDS.get(name)
    if kind is None:
        from sim.errors import ScenarioError

        known = ", ".join(sorted(_KINDS))
        raise ScenarioError(f"no primitive kind {name!r} (known: {known})")
    return kind


def all_kinds() -> dict[str, Kind]:
    """Every registered kind, by name."""
    return dict(_KINDS)


def wrapper_codes() -> frozenset[CodeType]:
    """The wrapper functions of every registered kind's module that may defer a stop signal
    (see :data:`RETURNED`)."""
    modules = {sys.modules[kind.model.__module__] for kind in _KINDS.values()}
    modules |= {sys.modules[k.wrap.__module__] for k in _KINDS.values() if k.wrap is not None}
    return returning_codes(modules)


def phenomena() -> dict[str, str]:
    """What the kinds' own checks can show (a config may declare it in ``expect``), with
    what each means."""
    found: dict[str, str] = {}
    for kind in _KINDS.values():
        found.update(kind.phenomena)
    return found
