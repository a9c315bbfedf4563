"""The end-of-run summary: the scenario's metrics, the invariant verdicts, where the log is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .checks import Verdict
from .history.lines import Finding
from .scenario import Metric

__all__ = [
    "format_value",
    "format_with_interval",
    "print_findings",
    "print_summary",
    "summary",
    "timing_lines",
]

_STATUS = {
    "pass": "[green]pass[/]",
    "fail": "[bold red]FAIL[/]",
    "skip": "[yellow]skip[/]",
    "expected": "[bold magenta]shown[/]",
}


def format_value(value: Any, unit: str = "") -> str:
    """A metric as a person reads it: thousands separators, sensible decimals, percentages."""
    if value is None:
        return "-"
    if unit == "%":
        return f"{100 * value:.1f} %"
    if isinstance(value, (bool, int)):
        text = f"{value:,}"
    elif isinstance(value, float):
        text = f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    else:
        text = str(value)
    return f"{text} {unit}".rstrip()


def format_with_interval(metric: Metric, metrics: Mapping[str, Any]) -> str:
    """A metric's value, and its confidence interval ``[low, high]`` when it has one."""
    text = format_value(metrics.get(metric.key), metric.unit)
    low, high = (metrics.get(k) for k in metric.companions) if metric.interval else (None, None)
    if isinstance(low, int | float) and isinstance(high, int | float):
        if metric.unit == "%":
            text += f" [{100 * low:.1f}, {100 * high:.1f}]"
        else:
            text += f" [{_short(low)}, {_short(high)}]"
    return text


def _short(value: float) -> str:
    return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"


def timing_lines(timing: Mapping[str, Any]) -> list[RenderableType]:
    """The timer's lateness, the realised means beside the requested ones, and the warning."""
    if not timing.get("sleeps"):
        return []
    lines: list[RenderableType] = []
    if timing.get("mode") == "virtual":
        lines.append(
            Text.from_markup("[dim]timers: virtual clock, every sleep ends when it was asked to[/]")
        )
    else:
        shortest = timing["shortest"]
        lines.append(Text.from_markup(
            f"[dim]timer lateness per sleep: mean {timing['late_mean_ms']:.3g} ms, p95 "
            f"{timing['late_p95_ms']:.3g} ms = {timing['late_minutes']:.3g} sim min at speedup "
            f"{timing['speedup']:g}, {timing['share']:.2%} of the shortest mean "
            f"({escape(str(shortest['what']))}, {shortest['mean']:.3g} min)[/]"
        ))  # fmt: skip
    means = ", ".join(
        f"{escape(str(m['what']))} {m['realised']:.4g} (asked {m['requested']:.4g}, {m['n']}x)"
        for m in timing.get("means", ())
    )
    lines.append(Text.from_markup(f"[dim]realised mean durations, sim min: {means}[/]"))
    if timing.get("warning"):
        lines.append(Text.from_markup(f"[bold yellow]warning:[/] {escape(str(timing['warning']))}"))
    return lines


def print_summary(
    console: Console,
    *,
    title: str,
    metrics: Mapping[str, Any],
    declared: Sequence[Metric],
    verdicts: Sequence[Verdict],
    status: str,
    reason: str,
    wall_s: float | None,
    run_dir: str,
    timing: Mapping[str, Any] | None = None,
    theory: Mapping[str, float] | None = None,
) -> None:
    """Print the summary table (with a model's predictions beside the metrics it predicts),
    the timer's lateness and the verdicts to ``console``."""
    for part in summary(title=title, metrics=metrics, declared=declared, verdicts=verdicts,
                        status=status, reason=reason, wall_s=wall_s, run_dir=run_dir,
                        timing=timing, theory=theory):  # fmt: skip
        console.print(part)


# The widest a metric's value is shown: one long value (why a steady window was withheld) would
# otherwise pad every number in its column out to its width.
_VALUE_WIDTH = 64


def summary(
    *,
    title: str,
    metrics: Mapping[str, Any],
    declared: Sequence[Metric],
    verdicts: Sequence[Verdict],
    status: str,
    reason: str,
    wall_s: float | None,
    run_dir: str,
    timing: Mapping[str, Any] | None = None,
    theory: Mapping[str, float] | None = None,
) -> list[RenderableType]:
    """The summary as renderables: what :func:`print_summary` prints, for a display to show."""
    parts: list[RenderableType] = [Text.from_markup(f"[bold]{escape(title)}[/]")]
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(justify="right", max_width=_VALUE_WIDTH)
    theory = theory or {}
    if theory:
        table.add_column(style="dim")
    for metric in declared:
        if metric.show and metric.key in metrics:
            row = [metric.label, format_with_interval(metric, metrics)]
            if metric.key in theory:
                row.append("model " + format_value(theory[metric.key], metric.unit))
            table.add_row(*row)
    table.add_row("events logged", format_value(metrics.get("events", 0)))
    table.add_row("wall time", "-" if wall_s is None else f"{wall_s:.2f} s")
    parts.append(table)
    if timing:
        parts.extend(timing_lines(timing))
    checks = Table(show_header=False, box=None, padding=(0, 2))
    checks.add_column()
    checks.add_column(style="bold")
    checks.add_column(style="dim")
    for verdict in verdicts:
        checks.add_row(_STATUS[verdict.status], Text(verdict.name), Text(verdict.detail))
    parts.append(checks)
    for verdict in verdicts:
        if verdict.status == "expected":
            parts.append(Text.from_markup(
                f"[bold magenta]As this config expects, the run shows {verdict.phenomenon}:[/] "
                f"{escape(verdict.detail)}"
            ))  # fmt: skip
    style = {"ok": "green", "interrupted": "yellow"}.get(status, "bold red")
    line = f"[{style}]{status}[/]" + (f": {escape(reason)}" if reason and status != "ok" else "")
    parts.append(Text.from_markup(f"{line}   log: {escape(run_dir)}"))
    return parts


def print_findings(console: Console, findings: Sequence[Finding], path: object) -> None:
    """One line per problem found in the files themselves."""
    for finding in findings:
        where = f"{path} line {finding.line}" if finding.line else str(path)
        style = "bold red" if finding.severity == "error" else "yellow"
        console.print(f"[{style}]{finding.severity}:[/] {escape(where)}: {escape(finding.problem)}")
