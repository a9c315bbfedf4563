"""Named shared primitives a scenario asks for, by kind.

A scenario returns a mapping ``{"spaces": Semaphore(130)}``; the engine builds each primitive from
the run's multiprocessing context (so it matches the start method of the processes), hands the raw
object to every actor, and each actor wraps it so that every operation is logged as an ``op``
event. Scenario code never logs a primitive operation by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any, ClassVar

__all__ = ["BoundedSemaphore", "Event", "Lock", "PrimSpec", "RLock", "Semaphore"]


@dataclass(frozen=True)
class PrimSpec:
    """Base of every primitive description; ``kind`` is what the log's ``kind`` field says."""

    kind: ClassVar[str]

    def build(self, mp: BaseContext) -> Any:
        """Create the raw multiprocessing object in the engine, before any actor starts."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What run.json records about this primitive (replay's checks read it back)."""
        return {"kind": self.kind}


@dataclass(frozen=True)
class Semaphore(PrimSpec):
    """A counting semaphore with ``value`` free units (the car park's spaces)."""

    kind: ClassVar[str] = "semaphore"
    value: int = 1

    def build(self, mp: BaseContext) -> Any:
        return mp.Semaphore(self.value)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value}


@dataclass(frozen=True)
class BoundedSemaphore(Semaphore):
    """A semaphore whose ``release`` beyond the initial value raises ValueError."""

    kind: ClassVar[str] = "bounded_semaphore"

    def build(self, mp: BaseContext) -> Any:
        return mp.BoundedSemaphore(self.value)


@dataclass(frozen=True)
class Lock(PrimSpec):
    """A mutual-exclusion lock."""

    kind: ClassVar[str] = "lock"

    def build(self, mp: BaseContext) -> Any:
        return mp.Lock()


@dataclass(frozen=True)
class RLock(PrimSpec):
    """A re-entrant lock: its owner may acquire it again."""

    kind: ClassVar[str] = "rlock"

    def build(self, mp: BaseContext) -> Any:
        return mp.RLock()


@dataclass(frozen=True)
class Event(PrimSpec):
    """A flag that processes wait on until one of them sets it."""

    kind: ClassVar[str] = "event"

    def build(self, mp: BaseContext) -> Any:
        return mp.Event()
