"""The run at one moment, as a board: a gauge per primitive, a lane per actor, the news.

A :class:`Board` subscribes to a history and answers what a display needs, from the history's
own models and states: it tracks nothing of its own but the engine's news and the changes of
state since a display last looked.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from sim.history import History, Subscriber
from sim.history.facts import State
from sim.history.lines import Line

__all__ = ["Board", "Row"]


@dataclass(frozen=True)
class Row:
    """One gauge of the board: ``name``, a ``value`` against a ``capacity`` (if any), words."""

    name: str
    value: float
    capacity: float | None
    text: str


def stem_of(name: str) -> str:
    """``fork`` for ``fork-3``, ``car`` for ``car-017``: the group a numbered name is in."""
    stem = name.rstrip("0123456789").rstrip("-_")
    return stem or name


class Board(Subscriber):
    """What a display shows of a history: subscribe it, then ask :meth:`rows`, :meth:`state`
    and :attr:`news` whenever a frame is drawn."""

    events = frozenset({"deadlock", "stopping", "fault"})
    prims = frozenset()

    def __init__(self) -> None:
        self.news = ""
        self.deadlocked = False
        #: State changes not yet taken by a display (the printed timeline takes them).
        self.changes: deque[State] = deque()
        self.keep_changes = False

    def attach(self, history: History) -> None:
        super().attach(history)
        self.names: list[str] = list(history.actors)

    def on_line(self, line: Line) -> None:
        if line.actor != "engine":
            return
        kind = line.event
        if kind == "stopping" and self.deadlocked:
            return  # its reason repeats the deadlock's explanation
        self.deadlocked = self.deadlocked or kind == "deadlock"
        what = line.get("explanation") or line.get("reason") or line.get("what") or ""
        self.news = f"{kind}: {what}" if what else kind

    def on_state(self, state: State) -> None:
        if state.actor not in self.names and state.actor not in ("engine", "coordinator"):
            self.names.append(state.actor)
        if self.keep_changes:
            self.changes.append(state)

    def state(self, actor: str) -> State | None:
        return self.history.state_of(actor)

    def counts(self) -> dict[str, int]:
        """How many actors have not started, are running, are blocked, are done."""
        counts = dict.fromkeys(("not started", "running", "blocked", "done"), 0)
        for name in self.names:
            state = self.history.state_of(name)
            category = "new" if state is None else state.category
            what = {"new": "not started", "wait": "blocked", "done": "done"}.get(category)
            counts[what or "running"] += 1
        return counts

    def rows(self) -> list[Row]:
        """A gauge per primitive; many locks of one sort (five forks) share one row."""
        rows: list[Row] = []
        locks: dict[str, list[str]] = {}
        for name, model in self.history.models().items():
            kind = self.history.kind(str(model.info.get("kind", "")))
            if kind is not None and kind.display.lock:
                locks.setdefault(stem_of(name), []).append(name)
                continue
            reading = model.reading()
            if reading is not None:
                rows.append(Row(name, reading.value, reading.capacity, reading.text))
        for stem, prims in locks.items():
            if len(prims) == 1:
                reading = self.history.models()[prims[0]].reading()
                if reading is not None:
                    rows.append(Row(prims[0], reading.value, reading.capacity, reading.text))
                continue
            models = [self.history.models()[p] for p in prims]
            held = [bool(m.holders()) for m in models]
            waiting = sum(int(m.gauges.get("waiting", 0)) for m in models)
            marks = "".join("■" if h else "□" for h in held)
            text = f"{marks} {sum(held)}/{len(prims)} held, {waiting} waiting"
            rows.append(Row(f"{stem}*", sum(held), len(prims), text))
        return rows
