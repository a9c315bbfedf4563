"""Pictures of a finished run: occupancy against capacity, waiting times, one lane per actor.

One figure with three panels, PNG or SVG by the file's suffix:

1. the primitives' gauges over time (units held and processes waiting per semaphore, locks
   held, queue length, items in a pipe, a shared value), each with its capacity line;
2. what each actor was doing (a Gantt chart: waiting, holding, and the scenario's own states
   such as driving/parked or thinking/hungry/eating), for runs of up to 50 actors; above that,
   how many actors were in each state over time;
3. a histogram of the waits in blocking operations.

Time runs in wall seconds since the run started, with simulated time on the top axis when
the config's clock gives it. Matplotlib runs with the Agg backend: no screen is needed.
"""

from __future__ import annotations

import textwrap
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ._backend import plt
from ._replay import LoadedRun, open_history
from .errors import ConfigError
from .export import describe_params, speedup_of
from .history import History, Operation, State, Subscriber
from .history.lines import Line
from .kinds import Kind
from .stats import percentile
from .views import color_of

__all__ = ["GANTT_MAX_ACTORS", "plot"]

GANTT_MAX_ACTORS = 50
_SAMPLES = 1500  # points of the state-count curves drawn for runs with many actors

_FALLBACK = ("#17becf", "#bcbd22", "#8c564b", "#7f7f7f", "#393b79", "#637939")
_SERIES_COLORS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")
# Operations that send block only while a buffer is full; their waits are shown only if they
# did block (p95 longer than this, in wall seconds).
_SENDS = frozenset({"put", "send"})
_BLOCKED_S = 0.001


def plot(loaded: LoadedRun, path: Path) -> None:
    """Draw ``loaded`` into ``path`` (``.png`` or ``.svg``)."""
    suffix = path.suffix.lower()
    if suffix not in (".png", ".svg"):
        raise ConfigError(f"the plot is written as .png or .svg, not {suffix or 'nothing'}",
                          source=str(path))  # fmt: skip
    history = open_history(loaded, track_states=True)
    data = _Collector(loaded)
    history.subscribe(data)
    history.feed_file(loaded.events_path)
    # SVG text stays text (not outlines): smaller, searchable, and readable by screen readers.
    with plt.rc_context({"svg.fonttype": "none"}):
        fig = _figure(loaded, data)
        try:
            fig.savefig(path, dpi=110 if suffix == ".png" else None)
        finally:
            plt.close(fig)


class _Collector(Subscriber):
    """Keeps what the panels draw: gauge steps, waits, and actor states (lanes or counts)."""

    def __init__(self, loaded: LoadedRun) -> None:
        self.names = list(loaded.actors)
        self.lanes = 0 < len(self.names) <= GANTT_MAX_ACTORS
        self.series: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
        self.waits: dict[str, list[float]] = defaultdict(list)
        self.pending = 0
        self.segments: dict[str, list[tuple[float, str]]] = defaultdict(list)
        self.colors: dict[str, str] = {}
        self.marks: list[tuple[float, str]] = []
        # Many actors: counts per state, sampled on a grid that coarsens as the run goes on,
        # so that memory stays bounded however long the log is.
        self.current: dict[str, str] = {}
        self.counts: dict[str, int] = defaultdict(int)
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.step = 0.01
        self.next_at = 0.0
        self.end = 0.0
        self.count = 0

    def attach(self, history: History) -> None:
        super().attach(history)
        for prim, model in history.models().items():
            for name, value in model.gauges.items():
                self.series[(prim, name)].append((0.0, value))

    def kind_of(self, prim: str) -> Kind | None:
        model = self.history.model(prim)
        return None if model is None else self.history.kind(str(model.info.get("kind", "")))

    def on_gauge(self, ts: float, prim: str, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            points = self.series[(prim, name)]
            if not points or points[-1][1] != value:
                points.append((ts, value))

    def on_op(self, op: Operation) -> None:
        end = op.end if op.end is not None else self.history.now
        if op.name == "write" and op.kind == "value" and op.outcome == "ok":
            # Writes that completed, beside the value: a counter whose value falls behind
            # its writes has lost updates.
            points = self.series[(op.prim, "writes")]
            points.append((end, (points[-1][1] if points else 0) + 1))
        if not op.blocking:
            return
        wait = op.wait
        if wait is None:
            self.pending += 1
        else:
            self.waits[f"{op.name} {op.prim}"].append(wait)

    def on_line(self, line: Line) -> None:
        if line.actor == "engine" and line.event in ("deadlock", "stopping", "fault"):
            self.marks.append((line.ts, line.event))
        if line.actor not in ("engine", "coordinator"):
            self.end = max(self.end, line.ts)

    def on_state(self, state: State) -> None:
        ts, actor = state.since, state.actor
        self.end = max(self.end, ts)
        label = "" if state.category in ("done", "new") else state.state
        if label and label not in self.colors:
            self.colors[label] = color_of(state.state, state.category, state.tone)
        if self.lanes:
            self.segments[actor].append((ts, label))
            return
        # The counts at each grid point up to now, before this change.
        while self.next_at <= ts:
            self.samples.append((self.next_at, dict(self.counts)))
            self.next_at += self.step
            if len(self.samples) >= 2 * _SAMPLES:
                self.samples = self.samples[::2]
                self.step *= 2
                self.next_at = self.samples[-1][0] + self.step
        before = self.current.get(actor)
        if before:
            self.counts[before] -= 1
        if label:
            self.counts[label] += 1
        self.current[actor] = label

    def on_finish(self) -> None:
        self.count = self.history.lines
        self.end = max(self.end, self.history.now)
        if not self.lanes:
            self.samples.append((self.end, dict(self.counts)))


# -- the figure --------------------------------------------------------------------------------


def _figure(loaded: LoadedRun, data: _Collector) -> Figure:
    speedup = speedup_of(loaded)
    actors = len(data.names) or len(data.current)
    gantt_h = max(2.2, 0.21 * actors) if data.lanes else 2.6
    title, lines = _header_lines(loaded, data, actors)
    # Room for each line of the header: 0.3 in a title line, 0.2 in a line of the rest.
    header_h = 0.3 * (title.count("\n") + 1) + 0.2 * len(lines) + 0.15
    fig = plt.figure(figsize=(12, header_h + 3.4 + gantt_h + 3.0), layout="constrained")
    grid = fig.add_gridspec(4, 1, height_ratios=[header_h, 3.4, gantt_h, 3.0])
    _draw_header(fig.add_subplot(grid[0]), title, lines)
    gauges = fig.add_subplot(grid[1])
    lanes = fig.add_subplot(grid[2], sharex=gauges)
    hist = fig.add_subplot(grid[3])
    _draw_gauges(gauges, data)
    if data.lanes:
        _draw_lanes(lanes, data)
    else:
        _draw_counts(lanes, data, actors)
    end = max(data.end, 1e-3)
    labelled = -1.0
    for ts, what in data.marks:
        for ax in (gauges, lanes):
            ax.axvline(ts, color="#b71c1c", linewidth=1.2, linestyle=":")
        if labelled < 0 or ts - labelled > 0.05 * end:  # one label per cluster of marks
            labelled = ts
            right = ts > 0.8 * end
            gauges.annotate(f"{what} " if right else f" {what}", (ts, 0.97), xycoords=("data",
                            "axes fraction"), va="top", ha="right" if right else "left",
                            fontsize=8, color="#b71c1c", fontweight="bold")  # fmt: skip
    gauges.set_xlim(0, end * 1.01)
    lanes.set_xlabel("wall time since the run started (s)")
    plt.setp(gauges.get_xticklabels(), visible=False)
    if speedup:
        _sim_axis(gauges, speedup, end)
    _draw_waits(hist, data, speedup)
    return fig


def _header_lines(loaded: LoadedRun, data: _Collector, actors: int) -> tuple[str, list[str]]:
    # Wrapped, not cut: a long title or parameter list is the teacher's own words, and a
    # picture shown in class must carry all of them (at 12 in wide, about 90 characters of
    # the title and 150 of the rest fit on a line).
    scenario = loaded.config.scenario if loaded.config is not None else "unknown scenario"
    title = _wrap_title(loaded.title, 90)
    lines = [f"scenario {scenario} · {actors} actors · {data.count:,} events · "
             f"log {loaded.run_dir or loaded.events_path}"]  # fmt: skip
    params = describe_params(loaded)
    if params:
        lines += textwrap.wrap(f"{params}   (durations in simulated minutes)", 150,
                               break_on_hyphens=False)  # fmt: skip
    return title, lines


def _wrap_title(title: str, width: int) -> str:
    # The overrides clause "(with a=1, b=2)" is what tells this run from the config's own, so a
    # long title breaks before it and keeps it whole on a line of its own where it fits.
    if len(title) <= width:
        return title
    # The clause is the last thing with_overrides adds: a title's own "(with ...)" stays put.
    base, cut, clause = title.rpartition(" (with ")
    if not cut:
        return "\n".join(textwrap.wrap(title, width))
    clause = "(with " + clause
    tail = [clause] if len(clause) <= width else textwrap.wrap(clause, width)
    return "\n".join([*textwrap.wrap(base, width), *tail])


def _draw_header(ax: Axes, title: str, lines: Sequence[str]) -> None:
    # A row of its own for the title block: the layout engine then keeps it clear of the
    # panels, which a figure-level text would not be.
    ax.axis("off")
    ax.text(0.5, 1.0, title, ha="center", va="top", fontsize=14, fontweight="bold",
            transform=ax.transAxes)  # fmt: skip
    ax.text(0.5, 0.0, "\n".join(lines), ha="center", va="bottom", fontsize=9, color="#444444",
            transform=ax.transAxes, linespacing=1.5)  # fmt: skip


def _sim_axis(ax: Axes, speedup: float, end: float) -> None:
    # Simulated time along the top: minutes, or hours for a long day.
    hours = end * speedup / 60 > 300
    factor = speedup / (3600 if hours else 60)

    def forward(x: Any) -> Any:
        return x * factor

    def back(x: Any) -> Any:
        return x / factor

    top = ax.secondary_xaxis("top", functions=(forward, back))
    top.set_xlabel(f"simulated time ({'h' if hours else 'min'})", fontsize=9)
    top.tick_params(labelsize=8)


def _step(points: Sequence[tuple[float, float]], end: float) -> tuple[list[float], list[float]]:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    if xs and xs[-1] < end:
        xs.append(end)
        ys.append(ys[-1])
    return xs, ys


def _total(series: Sequence[Sequence[tuple[float, float]]]) -> list[tuple[float, float]]:
    """The sum of several step series (locks held across all forks)."""
    changes = sorted((ts, i, v) for i, points in enumerate(series) for ts, v in points)
    current = [0.0] * len(series)
    out: list[tuple[float, float]] = []
    for ts, i, v in changes:
        current[i] = v
        total = sum(current)
        if out and out[-1][0] == ts:
            out[-1] = (ts, total)
        elif not out or out[-1][1] != total:
            out.append((ts, total))
    return out


def _choose(data: _Collector) -> list[tuple[Kind, str, list[str]]]:
    """The gauges worth the top panel, as (kind, label, primitives), busiest first: the kinds
    of the best rank the run has (a pool or a queue before a shared value, before locks, before
    barriers and events)."""
    by_kind: dict[str, tuple[Kind, list[str]]] = {}
    for prim, _ in data.series:
        kind = data.kind_of(prim)
        if kind is None or not kind.display.series:
            continue
        prims = by_kind.setdefault(kind.name, (kind, []))[1]
        if prim not in prims:
            prims.append(prim)

    def activity(prims: list[str]) -> int:
        return sum(len(points) for (p, _), points in data.series.items() if p in prims)

    if not by_kind:
        return []
    best = min(kind.display.rank for kind, _ in by_kind.values())
    groups: list[tuple[Kind, str, list[str]]] = []
    for kind, prims in by_kind.values():
        if kind.display.rank != best:
            continue
        if kind.display.lock and len(prims) > 3:
            # Many locks of one sort (five forks): how many of them are taken at once.
            stem = _common_start(prims).rstrip("-_") or kind.name
            groups.append((kind, f"{stem}* ({len(prims)} {kind.name}s)", prims))
        else:
            groups.extend((kind, p, [p]) for p in prims)
    if best == 1:
        # A lock or a Condition that guards a shared value flickers between 0 and 1; the value
        # it guards (the items in a buffer, a counter) says more. The busiest one.
        groups = [max(groups, key=lambda g: activity(g[2]))]
    return sorted(groups, key=lambda g: -activity(g[2]))[:4]


def _draw_gauges(ax: Axes, data: _Collector) -> None:
    groups = _choose(data)
    end = data.end
    colors = iter(_SERIES_COLORS * 3)
    drawn = 0
    top = 1.0
    # A value that went below zero (a buffer's count, underflowing) must be seen going there.
    low = 0.0
    capacities: set[float] = set()
    for kind, label, members in groups:
        color = next(colors)
        for series, style in kind.display.series:
            pts = [data.series.get((m, series), []) for m in members]
            if not any(pts) or (series == "writes" and not _counter(data, members[0])):
                continue
            points = pts[0] if len(pts) == 1 else _total(pts)
            xs, ys = _step(points, end)
            top = max(top, max(ys))
            low = min(low, min(ys))
            name = f"{label}: {series}"
            if style == "fill":
                ax.fill_between(xs, ys, step="post", color=color, alpha=0.25, linewidth=0)
                ax.step(xs, ys, where="post", color=color, linewidth=1.4, label=name)
            else:
                # With one primitive, who waits stands out in a colour of its own.
                line = "#e6550d" if len(groups) == 1 else color
                ax.step(xs, ys, where="post", color=line, linewidth=1.0, linestyle=style,
                        alpha=0.9, label=name)  # fmt: skip
            drawn += 1
        bounds = _bounds(data, members)
        if bounds is not None:
            # The values the program allows, as a band: what leaves it is the bug.
            lo, hi = bounds
            top = max(top, hi)
            ax.axhspan(lo, hi, color="#2e7d32", alpha=0.10, linewidth=0)
            for edge in (lo, hi):
                ax.axhline(edge, color="#2e7d32", linestyle="--", linewidth=1.0)
            ax.annotate(f"allowed {lo:g} .. {hi:g} (capacity {hi:g})", (1.0, hi),
                        xycoords=("axes fraction", "data"), xytext=(-4, 3),
                        textcoords="offset points", ha="right", va="bottom", fontsize=8,
                        color="#2e7d32")  # fmt: skip
            if low < lo:
                ax.annotate(f"lowest {low:g}", (1.0, low), xycoords=("axes fraction", "data"),
                            xytext=(-4, 3), textcoords="offset points", ha="right",
                            va="bottom", fontsize=8, color="#c62828")  # fmt: skip
            continue
        capacity = sum(
            (model.capacity or 0) if (model := data.history.model(m)) is not None else 0
            for m in members
        )
        if capacity and kind.name != "event" and capacity not in capacities:
            capacities.add(capacity)
            top = max(top, capacity)
            ax.axhline(capacity, color="#c62828", linestyle="--", linewidth=1.2)
            ax.annotate(f"capacity {capacity:g}", (1.0, capacity), xycoords=("axes fraction",
                        "data"), xytext=(-4, 3), textcoords="offset points", ha="right",
                        va="bottom", fontsize=8, color="#c62828")  # fmt: skip
    if not drawn:
        ax.text(0.5, 0.5, "no shared primitive with a gauge in this run", transform=ax.transAxes,
                ha="center", va="center", color="#777777")  # fmt: skip
    else:
        ax.legend(loc="upper left", fontsize=8, ncols=min(drawn, 3), framealpha=0.85)
    span = top - low
    ax.set_ylim(low - (0.08 * span + 0.5 if low < 0 else 0), top + 0.18 * span + 0.5)
    if low < 0:
        ax.axhline(0, color="#444444", linewidth=0.8)
    signals = [
        bool(getattr(data.history.model(m), "signal", False)) for _, _, ms in groups for m in ms
    ]
    if signals and all(signals):
        # Semaphores that start at 0 pass signals: nothing is held, so nothing fills up.
        ax.set_ylabel("signals pending / processes waiting")
        title = "semaphores as signals: released and not yet acquired, processes waiting"
    elif groups:
        ax.set_ylabel(groups[0][0].display.unit)
        title = groups[0][0].display.title
    else:
        title = "gauges"
    ax.set_title(title, loc="left", fontsize=10, fontweight="bold")
    ax.grid(axis="y", alpha=0.3)


def _bounds(data: _Collector, members: Sequence[str]) -> tuple[float, float] | None:
    """The allowed range of a single shared value whose program declared one."""
    if len(members) != 1:
        return None
    bounds = getattr(data.history.model(members[0]), "bounds", None)
    return bounds if isinstance(bounds, tuple) else None


def _counter(data: _Collector, prim: str) -> bool:
    """A value that ends near its highest is counting something: then the writes that
    completed are worth a line beside it (they differ by the updates that were lost). A value
    that goes up and down (items in a buffer) is not compared with its writes."""
    values = [v for _, v in data.series.get((prim, "value"), [])]
    return bool(values) and max(values) > 0 and values[-1] >= 0.9 * max(values)


def _colors_for(data: _Collector, labels: Sequence[str]) -> dict[str, str]:
    spare = iter(_FALLBACK * 4)
    return {label: data.colors.get(label) or next(spare) for label in labels}


def _draw_lanes(ax: Axes, data: _Collector) -> None:
    names = [n for n in data.names if n in data.segments] or sorted(data.segments)
    end = data.end
    seen: dict[str, None] = {}
    for name in names:
        for _, label in data.segments[name]:
            if label:
                seen[label] = None
    colors = _colors_for(data, list(seen))
    for row, name in enumerate(names):
        bars: dict[str, list[tuple[float, float]]] = defaultdict(list)
        segs = data.segments[name]
        for (start, label), nxt in zip(segs, [*segs[1:], (end, "")], strict=True):
            if label and nxt[0] > start:
                bars[label].append((start, nxt[0] - start))
        for label, spans in bars.items():
            ax.broken_barh(spans, (row - 0.4, 0.8), facecolors=colors[label], linewidth=0)
    ax.set_yticks(range(len(names)), names, fontsize=7 if len(names) > 20 else 8)
    ax.set_ylim(len(names) - 0.5, -0.5)  # first actor on top
    ax.set_title("what each actor was doing", loc="left", fontsize=10, fontweight="bold")
    handles = [Patch(color=colors[label], label=label) for label in seen]
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8,
                  frameon=False, title="state", title_fontsize=8)  # fmt: skip
    ax.grid(axis="x", alpha=0.3)


def _draw_counts(ax: Axes, data: _Collector, actors: int) -> None:
    samples = data.samples
    labels = list(dict.fromkeys(k for _, counts in samples for k, v in counts.items() if v > 0))
    colors = _colors_for(data, labels)
    if samples and labels:
        xs = [ts for ts, _ in samples]
        ys = [[counts.get(label, 0) for _, counts in samples] for label in labels]
        ax.stackplot(xs, ys, labels=labels, colors=[colors[lb] for lb in labels], step="post",
                     linewidth=0)  # fmt: skip
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False,
                  title="state", title_fontsize=8)  # fmt: skip
    ax.set_ylim(0, max(actors, 1))
    ax.set_ylabel("actors")
    ax.set_title(
        f"actors per state ({actors} actors: one lane each is drawn for up to "
        f"{GANTT_MAX_ACTORS}, so the Gantt chart is skipped)",
        loc="left", fontsize=10, fontweight="bold",
    )  # fmt: skip
    ax.grid(axis="y", alpha=0.3)


def _draw_waits(ax: Axes, data: _Collector, speedup: float | None) -> None:
    # Simulated minutes if the run has a clock (what a scenario's durations are given in),
    # otherwise wall milliseconds.
    scale, unit = (speedup / 60.0, "simulated minutes") if speedup else (1000.0, "wall ms")
    groups = sorted(
        ((label, waits) for label, waits in data.waits.items()
         if label.split(" ")[0] not in _SENDS or _p95(waits) > _BLOCKED_S),
        key=lambda kv: -len(kv[1]),
    )  # fmt: skip
    if len(groups) > 4:
        # Many primitives (five forks): one group per operation and sort of primitive.
        merged: dict[str, list[float]] = defaultdict(list)
        for label, waits in groups:
            op, _, prim = label.partition(" ")
            stem = prim.rstrip("0123456789").rstrip("-_")
            merged[f"{op} {stem}*" if stem and stem != prim else label].extend(waits)
        groups = sorted(merged.items(), key=lambda kv: -len(kv[1]))[:4]
    ax.set_title(f"waiting times in blocking operations ({unit})", loc="left", fontsize=10,
                 fontweight="bold")  # fmt: skip
    if not groups:
        ax.text(0.5, 0.5, "no blocking operation returned in this run", transform=ax.transAxes,
                ha="center", va="center", color="#777777")  # fmt: skip
        return
    values = [[w * scale for w in waits] for _, waits in groups]
    high = max(max(v) for v in values)
    bins = [high * i / 40 for i in range(41)] if high > 0 else 10
    labels = [_wait_label(label, v, unit) for (label, _), v in zip(groups, values, strict=True)]
    colors = list(_SERIES_COLORS[: len(values)])
    ax.hist(values, bins=bins, stacked=True, label=labels, color=colors, edgecolor="white",
            linewidth=0.4)  # fmt: skip
    if data.pending:
        ax.text(0.99, 0.97, f"{data.pending} waits never returned (not shown)", ha="right",
                va="top", transform=ax.transAxes, fontsize=8, color="#b71c1c")  # fmt: skip
    ax.legend(loc="upper right", fontsize=8, bbox_to_anchor=(1.0, 0.9 if data.pending else 1.0))
    ax.set_xlabel(f"wait from invoke to return ({unit})")
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 5))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("operations")
    ax.set_xlim(left=0)
    ax.grid(axis="y", alpha=0.3)


def _common_start(names: Sequence[str]) -> str:
    """The longest start all ``names`` share (``fork-`` for fork-0 .. fork-4)."""
    first, last = min(names), max(names)
    size = 0
    while size < min(len(first), len(last)) and first[size] == last[size]:
        size += 1
    return first[:size]


def _p95(values: Sequence[float]) -> float:
    # The summary's percentile (interpolated), so the picture and the table give one p95.
    return percentile(sorted(values), 95)


def _wait_label(label: str, values: Sequence[float], unit: str) -> str:
    n = len(values)
    mean = sum(values) / n
    p95 = _p95(values)
    short = "min" if unit.startswith("simulated") else "ms"
    return f"{label}: n={n}, mean {mean:.3g}, p95 {p95:.3g} {short}"
