"""The live history of a wall-clock run, with real processes: it goes through the states the
run went through (those replay finds, in time order), not those of the lines' arrival order,
and at the end it has every line.

The display is one of the tests' own: a real :class:`~sim.runtime.engine.LiveDisplay` that
the engine drives as it drives the live view, which records what the live history showed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from sim import load_config
from sim import scenario as _scenario
from sim.coordinator import LiveCounters, live_window_s
from sim.history import History, Hold, Subscriber
from sim.history.lines import ordered, read_lines
from sim.runtime.engine import Execution, execute, plan


class _Gauges(Subscriber):
    """Each gauge's values, as they changed, and who began to hold what, in order."""

    events = frozenset()

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], list[float]] = {}
        self.holds: list[tuple[str, str]] = []

    def on_hold_start(self, hold: Hold) -> None:
        self.holds.append((hold.prim, hold.actor))

    def on_gauge(self, ts: float, prim: str, values: Mapping[str, float]) -> None:
        for series, value in values.items():
            shown = self.values.setdefault((prim, series), [])
            if not shown or shown[-1] != value:
                shown.append(value)


class _Recording:
    """A live display that draws nothing: it keeps the gauges the live history showed, and
    what that history had seen when the engine stopped the display (its last frame)."""

    def __init__(self) -> None:
        self.gauges = _Gauges()
        self.last: tuple[int, dict[str, str], int] | None = None

    async def run(self, counters: LiveCounters, total: int) -> None:
        history = counters.history
        history.subscribe(self.gauges)
        try:
            await anyio.sleep_forever()
        finally:
            self.last = (history.lines, dict(history.ended), history.late_lines)


def _run(tmp_path: Path, toml: str) -> tuple[Execution, _Recording, _Gauges, list[dict[str, Any]]]:
    """Run ``toml`` with a recording display; the execution, the display, the gauges of the
    log replayed in time order, and the log's lines in file (arrival) order."""
    path = tmp_path / "run.toml"
    path.write_text(toml, encoding="utf-8")
    config = load_config(path)
    planned = plan(config, _scenario.of(config))
    display = _Recording()
    execution = execute(planned, tmp_path / "run", display, seed=1)
    replayed = History(planned.described, actors=[a.name for a in planned.actors],
                       states=planned.states, track_states=True)  # fmt: skip
    gauges = replayed.subscribe(_Gauges())
    for chunk in ordered(read_lines(execution.events_path)):
        replayed.feed(chunk)
    with open(execution.events_path, encoding="utf-8") as fh:
        arrived = [json.loads(line) for line in fh]
    return execution, display, gauges, arrived


def _at(arrived: list[dict[str, Any]], actor: str, op: str, phase: str) -> int:
    return next(i for i, e in enumerate(arrived) if e["actor"] == actor and e.get("op") == op
                and e.get("phase") == phase)  # fmt: skip


@pytest.mark.timeout(60)
def test_a_lock_handed_over_has_one_holder_live_as_in_replay(tmp_path: Path) -> None:
    # The holder's release reaches the coordinator after the waiter's acquire that followed it,
    # in the middle of what the window allows: (window - flush) / 2 to spare either way, ~0.2 s.
    flush = 0.4
    window = live_window_s(flush * 1000)
    execution, display, replayed, arrived = _run(tmp_path, f"""
scenario = "tests.scenario_reorder"
[params]
hold = {flush + 0.2}
settle_s = {flush / 2}
arrive_s = {(flush + window) / 2}
[clock]
speedup = 60
[engine]
flush_ms = {flush * 1000}
""")  # fmt: skip
    assert execution.status == "ok", execution.reason
    held = _at(arrived, "holder", "acquire", "ok")
    release = _at(arrived, "holder", "release", "invoke")
    taken = _at(arrived, "waiter", "acquire", "ok")
    assert held < taken < release  # the release arrived after the next acquire...
    assert arrived[release]["ts"] < arrived[taken]["ts"]  # ...though it happened before it
    shown = display.gauges.values[("lock", "held")]
    assert shown == replayed.values[("lock", "held")] == [0, 1, 0, 1, 0]
    assert display.gauges.holds == replayed.holds == [("lock", "holder"), ("lock", "waiter")]
    assert display.gauges.values == replayed.values
    # The last frame came once every actor's lines were in; only run_end is logged later.
    assert display.last == (len(arrived) - 1, {"holder": "ok", "waiter": "ok", "ticker": "ok"}, 0)
    assert execution.counters.history.lines == len(arrived)


@pytest.mark.timeout(60)
def test_a_line_later_than_the_window_is_counted_late_not_dropped(tmp_path: Path) -> None:
    # The holder of tests/scenario_late is stopped for half a second with its release unsent:
    # far beyond the window at the default flush_ms. The live history still gets every line.
    execution, display, _, arrived = _run(tmp_path, """
scenario = "tests.scenario_late"
[params]
late_s = 0.5
burst = 50
""")  # fmt: skip
    assert execution.status == "ok", execution.reason
    live = execution.counters.history
    assert live.lines == len(arrived)
    assert live.late_lines >= 1
    assert live.late_s > live_window_s(5.0)
    assert display.last is not None
    assert display.last[0] == len(arrived) - 1
