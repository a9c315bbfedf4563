"""The run at one moment, as a board: a gauge per primitive, a lane per actor, the news.

A :class:`Board` subscribes to a history and answers what a display needs, from the history's
own models and states: it tracks nothing of its own but the engine's news, the actors' roles
and the changes of state since a display last looked. :meth:`Board.snapshot` freezes it into
a :class:`Snapshot`, which is what every display draws: the live view and ``--speed`` from a
board fed as lines arrive, the interactive player and the page from a recorded tape (see
:mod:`sim.views.tape`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from sim.history import History, Subscriber
from sim.history.facts import State
from sim.history.lines import Line

__all__ = ["Board", "Note", "Row", "Snapshot", "group_of"]


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


def group_of(name: str, roles: Mapping[str, str]) -> str:
    """The group an actor is shown in when lanes do not fit: its role (the function it runs,
    from its ``actor_start``), else the stem of its name."""
    return roles.get(name) or stem_of(name)


#: How many actors of each kind a board counts, in the order they are shown.
COUNTED = ("not started", "running", "blocked", "done")


def counted(state: State | None) -> str:
    """Which of :data:`COUNTED` an actor in ``state`` is counted as."""
    category = "new" if state is None else state.category
    return {"new": "not started", "wait": "blocked", "done": "done"}.get(category, "running")


@dataclass(frozen=True)
class Note:
    """A finding in words: ``label`` what sort (``deadlock``; a verdict's ``FAIL`` or
    ``shown``), ``name`` who found it (the engine, or the check), ``text`` what it is."""

    label: str
    name: str
    text: str


@dataclass(frozen=True)
class Snapshot:
    """The board at one moment, frozen: what a display draws.

    ``now`` is the log's time (seconds since the run started), ``lines`` how many lines have
    been seen, ``step`` the scheduling step of a virtual run; ``rows`` a gauge per primitive,
    ``states`` what each of ``names`` is doing (absent: not started), ``news`` the engine's
    latest word (a deadlock's explanation) and ``notes`` the findings so far.
    """

    now: float
    lines: int
    rows: tuple[Row, ...]
    names: tuple[str, ...]
    states: Mapping[str, State]
    roles: Mapping[str, str] = field(default_factory=dict)
    news: str = ""
    step: int | None = None
    notes: tuple[Note, ...] = ()

    def state(self, actor: str) -> State | None:
        return self.states.get(actor)

    def counts(self) -> dict[str, int]:
        """How many actors have not started, are running, are blocked, are done."""
        counts = dict.fromkeys(COUNTED, 0)
        for name in self.names:
            counts[counted(self.states.get(name))] += 1
        return counts

    def group(self, actor: str) -> str:
        return group_of(actor, self.roles)


class Board(Subscriber):
    """What a display shows of a history: subscribe it, then ask :meth:`rows`, :meth:`state`
    and :attr:`news` whenever a frame is drawn."""

    events = frozenset({"deadlock", "stopping", "fault", "actor_start"})
    prims = frozenset()

    def __init__(self) -> None:
        self.news = ""
        self.deadlocked = False
        self.roles: dict[str, str] = {}
        #: State changes not yet taken by a display (the printed timeline takes them).
        self.changes: deque[State] = deque()
        self.keep_changes = False

    def attach(self, history: History) -> None:
        super().attach(history)
        self.names: list[str] = list(history.actors)

    def on_line(self, line: Line) -> None:
        if line.event == "actor_start":
            role = line.get("role")
            if isinstance(role, str) and role:
                self.roles[line.actor] = role
            return
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
        counts = dict.fromkeys(COUNTED, 0)
        for name in self.names:
            counts[counted(self.history.state_of(name))] += 1
        return counts

    def snapshot(self, now: float | None = None, notes: tuple[Note, ...] = ()) -> Snapshot:
        """The board as it is, frozen (``now`` defaults to the latest time seen)."""
        history = self.history
        states = {n: s for n in self.names if (s := history.state_of(n)) is not None}
        return Snapshot(history.now if now is None else now, history.lines, tuple(self.rows()),
                        tuple(self.names), states, dict(self.roles), self.news,
                        notes=notes)  # fmt: skip

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
            # Taken, not merely held: a lock whose holder was stopped stays locked.
            held = [bool(m.holders()) or m.gauges.get("held", 0) > 0 for m in models]
            waiting = sum(int(m.gauges.get("waiting", 0)) for m in models)
            marks = "".join("■" if h else "□" for h in held)
            text = f"{marks} {sum(held)}/{len(prims)} held, {waiting} waiting"
            rows.append(Row(f"{stem}*", sum(held), len(prims), text))
        return rows
