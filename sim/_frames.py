"""A run's history as pandas DataFrames: its lines, operations, holds and actor states.

Each frame is one pass of the run's history (sim.history) with a subscriber that keeps what
the frame shows: the lines the history read, the operations it paired, the holds its kinds'
models opened and closed, the states it worked out for each actor. Nothing here reads the
log or pairs lines itself, so the frames say what the checks, the summary and the exports say
(``ops`` waits are the summary's waits, to the last bit).

pandas is imported here and only here, when a frame is asked for: ``import sim`` stays fast
for the actor processes and the command line.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from .export import speedup_of
from .history import History, Hold, Operation, State, Subscriber
from .history.lines import Line

if TYPE_CHECKING:
    import pandas as pd

    from ._replay import LoadedRun

__all__ = ["EVENT_COLUMNS", "HOLD_COLUMNS", "OP_COLUMNS", "STATE_COLUMNS", "frame"]

#: The contract's fields come first in ``events``; every other field of the log follows.
EVENT_COLUMNS = ("ts", "actor", "pid", "seq", "event", "step")
OP_COLUMNS = (
    "actor",
    "prim",
    "kind",
    "op",
    "invoke_ts",
    "end_ts",
    "wait_s",
    "wait_sim_min",
    "outcome",
    "blocking",
    "item",
    "value",
    "invoke_line",
    "end_line",
    "orphan",
)
HOLD_COLUMNS = ("actor", "prim", "start_ts", "end_ts", "held_s", "held_sim_min", "cut", "by")
STATE_COLUMNS = (
    "actor",
    "state",
    "category",
    "detail",
    "tone",
    "start_ts",
    "end_ts",
    "duration_s",
)


class _Lines(Subscriber):
    """Every line the history reads, in the order it reads them (time order)."""

    def __init__(self) -> None:
        self.lines: list[Line] = []

    def on_line(self, line: Line) -> None:
        self.lines.append(line)

    def on_invoke(self, op: Operation) -> None:
        self.lines.append(op.invoke)

    def on_op(self, op: Operation) -> None:
        # An orphan's one line is its invoke and its completion: it was kept at on_invoke.
        if op.done is not None and op.done is not op.invoke:
            self.lines.append(op.done)


class _Ops(Subscriber):
    def __init__(self, per_second: float | None) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self._per_second = per_second

    def on_op(self, op: Operation) -> None:
        invoke, done = op.invoke, op.done
        wait = None if done is None else done.ts - invoke.ts
        sim_min = None if wait is None or self._per_second is None else wait * self._per_second
        self.rows.append((
            invoke.actor, op.prim, op.kind, op.name, invoke.ts,
            None if done is None else done.ts, wait, sim_min, op.outcome, op.blocking,
            op.item, op.get("value"), invoke.number, None if done is None else done.number,
            op.orphan,
        ))  # fmt: skip


class _Holds(Subscriber):
    def __init__(self, per_second: float | None) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self._per_second = per_second

    def on_hold(self, hold: Hold) -> None:
        held = hold.duration
        sim_min = None if held is None or self._per_second is None else held * self._per_second
        by = hold.op.name if hold.op is not None else None
        self.rows.append((hold.actor, hold.prim, hold.start, hold.end, held, sim_min, hold.cut, by))


class _States(Subscriber):
    def __init__(self) -> None:
        self.rows: list[list[Any]] = []
        self._open: dict[str, list[Any]] = {}

    def attach(self, history: History) -> None:
        super().attach(history)
        # The states the history gave its actors before anybody listened (not started).
        for state in history.states().values():
            self.on_state(state)

    def on_state(self, state: State) -> None:
        before = self._open.get(state.actor)
        if before is not None:
            before[6] = state.since
        row = [state.actor, state.state, state.category, state.detail, state.tone, state.since,
               None, None]  # fmt: skip
        self.rows.append(row)
        self._open[state.actor] = row

    def on_finish(self) -> None:
        # The last state of each actor lasts to the end of the log.
        for row in self._open.values():
            row[6] = self.history.now


def frame(loaded: LoadedRun, which: str) -> pd.DataFrame:
    """The DataFrame ``which`` (``events``, ``ops``, ``holds`` or ``states``) of ``loaded``."""
    import pandas as pd

    from ._replay import open_history

    speedup = speedup_of(loaded)
    per_second = None if speedup is None else speedup / 60.0
    history = open_history(loaded, track_states=which == "states")
    if which == "events":
        lines = history.subscribe(_Lines())
        assert isinstance(lines, _Lines)
        history.keep_malformed = sys.maxsize  # the frame shows every line, readable or not
        history.feed_file(loaded.events_path)
        kept = [*lines.lines, *(line for line, _ in history.malformed)]
        df = pd.DataFrame([line.fields for line in kept],
                          index=pd.Index([line.number for line in kept], name="line"))  # fmt: skip
        first = [c for c in EVENT_COLUMNS if c in df.columns]
        return df[first + [c for c in df.columns if c not in first]]
    if which == "ops":
        ops = _Ops(per_second)
        history.subscribe(ops)
        history.feed_file(loaded.events_path)
        df = pd.DataFrame(ops.rows, columns=list(OP_COLUMNS))
        df = df.sort_values(["invoke_ts", "invoke_line"], kind="stable", ignore_index=True)
        return df.astype({"end_line": "Int64"})
    if which == "holds":
        holds = _Holds(per_second)
        history.subscribe(holds)
        history.feed_file(loaded.events_path)
        df = pd.DataFrame(holds.rows, columns=list(HOLD_COLUMNS))
        return df.sort_values(["start_ts", "actor"], kind="stable", ignore_index=True)
    if which == "states":
        states = _States()
        history.subscribe(states)
        history.feed_file(loaded.events_path)
        df = pd.DataFrame(states.rows, columns=list(STATE_COLUMNS))
        df["duration_s"] = df["end_ts"] - df["start_ts"]
        return df
    raise ValueError(f"no frame {which!r}; one of: events, ops, holds, states")
