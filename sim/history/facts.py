"""The typed facts a history hands out: operations, holds, transfers, actor states.

They are what a log *means*, worked out once by the primitive kinds (sim.kinds) in a single
pass: every consumer (the checks, the scenarios' analyses, the live view, the exports, the
plot, the player, the Python API) reads these instead of pairing lines or tracking holders on
its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from .lines import Line

__all__ = ["Category", "Hold", "Operation", "State", "Transfer"]


class Operation(msgspec.Struct, eq=False, gc=False):
    """One operation on a primitive: its ``invoke`` line and, once it returned, its
    completion line (``ok``, ``timeout`` or ``fail``).

    A Struct, made once per operation in the history's loop, because a Struct is made in C:
    in less than half the time of a class with ``__slots__`` and an ``__init__``. Operations compare
    and hash by identity; none takes part in a reference cycle (it holds two lines), so the
    garbage collector need not track them.
    """

    invoke: Line
    #: The operation can block its caller (an acquire, a get): its duration is a wait.
    blocking: bool
    done: Line | None = None
    #: The row of its actor's a drawing puts it on (set by the drawing that needs one).
    lane: int = 0

    @property
    def actor(self) -> str:
        return self.invoke.actor

    @property
    def prim(self) -> str:
        return str(self.invoke.prim)

    @property
    def kind(self) -> str:
        return str(self.invoke.kind)

    @property
    def name(self) -> str:
        """The operation: ``acquire``, ``put``, ``recv`` ..."""
        return str(self.invoke.op)

    @property
    def start(self) -> float:
        return self.invoke.ts

    @property
    def end(self) -> float | None:
        return None if self.done is None else self.done.ts

    @property
    def began(self) -> tuple[float, int]:
        """When it began, to compare with other lines' ``at`` (ties broken by step)."""
        return self.invoke.at

    @property
    def ended(self) -> tuple[float, int] | None:
        return None if self.done is None else self.done.at

    @property
    def outcome(self) -> str:
        """``ok``, ``timeout``, ``fail``, or ``pending`` if it never returned."""
        return "pending" if self.done is None else str(self.done.phase)

    @property
    def orphan(self) -> bool:
        """Its invoke line is missing from the log (lost): it is shown as begun when it
        returned."""
        return self.done is self.invoke

    @property
    def ok(self) -> bool:
        return self.done is not None and self.done.phase == "ok"

    @property
    def wait(self) -> float | None:
        """Seconds from invoke to completion (None while it has not returned)."""
        return None if self.done is None else self.done.ts - self.invoke.ts

    @property
    def item(self) -> Any:
        """The item put, sent, got or received (from the completion line if it has one)."""
        if self.done is not None and self.done.item is not None:
            return self.done.item
        return self.invoke.item

    def get(self, key: str, default: Any = None) -> Any:
        """A payload field, from the completion line if it has it, else from the invoke."""
        if self.done is not None and key in self.done:
            return self.done[key]
        return self.invoke.get(key, default)

    def __repr__(self) -> str:
        return f"<Operation {self.actor} {self.name} {self.prim} {self.outcome} @{self.start:.6f}>"


class Hold(msgspec.Struct, eq=False, gc=False):
    """``actor`` held (a unit of) ``prim`` from ``start`` to ``end``.

    ``end`` is None while the hold lasts. ``cut`` says why a hold ended other than by a
    release: ``""`` released, ``"ended"`` its actor ended holding it, ``"died"`` its actor
    died holding it (the unit is lost for the rest of the run), ``"log"`` the log ended.
    A Struct, like :class:`Operation`, and for the same reasons.
    """

    actor: str
    prim: str
    start: float
    #: The operation whose return began the hold (an acquire, a condition's wait).
    op: Operation | None = None
    end: float | None = None
    cut: str = ""
    #: The row of its actor's a drawing puts it on (set by the drawing that needs one).
    lane: int = 0

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start

    def __repr__(self) -> str:
        end = "…" if self.end is None else f"{self.end:.6f}"
        why = f" {self.cut}" if self.cut else ""
        return f"<Hold {self.actor} {self.prim} {self.start:.6f}..{end}{why}>"


TransferKind = Literal["message", "unit", "signal", "notify", "set", "barrier"]


@dataclass(frozen=True, slots=True, eq=False)
class Transfer:
    """``src`` caused ``dst`` to return: an item put and got, a message sent and received, a
    unit released and acquired, a notify that woke a waiter, a set, a barrier's last arrival."""

    src: Operation
    dst: Operation
    what: TransferKind


Category = Literal["wait", "hold", "domain", "run", "done", "new"]


@dataclass(frozen=True, slots=True)
class State:
    """What an actor does from ``since``: its ``state`` as a person would name it
    (``waiting``, ``parked``, ``eating``), the ``category`` of that (blocked in an operation,
    holding something, a state its scenario declared, running, done, not started yet) and a
    ``detail`` (what it waits for and what it holds meanwhile)."""

    actor: str
    since: float
    state: str
    category: Category
    detail: str = ""
    # How a display colours a state its scenario declared: "using" (what it waited for),
    # "asking" (about to ask for it), "idle" (doing something else), "blocked".
    tone: str = ""
