"""A finished run recorded step by step, for the displays that go back and forth in it: the
interactive player (``replay --play``) and the replay page (``replay --export html``).

:func:`record` reads the log once, through the same history, checks and analysis as
``replay`` (so it reaches the same verdicts), and keeps what changed at every step: the gauges,
the actors' states, the engine's news. A step is one scheduling step in a virtual run (its
lines share a ``step``), one line otherwise. :meth:`Tape.snapshot` gives the board after any
step, from the nearest key frame, so that stepping back costs no more than stepping on.

The findings come at the step where they happen: the engine's (a deadlock), and a check's
verdict at the step where it first found a problem (or at the end, for a check that can only
tell then), with the words of its verdict.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sim import scenario as _scenario
from sim.analysis import Report, analyse
from sim.checks import Check, Verdict
from sim.errors import ScenarioError
from sim.history import History, Operation, State, Subscriber
from sim.history.lines import Line

from .board import Board, Note, Row, Snapshot

if TYPE_CHECKING:
    from sim._replay import LoadedRun

__all__ = ["Delta", "Notice", "Step", "Tape", "describe_line", "record"]

# A key frame every this many steps: a snapshot is at most this many deltas from one.
_KEY_EVERY = 64
_SYSTEM = frozenset({"engine", "coordinator"})
_CONTRACT = frozenset({"ts", "actor", "pid", "seq", "event", "step"})
_OP = frozenset({"prim", "kind", "op", "phase"})


@dataclass(frozen=True)
class Step:
    """What happened in one step: its ``lines``, at time ``ts`` (the scheduling ``step`` of a
    virtual run); ``seen`` counts the log's lines up to and with this step's."""

    ts: float
    step: int | None
    lines: tuple[Line, ...]
    seen: int


@dataclass(frozen=True)
class Notice:
    """A finding at position ``at`` of the tape: the engine's news (``label`` is its event:
    ``deadlock``) or a check's verdict (``label`` is its status: ``FAIL``, ``shown``)."""

    at: int
    ts: float
    label: str
    name: str
    text: str

    @property
    def note(self) -> Note:
        return Note(self.label, self.name, self.text)


@dataclass
class Delta:
    """What one step changed: gauges by name, actors' states, the engine's news (None: as it
    was), actors' roles."""

    rows: dict[str, Row] = field(default_factory=dict)
    states: dict[str, State] = field(default_factory=dict)
    news: str | None = None
    roles: dict[str, str] = field(default_factory=dict)


@dataclass
class _Key:
    rows: dict[str, Row]
    states: dict[str, State]
    news: str
    roles: dict[str, str]


class Tape:
    """A run, step by step. Position 0 is before the first line, position ``len(steps)``
    after the last; :meth:`snapshot` gives the board at any position."""

    def __init__(self, loaded: LoadedRun) -> None:
        self.loaded = loaded
        self.steps: list[Step] = []
        self.notices: list[Notice] = []
        #: Every operation, in the order it began, with the positions it began and ended at.
        self.ops: list[Operation] = []
        self.began: dict[int, int] = {}
        self.ended: dict[int, int] = {}
        self.names: list[str] = list(loaded.actors)
        self.report: Report | None = None
        self.spec: _scenario.Scenario[Any] | None = None
        self._deltas: list[Delta] = [Delta()]
        self._keys: dict[int, _Key] = {}
        self._row_order: list[str] = []

    def __len__(self) -> int:
        """The number of positions: one more than the steps."""
        return len(self.steps) + 1

    @property
    def end(self) -> int:
        return len(self.steps)

    @property
    def virtual(self) -> bool:
        return bool(self.steps) and self.steps[-1].step is not None

    def ts(self, at: int) -> float:
        """The log's time at position ``at``."""
        return self.steps[at - 1].ts if at > 0 and self.steps else 0.0

    def snapshot(self, at: int) -> Snapshot:
        """The board after ``at`` steps."""
        at = max(0, min(at, self.end))
        base = at - at % _KEY_EVERY
        key = self._keys[base]
        rows, states, news, roles = dict(key.rows), dict(key.states), key.news, dict(key.roles)
        for delta in self._deltas[base + 1 : at + 1]:
            rows.update(delta.rows)
            states.update(delta.states)
            roles.update(delta.roles)
            if delta.news is not None:
                news = delta.news
        step = self.steps[at - 1] if at > 0 else None
        return Snapshot(
            now=self.ts(at),
            lines=0 if step is None else step.seen,
            rows=tuple(rows[name] for name in self._row_order if name in rows),
            names=tuple(self.names),
            states=states,
            roles=roles,
            news=news,
            step=None if step is None else step.step,
            notes=tuple(n.note for n in self.notices if n.at <= at),
        )

    def delta(self, at: int) -> Delta:
        """What the step that led to position ``at`` changed (position 0: nothing)."""
        return self._deltas[at]

    @property
    def row_names(self) -> list[str]:
        """Every gauge's name, in the order they first appeared."""
        return list(self._row_order)

    def next_notice(self, at: int) -> int | None:
        """The position of the first finding after ``at``."""
        return next((n.at for n in self.notices if n.at > at), None)

    def previous_notice(self, at: int) -> int | None:
        return next((n.at for n in reversed(self.notices) if n.at < at), None)

    def touches(self, at: int, actor: str) -> bool:
        """Whether ``actor`` did something in the step that led to position ``at``."""
        return 0 < at <= self.end and any(line.actor == actor for line in self.steps[at - 1].lines)

    def position_at(self, ts: float, after: int = 0) -> int:
        """The last position whose time is at most ``ts`` (searching from ``after`` on)."""
        at = after
        while at < self.end and self.steps[at].ts <= ts:
            at += 1
        return at

    def verdicts(self) -> list[Verdict]:
        return [] if self.report is None else list(self.report.verdicts)


def describe_line(line: Line, *, short: bool = False) -> str:
    """A line in words: ``phil-000 acquire fork-1: ok``, ``car-017 park visit=0 stay=95``
    (``short``: the engine's long fields, such as a deadlock's explanation, left out)."""
    if line.event == "op":
        what = f"{line.actor} {line.op} {line.prim}"
        extra = " ".join(
            f"{k}={_short(v)}" for k, v in line.fields.items() if k not in _CONTRACT | _OP
        )  # fmt: skip
        return f"{what}: {line.phase}" + (f" ({extra})" if extra else "")
    skip = _LONG if short or line.actor in _SYSTEM else frozenset()
    fields = " ".join(
        f"{k}={_short(v)}" for k, v in line.fields.items()
        if k not in _CONTRACT and k not in skip and not (short and line.actor in _SYSTEM
                                                         and k in _ENGINE_LONG)
    )  # fmt: skip
    return f"{line.actor} {line.event}" + (f" {fields}" if fields else "")


# Fields of the engine's lines too long to say in a line (the page shows them when clicked).
_LONG = frozenset({"config", "primitives", "actor_names", "waits"})
_ENGINE_LONG = frozenset({"explanation", "reason", "cycle"})


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:59] + "…"


class _Recorder(Subscriber):
    """Notes, while the history is fed, what changes in each step."""

    prims = None
    events = frozenset()

    def __init__(self, tape: Tape, board: Board) -> None:
        self.tape = tape
        self.board = board
        self.position = 0
        self.changed: dict[str, State] = {}
        self.rows: dict[str, Row] = {}
        self.news = ""
        self.roles: dict[str, str] = {}
        self.checks: list[Check] = []
        self.first: dict[int, tuple[int, float, str]] = {}

    def attach(self, history: History) -> None:
        super().attach(history)
        # Subscribed after the checks (analyse subscribes them first), in the verdicts' order.
        self.checks = [s for s in history.subscribers if isinstance(s, Check)]
        self._save()
        self.tape._keys[0] = _Key(dict(self.rows), {}, "", {})

    def on_invoke(self, op: Operation) -> None:
        self.tape.began[id(op)] = self.position
        self.tape.ops.append(op)

    def on_op(self, op: Operation) -> None:
        if op.done is not None:
            self.tape.ended[id(op)] = self.position

    def on_state(self, state: State) -> None:
        self.changed[state.actor] = state
        if state.actor not in self.tape.names and state.actor not in _SYSTEM:
            self.tape.names.append(state.actor)

    def _save(self) -> Delta:
        """What changed since the last step, as a delta; the current board remembered."""
        delta = Delta(states=self.changed)
        self.changed = {}
        for row in self.board.rows():
            if row.name not in self.rows:
                self.tape._row_order.append(row.name)
            if self.rows.get(row.name) != row:
                delta.rows[row.name] = row
                self.rows[row.name] = row
        if self.board.news != self.news:
            delta.news = self.news = self.board.news
        for actor, role in self.board.roles.items():
            if self.roles.get(actor) != role:
                delta.roles[actor] = self.roles[actor] = role
        return delta

    def stepped(self, step: Step) -> None:
        """``step`` has been fed: its delta, a key frame now and then, new findings."""
        tape = self.tape
        tape.steps.append(step)
        delta = self._save()
        tape._deltas.append(delta)
        at = self.position
        if delta.news:
            kind, _, text = delta.news.partition(": ")
            tape.notices.append(Notice(at, step.ts, kind, "engine", text or kind))
        for i, check in enumerate(self.checks):
            if i not in self.first and check.problems:
                shown = check.problems.shown[0] if check.problems.shown else ""
                self.first[i] = (at, step.ts, shown)
        if at % _KEY_EVERY == 0:
            self._key(at)

    def _key(self, at: int) -> None:
        tape = self.tape
        states = dict(tape._keys[at - _KEY_EVERY].states) if at >= _KEY_EVERY else {}
        news = tape._keys[at - _KEY_EVERY].news if at >= _KEY_EVERY else ""
        for delta in tape._deltas[max(at - _KEY_EVERY + 1, 1) : at + 1]:
            states.update(delta.states)
            if delta.news is not None:
                news = delta.news
        tape._keys[at] = _Key(dict(self.rows), states, news, dict(self.roles))

    def on_finish(self) -> None:
        # What the end of the log cuts (holds still open) belongs to the last step.
        last = self.tape._deltas[-1]
        delta = self._save()
        last.states.update(delta.states)
        last.rows.update(delta.rows)
        if self.position and self.position % _KEY_EVERY == 0:
            self._key(self.position)


def _steps(lines: Iterator[Line]) -> Iterator[Step]:
    """The lines grouped into steps: a virtual run's by their scheduling step, others one by
    one."""
    group: list[Line] = []
    seen = 0
    for line in lines:
        if group and (line.step is None or line.step != group[-1].step):
            seen += len(group)
            yield Step(group[0].ts, group[0].step, tuple(group), seen)
            group = []
        group.append(line)
    if group:
        yield Step(group[0].ts, group[0].step, tuple(group), seen + len(group))


def record(loaded: LoadedRun) -> Tape:
    """Read ``loaded`` into a tape: its steps, what each changed, its findings and verdicts
    (the same as ``replay``'s)."""
    from sim._replay import lines_of

    tape = Tape(loaded)
    spec = None
    expected: tuple[str, ...] = ()
    if loaded.config is not None:
        try:
            spec = _scenario.load(loaded.config.scenario)
        except ScenarioError:
            spec = None
        else:
            expected = loaded.config.expect
    tape.spec = spec
    board = Board()
    recorder = _Recorder(tape, board)

    def chunks() -> Iterator[list[Line]]:
        for step in _steps(lines_of(loaded)):
            recorder.position += 1
            yield list(step.lines)
            # The history has seen the step by the time the next one is asked for.
            recorder.stepped(step)

    report = analyse(
        chunks(),
        primitives=loaded.primitives,
        actors=loaded.actors,
        config=loaded.config,
        scenario=spec,
        expected=expected,
        findings=[],
        subscribers=[board, recorder],
        track_states=True,
    )
    tape.report = report
    _place_verdicts(tape, recorder, report.verdicts)
    return tape


def _place_verdicts(tape: Tape, recorder: _Recorder, verdicts: list[Verdict]) -> None:
    """Each failed (or shown) verdict at the step its check first found a problem, in the
    words it had then; a check that could only tell at the end, at the end."""
    checks = recorder.checks
    paired = len(checks) == len(verdicts)
    for i, verdict in enumerate(verdicts):
        if verdict.status not in ("fail", "expected"):
            continue
        label = "FAIL" if verdict.status == "fail" else "shown"
        found = recorder.first.get(i) if paired else None
        if found is None:
            tape.notices.append(
                Notice(tape.end, tape.ts(tape.end), label, verdict.name, verdict.detail)
            )
        else:
            at, ts, text = found
            tape.notices.append(Notice(at, ts, label, verdict.name, text or verdict.detail))
    tape.notices.sort(key=lambda n: n.at)
