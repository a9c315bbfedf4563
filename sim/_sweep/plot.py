"""Pictures of a sweep: a metric against the first axis with 95 % bands, or a heatmap."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sim.errors import ConfigError

from .grid import Grid

__all__ = ["plot_metric"]


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
) -> Path:
    """Draw ``metric`` of a sweep's summary into ``path`` (PNG or SVG by its suffix)."""
    if not any(f"{metric}_mean" in row for row in summary):
        known = sorted({k[: -len("_mean")] for row in summary for k in row if k.endswith("_mean")})
        raise ConfigError(f"no metric {metric!r} in this sweep; one of: {', '.join(known)}",
                          source="--plot")  # fmt: skip
    from sim._backend import plt

    axes = [a.key for a in grid.axes]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    if heatmap:
        if len(axes) != 2:
            raise ConfigError("a heatmap needs exactly two axes", source="--heatmap")
        xs = list(grid.axes[0].values)
        ys = list(grid.axes[1].values)
        cells = [[math.nan] * len(xs) for _ in ys]
        for row in summary:
            cells[ys.index(row[axes[1]])][xs.index(row[axes[0]])] = _value(row, f"{metric}_mean")
        image = ax.imshow(cells, origin="lower", aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(xs)), [str(x) for x in xs])
        ax.set_yticks(range(len(ys)), [str(y) for y in ys])
        ax.set_xlabel(axes[0])
        ax.set_ylabel(axes[1])
        fig.colorbar(image, ax=ax, label=label)
        for j, cell_row in enumerate(cells):
            for i, value in enumerate(cell_row):
                if math.isfinite(value):
                    ax.text(i, j, f"{value:.3g}", ha="center", va="center", color="white")
    else:
        groups: dict[Any, list[Mapping[str, Any]]] = {}
        for row in summary:
            groups.setdefault(row[axes[1]] if len(axes) > 1 else None, []).append(row)
        for group, rows in groups.items():
            rows = sorted(rows, key=lambda r: r[axes[0]])
            x = [float(r[axes[0]]) for r in rows]
            mean = [_value(r, f"{metric}_mean") for r in rows]
            half = [_value(r, f"{metric}_ci95") for r in rows]
            name = f"{axes[1]} = {group}" if group is not None else "measured"
            line = ax.plot(x, mean, "o-", label=name)[0]
            low = [m - h for m, h in zip(mean, half, strict=True)]
            high = [m + h for m, h in zip(mean, half, strict=True)]
            ax.fill_between(x, low, high, alpha=0.2, color=line.get_color(), linewidth=0)
            model = [_value(r, f"theory_{metric}") for r in rows]
            if any(math.isfinite(m) for m in model):
                model_name = f"{name}, model" if group is not None else "queueing model"
                ax.plot(x, model, "--", color=line.get_color(), label=model_name)
        ax.set_xlabel(axes[0])
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
