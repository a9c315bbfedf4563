"""A run's operations as CSV: one row per operation, ready for pandas or a spreadsheet.

Rows come in the order the operations returned (the log's order per actor): sort by
``invoke_ts`` for time order. An operation that never returned (its actor deadlocked or was
stopped) still has its row, with ``outcome`` ``pending`` and no end. Times are seconds of wall
time since the run started, written exactly as the log has them, so ``wait_s`` is
``end_ts - invoke_ts`` to the last bit.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import msgspec

from sim._replay import LoadedRun, open_history
from sim.history import Operation, Subscriber

from . import speedup_of

__all__ = ["COLUMNS", "export_csv"]

COLUMNS = (
    "actor",
    "prim",
    "kind",
    "op",
    "invoke_ts",
    "end_ts",
    "wait_s",
    "outcome",
    "item",
    "value",
    "wait_sim_min",
    "detail",
    "invoke_seq",
)
# Payload fields with a column of their own, and the line fields every row already says.
_OWN = frozenset({"item", "value", "ts", "actor", "pid", "seq", "event", "prim", "kind", "op",
                  "phase"})  # fmt: skip


class _Rows(Subscriber):
    def __init__(self, writer: Any, speedup: float | None) -> None:
        self._writer = writer
        self._speedup = speedup
        self._encode = msgspec.json.Encoder().encode
        self.rows = 0

    def on_op(self, op: Operation) -> None:
        self._writer.writerow(_row(op, self._speedup, self._encode))
        self.rows += 1


def export_csv(loaded: LoadedRun, path: Path) -> int:
    """Write one row per operation of ``loaded`` to ``path``; return the number of rows.

    The log is streamed through the run's history, so memory holds only the operations in
    flight.
    """
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        history = open_history(loaded)
        rows = _Rows(writer, speedup_of(loaded))
        history.subscribe(rows)
        history.feed_file(loaded.events_path)
    return rows.rows


def _text(value: Any, encode: Any) -> str:
    # Strings as they are; anything else (numbers, lists, dicts) as JSON, which pandas and
    # json.loads read back.
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return str(encode(value).decode())


def _row(op: Operation, speedup: float | None, encode: Any) -> list[Any]:
    invoke = op.invoke
    done = op.done
    end: Any = ""
    wait: Any = ""
    sim_min: Any = ""
    if done is not None:
        end = done.ts
        wait = done.ts - invoke.ts
        if speedup is not None:
            sim_min = wait * speedup / 60.0
    detail = {k: v for k, v in invoke.fields.items() if k not in _OWN}
    if done is not None:
        detail.update((k, v) for k, v in done.fields.items() if k not in _OWN)
    if op.orphan:
        detail["invoke"] = "missing from the log"
    return [
        invoke.actor,
        invoke.prim,
        invoke.kind,
        invoke.op,
        invoke.ts,
        end,
        wait,
        op.outcome,
        _text(op.item, encode),
        _text(op.get("value"), encode),
        sim_min,
        _text(detail, encode) if detail else "",
        invoke.seq,
    ]
