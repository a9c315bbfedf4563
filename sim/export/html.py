"""The replay page: one self-contained HTML file that plays a run in a browser, offline.

``python -m sim replay RUN --export html page.html`` writes the run's tape (sim.views.tape)
as data inside the page, beside the page's own style sheet and script (``sim/export/page/``):
nothing is fetched, so it opens from a USB stick on a classroom's projector. A teacher gets
lanes per actor, a gauge per primitive, play/pause/step and a seek slider (by scheduling step
for a virtual run), the fields and the wait of any operation clicked, and the findings with
their explanations at the step where they occur; the summary waits for the end.
"""

from __future__ import annotations

import html
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from sim._replay import LoadedRun
from sim.history import Operation, State
from sim.report import format_value
from sim.views.board import counted
from sim.views.palette import color_of
from sim.views.tape import Tape, describe_line, record

from . import describe_params, speedup_of

__all__ = ["export_html", "page_data"]

_ENCODE = msgspec.json.Encoder().encode


def export_html(loaded: LoadedRun, path: Path) -> int:
    """Write the page of ``loaded`` to ``path``; returns the number of steps it plays."""
    tape = record(loaded)
    data = page_data(tape)
    path.write_text(_page(loaded.title, data), encoding="utf-8")
    return tape.end


def _page(title: str, data: dict[str, Any]) -> str:
    folder = resources.files("sim.export") / "page"
    template = (folder / "page.html").read_text(encoding="utf-8")
    style = (folder / "page.css").read_text(encoding="utf-8")
    script = (folder / "page.js").read_text(encoding="utf-8")
    # Inside <script>, only "</" could end the element early: JSON lets it be written "<\/".
    payload = _ENCODE(data).decode().replace("</", "<\\/")
    return (template.replace("{{title}}", html.escape(title))
            .replace("/*{{style}}*/", style)
            .replace("{{data}}", payload)
            .replace("/*{{script}}*/", script))  # fmt: skip


def _state(state: State) -> list[Any]:
    return [state.state, state.category, state.detail, color_of(state.state, state.category,
            state.tone), state.since, counted(state)]  # fmt: skip


def _fields(fields: dict[str, Any]) -> dict[str, Any]:
    # The engine's run_start carries the whole config: the page shows it, as JSON-able data.
    return {k: v for k, v in fields.items() if k not in ("~raw", "~number", "~cache")}


def _op(tape: Tape, i: int, op: Operation, speedup: float | None) -> dict[str, Any]:
    wait = op.wait
    return {
        "id": i,
        "actor": op.actor,
        "prim": op.prim,
        "kind": op.kind,
        "op": op.name,
        "b": tape.began.get(id(op), 0),
        "e": tape.ended.get(id(op)),
        "outcome": op.outcome,
        "blocking": op.blocking,
        "wait": wait,
        "wait_min": None if wait is None or not speedup else wait * speedup / 60,
        "invoke": _fields(op.invoke.fields),
        "done": None if op.done is None or op.done is op.invoke else _fields(op.done.fields),
    }


def page_data(tape: Tape) -> dict[str, Any]:
    """What the page's script reads: the run's steps and what each changed, its operations,
    its lanes as segments, its findings, and the summary for the end."""
    loaded = tape.loaded
    speedup = speedup_of(loaded)
    steps = []
    lines: list[dict[str, Any]] = []
    line_ops: dict[int, int] = {}
    ops = [_op(tape, i, op, speedup) for i, op in enumerate(tape.ops)]
    for i, op in enumerate(tape.ops):
        line_ops[id(op.invoke)] = i
        if op.done is not None:
            line_ops[id(op.done)] = i
    for step in tape.steps:
        first = len(lines)
        for line in step.lines:
            lines.append({"actor": line.actor, "text": describe_line(line, short=True),
                          "op": line_ops.get(id(line)), "fields": _fields(line.fields),
                          "event": line.event})  # fmt: skip
        steps.append([step.ts, step.step, first, len(lines)])
    deltas = []
    segments: dict[str, list[list[Any]]] = {name: [] for name in tape.names}
    for at in range(len(tape)):
        delta = tape.delta(at)
        deltas.append({
            "r": {n: [r.value, r.capacity, r.text] for n, r in delta.rows.items()},
            "a": {a: _state(s) for a, s in delta.states.items()},
            "n": delta.news,
            "o": delta.roles,
        })  # fmt: skip
        for actor, state in delta.states.items():
            lane = segments.setdefault(actor, [])
            if lane:
                lane[-1][1] = at
            lane.append([at, None, state.state, color_of(state.state, state.category,
                         state.tone), state.detail, state.category])  # fmt: skip
    report = tape.report
    spec = tape.spec
    metrics = []
    if report is not None and spec is not None:
        metrics = [[m.label, format_value(report.metrics[m.key], m.unit)]
                   for m in spec.metrics if m.show and m.key in report.metrics]  # fmt: skip
    manifest = loaded.manifest or {}
    return {
        "title": loaded.title,
        "scenario": loaded.config.scenario if loaded.config is not None else "",
        "params": describe_params(loaded),
        "log": str(loaded.run_dir or loaded.events_path),
        "virtual": tape.virtual,
        "speedup": speedup,
        "wall": manifest.get("wall_s"),
        "names": tape.names,
        "rows": tape.row_names,
        "steps": steps,
        "lines": lines,
        "deltas": deltas,
        "ops": ops,
        "segments": segments,
        "notices": [[n.at, n.label, n.name, n.text] for n in tape.notices],
        "verdicts": [[v.status, v.name, v.detail] for v in tape.verdicts()],
        "metrics": metrics,
        "status": "ok" if report is not None and report.ok else "failed",
        "reason": report.reason if report is not None else "",
        "recorded": manifest.get("status", "unknown"),
    }
