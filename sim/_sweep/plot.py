"""Pictures of a sweep: a metric against the first axis with 95 % bands, or a heatmap.

Bands are the summary's intervals (``{metric}_low`` .. ``{metric}_high``), clipped to the
bounds the metric cannot leave; a metric in ``%`` is drawn in percent on a 0-100 axis; the
legend says how many repetitions each band rests on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sim.errors import ConfigError
from sim.scenario import Metric

from .grid import Grid

__all__ = ["check_metric", "drawable", "plot_metric", "plottable"]


def plottable(metrics: Sequence[Metric]) -> list[Metric]:
    """The declared metrics a sweep can draw, in declaration order: the one list ``--plot`` is
    checked against, before the runs and after them (``theory_*`` is drawn beside its metric,
    never alone)."""
    return [m for m in metrics if not m.words]


def drawable(metrics: Sequence[Metric], summary: Sequence[Mapping[str, Any]]) -> list[Metric]:
    """Those of :func:`plottable` that some point of a finished sweep's ``summary`` measured."""
    return [m for m in plottable(metrics) if _measured(summary, m.key)]


def _measured(summary: Sequence[Mapping[str, Any]], metric: str) -> bool:
    return any(_finite(row.get(f"{metric}_mean")) for row in summary)


def check_metric(metrics: Sequence[Metric], metric: str) -> Metric:
    """The declaration of ``metric`` if a sweep of a scenario declaring ``metrics`` can draw
    it; a ConfigError of ``--plot`` listing those it can otherwise."""
    known = plottable(metrics)
    for declared in known:
        if declared.key == metric:
            return declared
    words = " (words, not a number)" if any(m.key == metric for m in metrics) else ""
    raise ConfigError(f"no metric {metric!r}{words}; one of: {', '.join(m.key for m in known)}",
                      source="--plot")  # fmt: skip


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _value(row: Mapping[str, Any], key: str) -> float:
    value = row.get(key)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return math.nan


def plot_metric(
    grid: Grid,
    summary: Sequence[Mapping[str, Any]],
    metric: str,
    path: Path,
    *,
    title: str,
    label: str,
    heatmap: bool = False,
    declared: Metric | None = None,
) -> Path:
    """Draw ``metric`` of a sweep's summary into ``path`` (PNG or SVG by its suffix);
    ``declared`` is the metric's declaration (its unit and bounds)."""
    if not _measured(summary, metric):
        # An empty picture ("n = 0 runs") says nothing the error does not say better. The
        # summary holds the runs that ended ok: a failed run's metrics are no measurement.
        if not any(row.get("ok") for row in summary):
            raise ConfigError(f"no run of this sweep ended ok, so none has a {metric!r} to draw "
                              "(the failed runs' metrics are in results.csv)",
                              source="--plot")  # fmt: skip
        raise ConfigError(f"no run of this sweep measured {metric!r}, nothing to draw (each "
                          "run's metrics are in results.csv)", source="--plot")  # fmt: skip
    from sim._backend import plt

    axes = [a.key for a in grid.axes]
    percent = declared is not None and declared.unit == "%"
    scale = 100.0 if percent else 1.0
    lower, upper = declared.bounds if declared is not None else (None, None)

    def value(row: Mapping[str, Any], key: str) -> float:
        return _value(row, key) * scale

    def clip(v: float) -> float:
        if lower is not None and v < lower * scale:
            return lower * scale
        if upper is not None and v > upper * scale:
            return upper * scale
        return v

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    if heatmap:
        if len(axes) != 2:
            raise ConfigError("a heatmap needs exactly two axes", source="--heatmap")
        xs = list(grid.axes[0].values)
        ys = list(grid.axes[1].values)
        cells = [[math.nan] * len(xs) for _ in ys]
        for row in summary:
            cells[ys.index(row[axes[1]])][xs.index(row[axes[0]])] = value(row, f"{metric}_mean")
        vmin, vmax = (0.0, 100.0) if percent else (None, None)
        image = ax.imshow(cells, origin="lower", aspect="auto", cmap="viridis", vmin=vmin,
                          vmax=vmax)  # fmt: skip
        ax.set_xticks(range(len(xs)), [str(x) for x in xs])
        ax.set_yticks(range(len(ys)), [str(y) for y in ys])
        ax.set_xlabel(axes[0])
        ax.set_ylabel(axes[1])
        fig.colorbar(image, ax=ax, label=label)
        for j, cell_row in enumerate(cells):
            for i, cell in enumerate(cell_row):
                if math.isfinite(cell):
                    ax.text(i, j, f"{cell:.3g}", ha="center", va="center", color="white")
    else:
        groups: dict[Any, list[Mapping[str, Any]]] = {}
        for row in summary:
            groups.setdefault(row[axes[1]] if len(axes) > 1 else None, []).append(row)
        for group, rows in groups.items():
            rows = sorted(rows, key=lambda r: r[axes[0]])
            x = [float(r[axes[0]]) for r in rows]
            mean = [value(r, f"{metric}_mean") for r in rows]
            low = [clip(value(r, f"{metric}_low")) for r in rows]
            high = [clip(value(r, f"{metric}_high")) for r in rows]
            counts = sorted({int(_value(r, f"{metric}_n")) for r in rows
                             if _finite(r.get(f"{metric}_n"))})  # fmt: skip
            runs = "-".join(str(n) for n in (counts[:1] + counts[-1:] if len(counts) > 1
                                             else counts))  # fmt: skip
            name = f"{axes[1]} = {group}" if group is not None else "measured"
            band = f"95 % interval, n = {runs} runs" if runs else "95 % interval"
            line = ax.plot(x, mean, "o-", label=name)[0]
            ax.fill_between(x, low, high, alpha=0.2, color=line.get_color(), linewidth=0,
                            label=f"{name}: {band}")  # fmt: skip
            model = [value(r, f"theory_{metric}") for r in rows]
            if any(math.isfinite(m) for m in model):
                model_name = f"{name}, model" if group is not None else "queueing model"
                ax.plot(x, model, "--", color=line.get_color(), label=model_name)
        ax.set_xlabel(axes[0])
        ax.set_ylabel(label)
        if percent:
            ax.set_ylim(0.0, 100.0)
        elif lower is not None:
            ax.set_ylim(bottom=lower * scale)
        ax.grid(alpha=0.3)
        ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
