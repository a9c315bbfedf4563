"""How a board is drawn in a terminal, one frame at a time (rich): the live view, the
``--speed`` player and the interactive player draw the same frame of a :class:`Snapshot`."""

from __future__ import annotations

from collections import Counter

from rich.console import Console, Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from sim.history.facts import State

from .board import Snapshot
from .palette import color_of

__all__ = ["frame", "gauges", "lanes", "sim_time"]

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
    snap: Snapshot,
    *,
    title: str,
    speedup: float | None,
    console: Console,
    speed: float | None = None,
    total: float | None = None,
    footer: str = "",
) -> RenderableType:
    """One frame of ``snap``: the title, the clock, a gauge per primitive, a lane per actor (or
    counts per group when they do not fit), the news and the findings so far."""
    width = min(console.width, _WIDTH)
    now = snap.now
    clock = f"wall {now:6.2f} s" + (f" / {total:.2f} s" if total else "")
    if speedup:
        clock += f" · simulated {sim_time(now, speedup)}"
    if speed is not None:
        clock += f" · speed {speed:g}x"
    clock += f" · {snap.lines:,} events"
    parts: list[RenderableType] = [
        Text(title, style="bold cyan", no_wrap=True, overflow="ellipsis"),
        Text(clock, style="dim", no_wrap=True, overflow="ellipsis"),
        gauges(snap, width),
        counts(snap),
    ]
    room = max(console.height - _CHROME_LINES - len(snap.rows) - len(snap.notes) - 1, 3)
    parts.append(lanes(snap, width, room, speedup))
    parts.extend(explanations(snap))
    if footer:
        parts.append(Text(footer, style="dim", no_wrap=True, overflow="ellipsis"))
    return Group(*parts)


def explanations(snap: Snapshot) -> list[RenderableType]:
    """The news and the findings, in full and wrapped: an explanation cut at the screen's edge
    explains nothing."""
    shown: list[RenderableType] = [Text(snap.news, style="bold red")] if snap.news else []
    for note in snap.notes:
        if note.name == "engine" or note.text in snap.news:
            continue  # the engine's news is shown already, and said once is enough
        text = Text(f"{note.label}: ", style="bold magenta")
        text.append(f"{note.name}: ", style="bold")
        text.append(note.text)
        shown.append(text)
    return shown


def lanes(snap: Snapshot, width: int, room: int, speedup: float | None,
          follow: str | None = None) -> RenderableType:  # fmt: skip
    """A lane per actor if ``room`` lines hold them, else a line per group with its counts."""
    names = list(snap.names)
    if follow in names:
        # The actor a student follows is always on screen, on top.
        names.remove(follow)
        names.insert(0, follow)
    if len(names) <= room:
        return _lanes(snap, names, width, speedup, follow)
    if follow in names:
        return Group(_lanes(snap, [follow], width, speedup, follow),
                     _groups(snap, names[1:], width, room - 1))  # fmt: skip
    return _groups(snap, names, width, room)


def counts(snap: Snapshot) -> RenderableType:
    text = "   ".join(f"{n} {what}" for what, n in snap.counts().items())
    return Text(f"actors: {text}", style="dim", no_wrap=True, overflow="ellipsis")


def gauges(snap: Snapshot, width: int) -> RenderableType:
    """A gauge per primitive: its bar against its capacity, and the same in words."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", width=12, no_wrap=True, overflow="ellipsis")
    grid.add_column(width=22)
    grid.add_column(no_wrap=True, overflow="ellipsis", max_width=max(width - 37, 10))
    for row in snap.rows:
        bar: RenderableType = Text("")
        if row.capacity:
            bar = ProgressBar(total=row.capacity, completed=min(max(row.value, 0), row.capacity),
                              width=22)  # fmt: skip
        grid.add_row(row.name, bar, row.text)
    return grid


def _lanes(snap: Snapshot, names: list[str], width: int, speedup: float | None,
           follow: str | None) -> RenderableType:  # fmt: skip
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=12, no_wrap=True, overflow="ellipsis")
    grid.add_column(width=11, no_wrap=True)
    grid.add_column(no_wrap=True, overflow="ellipsis", max_width=max(width - 38, 10))
    grid.add_column(width=12, justify="right", no_wrap=True)
    for name in names:
        state = snap.state(name)
        label = Text(name, style="reverse" if name == follow else "")
        if state is None or state.category == "new":
            label.stylize("dim")
            grid.add_row(label, Text("not started", style="dim"), "", "")
            continue
        # How long it has been in this state: what makes a long wait stand out.
        elapsed = max(snap.now - state.since, 0.0)
        took = f"{elapsed * speedup / 60:.0f} min" if speedup else f"{elapsed:.1f} s"
        grid.add_row(label, Text(state.state, style=_style(state)), state.detail,
                     "" if state.category == "done" else Text(took, style="dim"))  # fmt: skip
    return grid


def _groups(snap: Snapshot, names: list[str], width: int, room: int) -> RenderableType:
    groups: dict[str, list[tuple[str, State | None]]] = {}
    for name in names:
        state = snap.state(name)
        label = state.state if state is not None else "not started"
        groups.setdefault(snap.group(name), []).append((label, state))
    cells = width - 2
    # One coloured cell per actor under its group's counts, if the screen has the rows: the
    # lanes, folded.
    strips = sum(1 + -(-len(members) // cells) for members in groups.values()) <= room
    lines: list[Text] = []
    for stem, members in groups.items():
        tally = Counter(label for label, _ in members)
        styles = {label: _style(state) for label, state in members}
        line = Text(f"{stem} ({len(members)})", style="bold", no_wrap=True, overflow="ellipsis")
        for label, n in tally.most_common():
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
