"""Replay a finished run in the terminal, live, at any speed: the run as it happened.

On a terminal, :func:`play` redraws a board several times a second: a clock (wall time of the
run, simulated time, speed), a gauge per primitive (spaces taken, queue length, items in a
pipe, who holds each fork) and a lane per actor with what it is doing (driving, waiting,
parked; sending, receiving; thinking, hungry, eating), or, when the actors do not fit on the
screen, a line per group (``car``) counting its actors per state. Everything fits 80 columns,
so it works over ssh.

Anywhere else (a pipe, a file, CI) there is nothing to animate: :func:`play` prints a compact
timeline instead, one line per change of state that lasted, at once, whatever the speed.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterator
from typing import Any

from rich.console import Console, RenderableType
from rich.live import Live

from ._replay import LoadedRun, lines_of, open_history
from .errors import ConfigError
from .export import speedup_of
from .history import History
from .history.facts import State
from .history.lines import Line
from .views import Board
from .views.board import group_of
from .views.frame import frame, sim_time

__all__ = ["play", "render"]

_FPS = 10.0
_WIDTH = 80
# Lines a board needs besides the lanes: title, clock, gauges' header room, footer.
_CHROME_LINES = 4
# A state shorter than this (wall seconds) is not worth a timeline line: an acquire that did
# not have to wait is "waiting" for 20 µs.
_FLICKER_S = 0.001
# Above this many actors the timeline prints periodic counts per state instead of each change.
_TIMELINE_LANES = 50
_SNAPSHOTS = 40


def play(loaded: LoadedRun, console: Console, speed: float = 1.0) -> None:
    """Replay ``loaded`` on ``console`` at ``speed`` times its wall speed.

    On a terminal this animates (Ctrl-C stops it); otherwise it prints a textual timeline
    without waiting. The log is streamed: memory does not grow with its length.
    """
    if not speed > 0:
        raise ConfigError(f"must be > 0, got {speed:g}", source="--speed")
    history = open_history(loaded, track_states=True)
    board = history.subscribe(Board())
    assert isinstance(board, Board)
    lines = lines_of(loaded)
    if console.is_terminal:
        _animate(loaded, history, board, lines, console, speed)
    else:
        board.keep_changes = True
        _print_timeline(loaded, history, board, lines, console)


# -- the live board ------------------------------------------------------------------------------


def _animate(loaded: LoadedRun, history: History, board: Board, lines: Iterator[Line],
             console: Console, speed: float) -> None:  # fmt: skip
    total = _total_wall(loaded)
    pending = next(lines, None)
    began = time.monotonic()
    now = 0.0
    # Refreshed from this loop, not by rich's thread: a frame then always shows a consistent
    # board, and nothing runs between two frames.
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while True:
            now = (time.monotonic() - began) * speed
            while pending is not None and pending.ts <= now:
                history.feed((pending,))
                pending = next(lines, None)
            if pending is None:
                history.finish()
                now = max(history.now, 0.0)
                live.update(render(loaded, board, now, speed, total, console), refresh=True)
                break
            live.update(render(loaded, board, now, speed, total, console), refresh=True)
            time.sleep(1 / _FPS)
    console.print(f"[dim]end of the log: {history.lines:,} events, {now:.2f} s of the run[/]")


def _total_wall(loaded: LoadedRun) -> float | None:
    wall = (loaded.manifest or {}).get("wall_s")
    return float(wall) if isinstance(wall, (int, float)) else None


def render(loaded: LoadedRun, board: Board, now: float, speed: float,
           total: float | None, console: Console) -> RenderableType:  # fmt: skip
    """One frame of the board at run time ``now`` (wall seconds since the run started)."""
    return frame(board.snapshot(now=now), title=loaded.title, speedup=speedup_of(loaded),
                 speed=speed, total=total, console=console)  # fmt: skip


_sim = sim_time


# -- the printed timeline ------------------------------------------------------------------------


def _print_timeline(loaded: LoadedRun, history: History, board: Board, lines: Iterator[Line],
                    console: Console) -> None:  # fmt: skip
    speedup = speedup_of(loaded)
    lanes = len(loaded.actors) <= _TIMELINE_LANES
    console.print(f"{loaded.title}: {len(loaded.actors)} actors. Not a terminal, so the run "
                  "is printed as a timeline (wall s, simulated time, actor, state).",
                  highlight=False, soft_wrap=True)  # fmt: skip
    out = _Lines(console, speedup)
    total = _total_wall(loaded)
    step = (total / _SNAPSHOTS) if total else 1.0
    next_at = step
    for line in lines:
        if not lanes:
            while line.ts >= next_at:
                out.snapshot(next_at, board, loaded)
                next_at += step
        history.feed((line,))
        if board.news:
            out.flush(line.ts + _FLICKER_S)
            out.line(line.ts, "engine", board.news, "")
            board.news = ""
        if lanes:
            while board.changes:
                out.change(board.changes.popleft())
            out.flush(line.ts - _FLICKER_S)
        board.changes.clear()
    history.finish()
    while board.changes:
        out.change(board.changes.popleft())
    out.flush(float("inf"))
    now = history.now
    if not lanes:
        out.snapshot(now, board, loaded)
    console.print(f"end of the log: {history.lines:,} events, {now:.3f} s of the run"
                  + (f" ({_sim(now, speedup)} simulated)" if speedup else ""),
                  highlight=False)  # fmt: skip


class _Lines:
    """The timeline's lines, held back ``_FLICKER_S`` so that states that flicker (an acquire
    that did not wait) are dropped, and repeated states are printed once."""

    def __init__(self, console: Console, speedup: float | None) -> None:
        self._console = console
        self._speedup = speedup
        self._held: deque[list[Any]] = deque()
        self._last: dict[str, list[Any]] = {}
        self._shown: dict[str, tuple[str, str]] = {}

    def change(self, change: State) -> None:
        ts, actor, state, category, detail = (change.since, change.actor, change.state,
                                              change.category, change.detail)  # fmt: skip
        if category == "new":
            return
        last = self._last.get(actor)
        # Superseded at once, it never showed; a scenario's own event (park, eat) is kept,
        # however short, because the scenario said it happened.
        fleeting = last is not None and last[0] is not None and ts - last[0] < _FLICKER_S
        if last is not None and fleeting and last[3] != "domain":
            last[0] = None
        entry = [ts, actor, state, category, detail]
        self._last[actor] = entry
        self._held.append(entry)

    def flush(self, until: float) -> None:
        while self._held and (self._held[0][0] is None or self._held[0][0] <= until):
            ts, actor, state, category, detail = self._held.popleft()
            # What an actor waits for is news; what it holds changing under the same state
            # (a philosopher putting one fork down, then the other) is not.
            shown = (state, detail if category == "wait" else "")
            if ts is None or self._shown.get(actor) == shown:
                continue
            self._shown[actor] = shown
            self.line(ts, actor, state, shown[1])

    def line(self, ts: float, who: str, what: str, detail: str) -> None:
        sim = _sim(ts, self._speedup)
        text = f"{ts:9.3f} s {sim:>13}  {who:<12} {what:<11} {detail}".rstrip()
        self._console.print(text, highlight=False, soft_wrap=True)

    def snapshot(self, ts: float, board: Board, loaded: LoadedRun) -> None:
        counts: dict[str, Counter[str]] = {}
        for name in loaded.actors:
            state = board.state(name)
            counts.setdefault(group_of(name, board.roles), Counter())[
                state.state if state else "not started"
            ] += 1
        groups = "; ".join(
            f"{stem}: " + ", ".join(f"{s} {n}" for s, n in c.most_common())
            for stem, c in counts.items()
        )
        gauges = "; ".join(f"{row.name} {row.text}" for row in board.rows())
        sim = _sim(ts, self._speedup)
        text = f"{ts:9.3f} s {sim:>13}  {groups}" + (f" | {gauges}" if gauges else "")
        self._console.print(text, highlight=False, soft_wrap=True)
