"""The checks watched while a run is in progress: the live view says a phenomenon (a buffer's
underflow, a lost update) the moment a check finds it, not only in the summary.

The checks are the ones the run's analysis makes at the end, subscribed to the run's live
history. That history is the engine's own, so a check that raises must not break the run: each
is guarded, and one that fails is dropped from the display (the analysis at the end, over the
log, is unaffected and reports it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sim.checks import Check, generic_checks
from sim.history import History, Hold, Operation, State, Subscriber, Transfer
from sim.history.lines import Line

from .board import Note

if TYPE_CHECKING:
    from sim.config import RunConfig
    from sim.scenario import Scenario

__all__ = ["Watch"]


class _Guarded(Subscriber):
    """``inner``'s hooks, each of which may fail without failing the history."""

    def __init__(self, inner: Subscriber) -> None:
        self.inner = inner
        self.prims = inner.prims
        self.events = inner.events
        self.ops = inner.ops
        self.broken = False

    def _call(self, hook: str, *args: Any) -> None:
        if self.broken:
            return
        try:
            getattr(self.inner, hook)(*args)
        except Exception:
            self.broken = True  # the analysis over the log will say what went wrong

    def attach(self, history: History) -> None:
        super().attach(history)
        self.inner.attach(history)

    def on_invoke(self, op: Operation) -> None:
        self._call("on_invoke", op)

    def on_op(self, op: Operation) -> None:
        self._call("on_op", op)

    def on_hold_start(self, hold: Hold) -> None:
        self._call("on_hold_start", hold)

    def on_hold(self, hold: Hold) -> None:
        self._call("on_hold", hold)

    def on_transfer(self, transfer: Transfer) -> None:
        self._call("on_transfer", transfer)

    def on_gauge(self, ts: float, prim: str, values: Mapping[str, float]) -> None:
        self._call("on_gauge", ts, prim, values)

    def on_line(self, line: Line) -> None:
        self._call("on_line", line)

    def on_state(self, state: State) -> None:
        self._call("on_state", state)


class Watch:
    """The run's checks on its live history; :meth:`notes` says what they found so far."""

    def __init__(self, history: History, config: RunConfig[Any], spec: Scenario[Any]) -> None:
        self._expected = frozenset(config.expect)
        self._guards: list[_Guarded] = []
        self._checks: list[tuple[Check, _Guarded]] = []
        try:
            checks = generic_checks(history, history.actors)
            analysis = spec.analysis(config, history)
            checks.extend(analysis.checks())
        except Exception:
            return  # a scenario whose analysis cannot start live: the summary still comes
        for sub in [*checks, analysis]:
            guard = _Guarded(sub)
            history.subscribe(guard)
            if isinstance(sub, Check):
                self._checks.append((sub, guard))

    def notes(self) -> tuple[Note, ...]:
        """A note per check that has found a problem, in the words it found it in."""
        found = []
        for check, guard in self._checks:
            if guard.broken or not check.problems or check.needs_completion:
                continue
            shown = check.problems.shown[0] if check.problems.shown else ""
            label = "shown" if check.phenomenon in self._expected else "FAIL"
            found.append(Note(label, check.name, shown))
        return tuple(found)
