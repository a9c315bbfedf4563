"""How a board is drawn in a terminal, one frame at a time (rich): the live view and the
player draw the same frame."""

from __future__ import annotations

from collections import Counter

from rich.console import Console, Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from sim.history.facts import State

from .board import Board, stem_of
from .palette import color_of

__all__ = ["frame", "sim_time"]

_WIDTH = 80
# Lines a frame needs besides the lanes: title, clock, counts, news, footer.
_CHROME_LINES = 5


def sim_time(seconds: float, speedup: float | None) -> str:
    """``seconds`` of the log's time as simulated time: ``35 min``, ``2 h 05 min``."""
    if not speedup:
        return ""
    minutes = int(seconds * speedup / 60)
    return f"{minutes // 60:d} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _style(state: State | None) -> str:
    if state is None or state.category in ("done", "new"):
        return "dim"
    color = color_of(state.state, state.category, state.tone)
    return f"bold {color}" if state.category == "wait" else color


def frame(
    board: Board,
    *,
    title: str,
    speedup: float | None,
    now: float,
    console: Console,
    speed: float | None = None,
    total: float | None = None,
    footer: str = "",
) -> RenderableType:
    """One frame of ``board`` at run time ``now`` (wall seconds since the run started): the
    title, the clock, a gauge per primitive, a lane per actor (or counts per group when they
    do not fit), and the news."""
    width = min(console.width, _WIDTH)
    clock = f"wall {now:6.2f} s" + (f" / {total:.2f} s" if total else "")
    if speedup:
        clock += f" · simulated {sim_time(now, speedup)}"
    if speed is not None:
        clock += f" · speed {speed:g}x"
    clock += f" · {board.history.lines:,} events"
    parts: list[RenderableType] = [
        Text(title, style="bold cyan", no_wrap=True, overflow="ellipsis"),
        Text(clock, style="dim", no_wrap=True, overflow="ellipsis"),
        _gauges(board, width),
        _counts(board),
    ]
    names = board.names
    room = max(console.height - _CHROME_LINES - len(board.rows()) - 1, 3)
    if len(names) <= room:
        parts.append(_lanes(board, names, now, speedup, width))
    else:
        parts.append(_groups(board, names, width, room))
    news = board.news
    if news:
        # In full, wrapped: an explanation cut at the screen's edge explains nothing.
        parts.append(Text(news, style="bold red"))
    if footer:
        parts.append(Text(footer, style="dim", no_wrap=True, overflow="ellipsis"))
    return Group(*parts)


def _counts(board: Board) -> RenderableType:
    counts = board.counts()
    text = "   ".join(f"{n} {what}" for what, n in counts.items())
    return Text(f"actors: {text}", style="dim", no_wrap=True, overflow="ellipsis")


def _gauges(board: Board, width: int) -> RenderableType:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", width=12, no_wrap=True, overflow="ellipsis")
    grid.add_column(width=22)
    grid.add_column(no_wrap=True, overflow="ellipsis", max_width=width - 37)
    for row in board.rows():
        bar: RenderableType = Text("")
        if row.capacity:
            bar = ProgressBar(total=row.capacity, completed=min(row.value, row.capacity), width=22)
        grid.add_row(row.name, bar, row.text)
    return grid


def _lanes(board: Board, names: list[str], now: float, speedup: float | None,
           width: int) -> RenderableType:  # fmt: skip
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=12, no_wrap=True, overflow="ellipsis")
    grid.add_column(width=11, no_wrap=True)
    grid.add_column(no_wrap=True, overflow="ellipsis", max_width=width - 38)
    grid.add_column(width=12, justify="right", no_wrap=True)
    for name in names:
        state = board.state(name)
        if state is None or state.category == "new":
            grid.add_row(Text(name, style="dim"), Text("not started", style="dim"), "", "")
            continue
        # How long it has been in this state: what makes a long wait stand out.
        elapsed = max(now - state.since, 0.0)
        took = f"{elapsed * speedup / 60:.0f} min" if speedup else f"{elapsed:.1f} s"
        grid.add_row(name, Text(state.state, style=_style(state)), state.detail,
                     "" if state.category == "done" else Text(took, style="dim"))  # fmt: skip
    return grid


def _groups(board: Board, names: list[str], width: int, room: int) -> RenderableType:
    groups: dict[str, list[tuple[str, State | None]]] = {}
    for name in names:
        state = board.state(name)
        label = state.state if state is not None else "not started"
        groups.setdefault(stem_of(name), []).append((label, state))
    cells = width - 2
    # One coloured cell per actor under its group's counts, if the screen has the rows: the
    # lanes, folded.
    strips = sum(1 + -(-len(members) // cells) for members in groups.values()) <= room
    lines: list[Text] = []
    for stem, members in groups.items():
        counts = Counter(label for label, _ in members)
        styles = {label: _style(state) for label, state in members}
        line = Text(f"{stem} ({len(members)})", style="bold", no_wrap=True, overflow="ellipsis")
        for label, n in counts.most_common():
            line.append("  ")
            line.append(f"{label} {n}", style=styles[label])
        lines.append(line)
        if strips:
            for start in range(0, len(members), cells):
                strip = Text("  ", no_wrap=True)
                for label, _ in members[start : start + cells]:
                    strip.append("█", style=styles[label])
                lines.append(strip)
    return Group(*lines)
