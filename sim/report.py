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

__all__ = ["format_value", "print_findings", "print_summary", "summary"]

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


def print_summary(
    console: Console,
    *,
    title: str,
    metrics: Mapping[str, Any],
    declared: Sequence[Metric],
    verdicts: Sequence[Verdict],
    status: str,
    reason: str,
    wall_s: float,
    run_dir: str,
) -> None:
    """Print the summary table and the verdicts to ``console``."""
    for part in summary(title=title, metrics=metrics, declared=declared, verdicts=verdicts,
                        status=status, reason=reason, wall_s=wall_s, run_dir=run_dir):  # fmt: skip
        console.print(part)


def summary(
    *,
    title: str,
    metrics: Mapping[str, Any],
    declared: Sequence[Metric],
    verdicts: Sequence[Verdict],
    status: str,
    reason: str,
    wall_s: float,
    run_dir: str,
) -> list[RenderableType]:
    """The summary as renderables: what :func:`print_summary` prints, for a display to show."""
    parts: list[RenderableType] = [Text.from_markup(f"[bold]{escape(title)}[/]")]
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(justify="right")
    for metric in declared:
        if metric.show and metric.key in metrics:
            table.add_row(metric.label, format_value(metrics[metric.key], metric.unit))
    table.add_row("events logged", format_value(metrics.get("events", 0)))
    table.add_row("wall time", f"{wall_s:.2f} s")
    parts.append(table)
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
