"""The interface of everything that reads a history: hooks, called in time order."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import History
    from .facts import Hold, Operation, State, Transfer
    from .lines import Line

__all__ = ["Subscriber"]


class Subscriber:
    """A consumer of a history's facts: override the hooks you need.

    ``prims`` and ``events`` say what a subscriber wants to see: operation facts (invokes,
    operations, holds, transfers, gauges) of these primitives (``None``: of every primitive),
    and lines that are not operations with these event names (``None``: every line). ``ops``
    narrows ``on_invoke`` and ``on_op`` to the operations with these names (``None``: every
    operation): a subscriber is then not called for the others at all. Hooks are
    called in time order; ``on_invoke`` sees the state just before the operation takes effect,
    the others just after.
    """

    prims: frozenset[str] | None = None
    events: frozenset[str] | None = None
    ops: frozenset[str] | None = None
    history: History

    def attach(self, history: History) -> None:
        """Called once, when the subscriber is added to ``history``."""
        self.history = history

    def on_invoke(self, op: Operation) -> None:
        """``op`` has begun."""

    def on_op(self, op: Operation) -> None:
        """``op`` returned, or was cut when its actor or the log ended (outcome ``pending``)."""

    def on_hold_start(self, hold: Hold) -> None:
        """A hold began."""

    def on_hold(self, hold: Hold) -> None:
        """A hold ended (see :attr:`Hold.cut` for why)."""

    def on_transfer(self, transfer: Transfer) -> None:
        """An operation caused another to return."""

    def on_gauge(self, ts: float, prim: str, values: Mapping[str, float]) -> None:
        """A primitive's gauges changed; ``values`` has all of its series."""

    def on_line(self, line: Line) -> None:
        """A line that is not an operation: a domain event, an actor's start or end, the
        engine's and the coordinator's own lines."""

    def on_state(self, state: State) -> None:
        """An actor's state changed (only on a history that tracks states)."""

    def on_finish(self) -> None:
        """The log has ended; everything still open has been cut."""
