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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .events import ordered, read_events
from .export import STATE_COLORS, Timeline, speedup_of
from .replay import LoadedRun

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
        raise ValueError(f"speed must be > 0, not {speed}")
    board = _Board(loaded)
    events = ordered(read_events(loaded.events_path))
    if console.is_terminal:
        _animate(loaded, board, events, console, speed)
    else:
        _print_timeline(loaded, board, events, console)


# -- what the board knows ------------------------------------------------------------------------


class _Board(Timeline):
    """The timeline, plus what a viewer wants besides: the latest engine news, counts."""

    def __init__(self, loaded: LoadedRun) -> None:
        super().__init__(
            loaded.primitives,
            scenario=loaded.config.scenario if loaded.config is not None else "",
            actors=loaded.actors,
            track_states=True,
        )
        self.names = list(loaded.actors)
        self.writes: Counter[str] = Counter()
        self.peak: dict[str, float] = {}
        self.news = ""
        self.deadlocked = False
        self.changes: deque[tuple[float, str, str, str, str]] = deque()

    def on_state(self, ts: float, actor: str, state: str, category: str, detail: str) -> None:
        if actor not in self.names:
            self.names.append(actor)
        self.changes.append((ts, actor, state, category, detail))

    def on_gauge(self, ts: float, prim: str, values: Mapping[str, float]) -> None:
        for value in values.values():
            self.peak[prim] = max(self.peak.get(prim, 0), value)

    def on_op(self, op: Any, end: float) -> None:
        if op.name == "write" and op.outcome == "ok":
            self.writes[op.prim] += 1

    def on_mark(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if event["actor"] != "engine" or kind not in ("deadlock", "stopping"):
            return
        if kind == "stopping" and self.deadlocked:
            return  # its reason repeats the deadlock's explanation
        self.deadlocked = self.deadlocked or kind == "deadlock"
        what = event.get("explanation") or event.get("reason") or ""
        self.news = f"{kind}: {what}" if what else str(kind)


# -- the live board ------------------------------------------------------------------------------


def _animate(loaded: LoadedRun, board: _Board, events: Iterator[dict[str, Any]],
             console: Console, speed: float) -> None:  # fmt: skip
    total = _total_wall(loaded)
    pending = next(events, None)
    began = time.monotonic()
    now = 0.0
    # Refreshed from this loop, not by rich's thread: a frame then always shows a consistent
    # board, and nothing runs between two frames.
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while True:
            now = (time.monotonic() - began) * speed
            while pending is not None and pending["ts"] <= now:
                board.feed(pending)
                pending = next(events, None)
            board.changes.clear()
            if pending is None:
                board.finish()
                now = max(board.now, 0.0)
                live.update(render(loaded, board, now, speed, total, console), refresh=True)
                break
            live.update(render(loaded, board, now, speed, total, console), refresh=True)
            time.sleep(1 / _FPS)
    console.print(f"[dim]end of the log: {board.events:,} events, {now:.2f} s of the run[/]")


def _total_wall(loaded: LoadedRun) -> float | None:
    wall = (loaded.manifest or {}).get("wall_s")
    return float(wall) if isinstance(wall, (int, float)) else None


def _sim(seconds: float, speedup: float | None) -> str:
    if not speedup:
        return ""
    minutes = int(seconds * speedup / 60)
    return f"{minutes // 60:d} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _style(state: str, category: str) -> str:
    if category == "done":
        return "dim"
    color = STATE_COLORS.get(state, "#17becf")
    return f"bold {color}" if category == "wait" else color


def render(loaded: LoadedRun, board: Timeline, now: float, speed: float,
           total: float | None, console: Console) -> RenderableType:  # fmt: skip
    """One frame of the board at run time ``now`` (wall seconds since the run started)."""
    width = min(console.width, _WIDTH)
    speedup = speedup_of(loaded)
    clock = f"wall {now:6.2f} s" + (f" / {total:.2f} s" if total else "")
    if speedup:
        clock += f" · simulated {_sim(now, speedup)}"
    clock += f" · speed {speed:g}x · {board.events:,} events"
    parts: list[RenderableType] = [
        Text(loaded.title, style="bold cyan", no_wrap=True, overflow="ellipsis"),
        Text(clock, style="dim", no_wrap=True, overflow="ellipsis"),
        _gauges(loaded, board, width),
    ]
    names = getattr(board, "names", None) or list(loaded.actors)
    room = max(console.height - _CHROME_LINES - len(_gauge_rows(loaded, board)) - 1, 3)
    if len(names) <= room:
        parts.append(_lanes(board, names, now, speedup, width))
    else:
        parts.append(_groups(board, names, width, room))
    news = getattr(board, "news", "")
    if news:
        parts.append(Text(news, style="bold red", no_wrap=True, overflow="ellipsis"))
    return Group(*parts)


@dataclass
class _GaugeRow:
    name: str
    value: float
    capacity: float | None
    text: str


def _gauge_rows(loaded: LoadedRun, board: Timeline) -> list[_GaugeRow]:
    rows: list[_GaugeRow] = []
    locks: dict[str, list[str]] = {}
    peak = getattr(board, "peak", {})
    writes = getattr(board, "writes", Counter())
    for prim, values in board.gauges().items():
        info = loaded.primitives.get(prim, {})
        kind = str(info.get("kind", ""))
        capacity = Timeline.capacity(info)
        if kind in ("lock", "rlock", "condition"):
            locks.setdefault(prim.rstrip("0123456789").rstrip("-_") or prim, []).append(prim)
        elif "signals" in values:
            text = f"{values['signals']:g} signals pending, {values.get('waiting', 0):g} waiting"
            rows.append(_GaugeRow(prim, values["signals"], None, text))
        elif "held" in values and kind:
            units, waiting = values["held"], values.get("waiting", 0)
            text = f"{units:g}/{capacity} taken, {waiting:g} waiting"
            rows.append(_GaugeRow(prim, units, capacity, text))
        elif "length" in values or "in pipe" in values or "in flight" in values:
            n = values.get("length", values.get("in pipe", values.get("in flight", 0)))
            what = "queued" if "length" in values else "in transit"
            top = capacity or max(peak.get(prim, 0), 1)
            text = f"{n:g} {what}" if capacity else f"{n:g} {what} (peak {top:g})"
            rows.append(_GaugeRow(prim, n, top, text))
        elif "set" in values:
            flag = "● set" if values["set"] else "○ clear"
            rows.append(_GaugeRow(prim, values["set"], None,
                                  f"{flag}, {values.get('waiting', 0):g} waiting"))  # fmt: skip
        elif kind == "barrier":
            rows.append(_GaugeRow(prim, values.get("waiting", 0), capacity,
                                  f"{values.get('waiting', 0):g}/{capacity} arrived"))  # fmt: skip
        elif "value" in values:
            count = writes.get(prim, 0)
            extra = f", {count} write{'s' if count != 1 else ''}" if count else ""
            rows.append(_GaugeRow(prim, values["value"], None, f"value {values['value']:g}{extra}"))
    for stem, prims in locks.items():
        held = [p for p in prims if board.gauges()[p].get("held")]
        waiting = sum(board.gauges()[p].get("waiting", 0) for p in prims)
        if len(prims) == 1:
            holders = ", ".join(board.holders(prims[0])) or "nobody"
            rows.append(_GaugeRow(prims[0], len(held), 1,
                                  f"held by {holders}, {waiting:g} waiting"))  # fmt: skip
        else:
            marks = "".join("■" if p in held else "□" for p in prims)
            text = f"{marks} {len(held)}/{len(prims)} held, {waiting:g} waiting"
            rows.append(_GaugeRow(f"{stem}*", len(held), len(prims), text))
    return rows


def _gauges(loaded: LoadedRun, board: Timeline, width: int) -> RenderableType:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", width=12, no_wrap=True, overflow="ellipsis")
    grid.add_column(width=22)
    grid.add_column(no_wrap=True, overflow="ellipsis", max_width=width - 37)
    for row in _gauge_rows(loaded, board):
        bar: RenderableType = Text("")
        if row.capacity:
            bar = ProgressBar(total=row.capacity, completed=min(row.value, row.capacity), width=22)
        grid.add_row(row.name, bar, row.text)
    return grid


def _lanes(board: Timeline, names: list[str], now: float, speedup: float | None,
           width: int) -> RenderableType:  # fmt: skip
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=12, no_wrap=True, overflow="ellipsis")
    grid.add_column(width=11, no_wrap=True)
    grid.add_column(no_wrap=True, overflow="ellipsis", max_width=width - 38)
    grid.add_column(width=12, justify="right", no_wrap=True)
    for name in names:
        state, category, detail, since = board.state_of(name)
        if not state:
            grid.add_row(Text(name, style="dim"), Text("not started", style="dim"), "", "")
            continue
        # How long it has been in this state: what makes a long wait stand out.
        elapsed = max(now - since, 0.0)
        took = f"{elapsed * speedup / 60:.0f} min" if speedup else f"{elapsed:.1f} s"
        grid.add_row(name, Text(state, style=_style(state, category)), detail,
                     "" if category == "done" else Text(took, style="dim"))  # fmt: skip
    return grid


def _groups(board: Timeline, names: list[str], width: int, room: int) -> RenderableType:
    groups: dict[str, list[tuple[str, str]]] = {}
    for name in names:
        stem = name.rsplit("-", 1)[0] if "-" in name else name
        state, category, _, _ = board.state_of(name)
        groups.setdefault(stem, []).append((state or "not started", category))
    cells = width - 2
    # One coloured cell per actor under its group's counts, if the screen has the rows: the
    # lanes, folded.
    strips = sum(1 + -(-len(members) // cells) for members in groups.values()) <= room
    lines: list[Text] = []
    for stem, members in groups.items():
        counts = Counter(state for state, _ in members)
        styles = {state: _style(state, category) if category else "dim"
                  for state, category in members}  # fmt: skip
        line = Text(f"{stem} ({len(members)})", style="bold", no_wrap=True, overflow="ellipsis")
        for state, n in counts.most_common():
            line.append("  ")
            line.append(f"{state} {n}", style=styles[state])
        lines.append(line)
        if strips:
            for start in range(0, len(members), cells):
                strip = Text("  ", no_wrap=True)
                for state, _ in members[start : start + cells]:
                    strip.append("█", style=styles[state])
                lines.append(strip)
    return Group(*lines)


# -- the printed timeline ------------------------------------------------------------------------


def _print_timeline(loaded: LoadedRun, board: _Board, events: Iterator[dict[str, Any]],
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
    for event in events:
        if not lanes:
            while event["ts"] >= next_at:
                out.snapshot(next_at, board, loaded)
                next_at += step
        board.feed(event)
        if board.news:
            out.flush(event["ts"] + _FLICKER_S)
            out.line(event["ts"], "engine", board.news, "")
            board.news = ""
        if lanes:
            while board.changes:
                out.change(*board.changes.popleft())
            out.flush(event["ts"] - _FLICKER_S)
        board.changes.clear()
    board.finish()
    while board.changes:
        out.change(*board.changes.popleft())
    out.flush(float("inf"))
    if not lanes:
        out.snapshot(board.now, board, loaded)
    console.print(f"end of the log: {board.events:,} events, {board.now:.3f} s of the run"
                  + (f" ({_sim(board.now, speedup)} simulated)" if speedup else ""),
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

    def change(self, ts: float, actor: str, state: str, category: str, detail: str) -> None:
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

    def snapshot(self, ts: float, board: Timeline, loaded: LoadedRun) -> None:
        counts: dict[str, Counter[str]] = {}
        for name in loaded.actors:
            stem = name.rsplit("-", 1)[0] if "-" in name else name
            state = board.state_of(name)[0] or "not started"
            counts.setdefault(stem, Counter())[state] += 1
        groups = "; ".join(
            f"{stem}: " + ", ".join(f"{s} {n}" for s, n in c.most_common())
            for stem, c in counts.items()
        )
        gauges = "; ".join(f"{row.name} {row.text}" for row in _gauge_rows(loaded, board))
        sim = _sim(ts, self._speedup)
        text = f"{ts:9.3f} s {sim:>13}  {groups}" + (f" | {gauges}" if gauges else "")
        self._console.print(text, highlight=False, soft_wrap=True)
