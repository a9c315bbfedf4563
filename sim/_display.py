"""How a :class:`~sim.Run` and a :class:`~sim.Sweep` show themselves in Jupyter: an HTML table of
metrics and verdicts (or of a sweep's points), with the run's plot inlined as a PNG."""

from __future__ import annotations

import base64
import html
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._sweep.grid import axis_names
from ._sweep.results import ok_cell
from .checks import Verdict
from .report import format_value
from .scenario import Metric

__all__ = ["png_of", "run_html", "sweep_html"]

_STATUS = {"pass": "#2ca02c", "fail": "#d62728", "skip": "#bcbd22", "expected": "#9467bd"}
_WORDS = {"pass": "pass", "fail": "FAIL", "skip": "skip", "expected": "shown"}
_TABLE = 'style="border-collapse:collapse;margin:0.4em 0"'
_CELL = 'style="padding:2px 10px;text-align:{align};border-bottom:1px solid #ddd"'


def _cell(text: str, align: str = "left", bold: bool = False) -> str:
    body = f"<b>{html.escape(text)}</b>" if bold else html.escape(text)
    return f"<td {_CELL.format(align=align)}>{body}</td>"


def png_of(draw: Callable[[Path], object]) -> str:
    """``draw(path)`` into a temporary PNG, returned as base64 text (empty if it fails)."""
    with tempfile.TemporaryDirectory(prefix="sim-plot-") as folder:
        path = Path(folder) / "plot.png"
        try:
            draw(path)
        except Exception:
            return ""  # a display must not fail because a picture could not be drawn
        return base64.b64encode(path.read_bytes()).decode("ascii")


def _img(png: str) -> str:
    if not png:
        return ""
    return f'<img style="max-width:100%" src="data:image/png;base64,{png}"/>'


def run_html(
    *,
    title: str,
    status: str,
    where: str,
    metrics: Mapping[str, Any],
    declared: Sequence[Metric],
    theory: Mapping[str, float],
    verdicts: Sequence[Verdict],
    png: str,
) -> str:
    """A run: title and status, its metrics (beside the model's values), its verdicts, plot."""
    colour = {"ok": "#2ca02c", "interrupted": "#bcbd22"}.get(status, "#d62728")
    head = (f'<div><b>{html.escape(title)}</b> <span style="color:{colour}">'
            f"{html.escape(status)}</span> <code>{html.escape(where)}</code></div>")  # fmt: skip
    rows = []
    for metric in declared:
        if metric.key not in metrics:
            continue
        model = theory.get(metric.key)
        rows.append("<tr>" + _cell(metric.label) + _cell(format_value(metrics[metric.key],
                    metric.unit), "right") + _cell("" if model is None else "model "
                    + format_value(model, metric.unit), "right") + "</tr>")  # fmt: skip
    rows.append("<tr>" + _cell("events logged") + _cell(format_value(metrics.get("events", 0)),
                "right") + _cell("") + "</tr>")  # fmt: skip
    checks = []
    for verdict in verdicts:
        colour = _STATUS.get(verdict.status, "#000")
        checks.append(
            f'<tr><td {_CELL.format(align="left")}><b style="color:{colour}">'
            f"{_WORDS.get(verdict.status, verdict.status)}</b></td>"
            + _cell(verdict.name, bold=True)
            + _cell(verdict.detail)
            + "</tr>"
        )
    return (
        f'<div class="sim-run">{head}<table {_TABLE}>{"".join(rows)}</table>'
        f"<table {_TABLE}>{''.join(checks)}</table>{_img(png)}</div>"
    )


def _number(value: Any, unit: str) -> str:
    if not isinstance(value, float) or math.isnan(value):
        return "-" if value is None or isinstance(value, float) else str(value)
    return format_value(value, unit)


def sweep_html(
    *,
    title: str,
    where: str,
    axes: Sequence[str],
    summary: Sequence[Mapping[str, Any]],
    declared: Sequence[Metric],
    png: str,
) -> str:
    """A sweep: one row per point (how many runs were ok, each metric's mean ± 95 % CI and
    the model's value), then the plot."""
    present = [m for m in declared if any(f"{m.key}_mean" in row for row in summary)]
    modelled = [m for m in present if any(row.get(f"theory_{m.key}") is not None
                                          for row in summary)]  # fmt: skip
    shown = (modelled + [m for m in present if m not in modelled])[:5]
    head = "".join(_cell(name, "right", True) for name in axis_names(axes))
    head += _cell("ok", "right", True)
    head += "".join(_cell(m.label + (f" ({m.unit})" if m.unit else ""), "right", True)
                    for m in shown)  # fmt: skip
    rows = []
    for row in summary:
        cells = [_cell(str(row.get(a)), "right") for a in axes]
        cells.append(_cell(ok_cell(row), "right"))
        for metric in shown:
            text = _number(row.get(f"{metric.key}_mean"), metric.unit)
            half = row.get(f"{metric.key}_ci95")
            if isinstance(half, float) and not math.isnan(half):
                text += " ± " + _number(half, "" if metric.unit != "%" else "%")
            model = row.get(f"theory_{metric.key}")
            if isinstance(model, float):
                text += f" (model {_number(model, metric.unit)})"
            cells.append(_cell(text, "right"))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<div class="sim-sweep"><div><b>{html.escape(title)}</b> '
        f"<code>{html.escape(where)}</code></div><table {_TABLE}><tr>{head}</tr>"
        f"{''.join(rows)}</table>{_img(png)}</div>"
    )
