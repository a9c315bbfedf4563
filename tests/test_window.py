"""The live history's reordering window (sim.history.window): lines given in arrival order
reach the history in time order once due, late lines are counted and never dropped, and what
is held at the end is flushed. Synthetic lines, no processes: test_live_order.py runs it for
real."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pytest

from sim.history import History, Operation, Subscriber, line_of
from sim.history.lines import Line
from sim.history.window import ReorderWindow

LOCK = {"lock": {"kind": "lock"}}


def _line(ts: float, actor: str, seq: int, event: str = "tick", **more: Any) -> Line:
    return line_of({"ts": ts, "actor": actor, "pid": 1, "seq": seq, "event": event, **more})


def _op(ts: float, actor: str, seq: int, op: str, phase: str, prim: str = "lock") -> Line:
    return _line(ts, actor, seq, "op", prim=prim, kind="lock", op=op, phase=phase)


class _Seen(Subscriber):
    """Every line and operation it is handed, in order; each gauge's values as they changed."""

    def __init__(self, events: frozenset[str] | None = None) -> None:
        self.events = events
        self.seen: list[tuple[Any, ...]] = []
        self.gauges: dict[tuple[str, str], list[float]] = {}

    def on_line(self, line: Line) -> None:
        self.seen.append(("line", line.actor, line.seq))

    def on_op(self, op: Operation) -> None:
        self.seen.append(("op", op.actor, op.invoke.seq, op.done and op.done.seq))

    def on_gauge(self, ts: float, prim: str, values: Mapping[str, float]) -> None:
        for series, value in values.items():
            shown = self.gauges.setdefault((prim, series), [])
            if not shown or shown[-1] != value:
                shown.append(value)


def _count_takes(history: History) -> list[bool]:
    """What each of ``history``'s blocks taken whole (``_take_runs``) answered, from now on."""
    taken: list[bool] = []
    take = history._take_runs

    def counted(*args: Any, **kwargs: Any) -> bool:
        taken.append(take(*args, **kwargs))
        return taken[-1]

    history._take_runs = counted  # type: ignore[method-assign]
    return taken


def test_lines_reach_the_history_in_time_order_once_they_are_due() -> None:
    history = History()
    seen = history.subscribe(_Seen(events=None))
    woken: list[int] = []
    window = ReorderWindow(history, 0.05, lambda: woken.append(1))
    # b's block comes first, though a's lines are older or as old.
    window.add("b", [_line(1.01, "b", 0), _line(1.03, "b", 1)])
    window.add("a", [_line(1.00, "a", 0), _line(1.02, "a", 1), _line(1.04, "a", 2)])
    assert woken == [1]  # once, when the empty window was given lines
    assert window.due() == pytest.approx(1.05)
    window.release(1.049)  # nothing is 0.05 s old yet
    assert (history.lines, window.held) == (0, 5)
    window.release(1.075)  # lines up to 1.025
    assert seen.seen == [("line", "a", 0), ("line", "b", 0), ("line", "a", 1)]
    assert window.held == 2
    assert window.due() == pytest.approx(1.08)
    window.flush()
    assert [s[1:] for s in seen.seen] == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2)]
    assert (history.lines, history.late_lines, window.held, window.due()) == (5, 0, 0, None)


def test_a_lock_handed_over_never_shows_two_holders() -> None:
    # alice releases at 1.000 (the release is logged before it takes effect), bob's acquire
    # returns at 1.001; bob's lines arrive first. In arrival order the lock has two holders.
    alice = [
        _op(0.5, "alice", 0, "acquire", "invoke"),
        _op(0.6, "alice", 1, "acquire", "ok"),
        _op(1.000, "alice", 2, "release", "invoke"),
        _op(1.0002, "alice", 3, "release", "ok"),
    ]
    bob = [_op(0.7, "bob", 0, "acquire", "invoke"), _op(1.001, "bob", 1, "acquire", "ok")]
    held: dict[float, list[float]] = {}
    for hold in (0.0, 0.05):
        history = History(LOCK)
        seen = history.subscribe(_Seen())
        window = ReorderWindow(history, hold)
        window.add("alice", alice[:2])
        window.add("bob", bob[:1])
        window.add("bob", bob[1:])
        window.add("alice", alice[2:])
        window.flush()
        held[hold] = seen.gauges[("lock", "held")]
    assert max(held[0.0]) == 2  # arrival order: a state that never happened
    assert held[0.05] == [0, 1, 0, 1]


def test_a_line_later_than_the_window_is_still_counted_late() -> None:
    history = History()
    window = ReorderWindow(history, 0.05)
    window.add("a", [_line(1.0, "a", 0), _line(1.1, "a", 1)])
    window.release(1.2)  # both handed on: the history is at 1.1
    window.add("b", [_line(1.02, "b", 0)])  # came 0.18 s after its time
    assert window.due() == pytest.approx(1.07)
    window.release(1.21)
    assert (history.lines, history.late_lines) == (3, 1)
    assert history.late_s == pytest.approx(0.08)
    assert history.next_seq == {"a": 2, "b": 1}


def test_an_actors_lines_whose_times_go_back_are_fed_as_replay_reads_them() -> None:
    # Two threads of one actor logging at once: its seq and its times disagree. Replay sorts
    # by time; so does the window, and the history counts the same gaps.
    lines = [_line(1.0, "a", 0), _line(1.2, "a", 1), _line(1.1, "a", 2)]
    live, replayed = History(), History()
    seen = live.subscribe(_Seen(events=None))
    window = ReorderWindow(live, 0.05)
    window.add("a", lines[:2])
    window.add("a", lines[2:])
    window.release(1.16)
    assert seen.seen == [("line", "a", 0), ("line", "a", 2)]
    window.flush()
    replayed.feed(sorted(lines, key=lambda line: line.ts))
    assert (live.lines, live.gap_count, live.next_seq) == (3, 2, {"a": 3})
    assert (replayed.lines, replayed.gap_count, replayed.next_seq) == (3, 2, {"a": 3})


def test_quiet_blocks_are_taken_whole_and_counted_as_if_merged() -> None:
    # Blocks of lines nobody reads, of two actors over the same stretch of time: taken without
    # a step per line, yet the history ends as if fed them merged in time order (not one late).
    history = History()
    taken = _count_takes(history)
    window = ReorderWindow(history, 0.05)
    a = [_line(1.0 + i / 100, "a", i) for i in range(10)]
    b = [_line(1.005 + i / 100, "b", i) for i in range(10)]
    window.add("a", a, quiet=history.quiet("a", a))
    window.add("b", b, quiet=history.quiet("b", b))
    window.flush()
    assert taken == [True]
    assert (history.lines, history.late_lines, history.now) == (20, 0, b[-1].ts)
    assert history.next_seq == {"a": 10, "b": 10}


def test_a_subscriber_added_while_lines_are_held_sees_them() -> None:
    history = History()
    window = ReorderWindow(history, 0.05)
    lines = [_line(1.0, "a", 0, "read_me"), _line(1.01, "a", 1)]
    window.add("a", lines, quiet=history.quiet("a", lines))  # quiet: nobody reads them yet
    seen = history.subscribe(_Seen(events=frozenset({"read_me"})))
    window.flush()
    assert seen.seen == [("line", "a", 0)]


def _arrivals(seed: int, hold: float) -> list[tuple[float, str, list[Line]]]:
    """Blocks as a coordinator receives them: (arrival time, actor, lines), in arrival order.
    Each actor's lines in its order, in blocks that arrive up to ``hold`` after their first
    line's time; mostly lines nobody reads, with operations, lifecycle lines, lines somebody
    reads and the engine's lines among them."""
    rng = random.Random(seed)
    blocks: list[tuple[float, str, list[Line]]] = []
    for actor in ("a", "b", "c", "engine"):
        ts, seq, sent = 0.0, 0, 0.0
        while ts < 2.0:
            lines = []
            for _ in range(rng.randint(1, 30)):
                ts += rng.uniform(0.0, 0.004)
                pick = rng.random()
                if actor == "engine":
                    fields = {"event": "spawn", "target": "a"}
                elif pick < 0.1:
                    fields = {"event": "op", "prim": "s", "kind": "semaphore", "op": "acquire",
                              "phase": rng.choice(["invoke", "ok"])}  # fmt: skip
                elif pick < 0.12:
                    fields = {"event": rng.choice(["actor_start", "read_me"])}
                else:
                    fields = {"event": "tick"}
                lines.append(line_of({"ts": ts, "actor": actor, "pid": 1, "seq": seq, **fields}))
                seq += 1
            # One connection each: an actor's blocks arrive in its order.
            sent = max(sent, lines[0].ts + rng.uniform(0.0, hold * 0.99))
            blocks.append((sent, actor, lines))
    blocks.sort(key=lambda block: block[0])
    return blocks


@pytest.mark.parametrize("setup", ["plain", "reader", "every-line", "states"])
@pytest.mark.parametrize("seed", range(3))
def test_the_window_leaves_the_history_as_feeding_it_in_time_order(setup: str, seed: int) -> None:
    # Every block arrives within the window: whatever the window takes whole and whatever line
    # by line, the history (and what its subscribers were handed, in which order) ends as one
    # fed every line sorted by time.
    hold = 0.04
    histories = []
    for _ in range(2):
        h = History({"s": {"kind": "semaphore", "initial": 2}}, actors=["a", "b", "c"],
                    track_states=setup == "states")  # fmt: skip
        seen = _Seen(None if setup == "every-line" else frozenset({"read_me"}))
        if setup != "plain":
            h.subscribe(seen)
        histories.append((h, seen))
    (live, seen_live), (ordered, seen_ordered) = histories
    taken = _count_takes(live)
    window = ReorderWindow(live, hold)
    rng = random.Random(seed)
    everything: list[Line] = []
    for arrival, actor, lines in _arrivals(seed, hold):
        if rng.random() < 0.3:
            window.release(arrival)  # the window's task has woken meanwhile
        window.add(actor, list(lines), quiet=live.quiet(actor, lines))
        everything.extend(lines)
    window.flush()
    ordered.feed(sorted(everything, key=lambda line: line.ts))

    def state(h: History) -> tuple[Any, ...]:
        return (h.lines, h.ops, h.now, h.actor_now, h.next_seq, h.gap_count, h.late_lines,
                h.late_s, h.orphans, h.started, h.ended, h.holders("s"), h.states())  # fmt: skip

    assert state(live) == state(ordered)
    assert live.late_lines == 0
    assert seen_live.seen == seen_ordered.seen
    assert seen_live.gauges == seen_ordered.gauges
    if setup in ("plain", "reader"):
        assert True in taken  # lines nobody reads went in one go
    else:
        assert taken == []  # every line is somebody's business


def test_an_actors_quiet_lines_around_its_busy_ones_are_taken_whole() -> None:
    # a's start and end are lines the history reads; its ticks and b's nobody reads. Only the
    # start and the end go line by line (the ticks after the one, before the other, whole);
    # the history ends as if it had been fed everything merged.
    ticks = [_line(1.001 + i / 1000, "a", 1 + i) for i in range(50)]
    a = [_line(1.0, "a", 0, "actor_start"), *ticks, _line(1.06, "a", 51, "actor_end")]
    b = [_line(1.0005 + i / 1000, "b", i) for i in range(60)]
    live, merged = History(), History()
    line_by_line: list[int] = []
    feed = live.feed

    def counted(lines: Any) -> None:
        lines = list(lines)
        line_by_line.append(len(lines))
        feed(lines)

    live.feed = counted  # type: ignore[method-assign]
    window = ReorderWindow(live, 0.05)
    for actor, block in (("a", a[:1]), ("b", b[:30]), ("a", a[1:51])):
        window.add(actor, block, quiet=live.quiet(actor, block))
    window.release(1.03 + 0.05)  # a's start, then (after it) a's ticks to 1.03 and b's
    for actor, block in (("b", b[30:]), ("a", a[51:])):
        window.add(actor, block, quiet=live.quiet(actor, block))
    window.flush()  # (before it) a's other ticks and b's, then a's end
    merged.feed(sorted([*a, *b], key=lambda line: line.ts))
    assert line_by_line == [1, 1]
    for h in (live, merged):
        assert (h.lines, h.late_lines, h.gap_count, h.started, h.ended) == (
            112, 0, 0, {"a"}, {"a": "ok"})  # fmt: skip
    assert (live.now, live.actor_now, live.next_seq) == (merged.now, merged.actor_now,
                                                          merged.next_seq)  # fmt: skip
