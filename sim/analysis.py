"""Turn a finished run's log into metrics and invariant verdicts.

The engine calls this at the end of a run, and replay calls it again on the same file: both read
the log, never the engine's memory, so what a run reports can always be recomputed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checks import Check, Router, Verdict, generic_checks, settle
from .events import Finding, ordered, read_events

__all__ = ["Analysis", "Report", "analyse"]


class Analysis:
    """A scenario's own reading of a run. Subclass it; the engine feeds events in time order."""

    def feed(self, event: Mapping[str, Any]) -> None:
        """See one event."""

    def metrics(self) -> dict[str, Any]:
        """The scenario's summary metrics, by the keys its ``Scenario.metrics`` declares."""
        return {}

    def checks(self) -> list[Check]:
        """The scenario's own invariant checks; they are fed every event too."""
        return []


@dataclass
class Report:
    """Metrics and verdicts of one run, plus any problems with the file itself."""

    metrics: dict[str, Any]
    verdicts: list[Verdict]
    findings: list[Finding] = field(default_factory=list)
    events: int = 0

    @property
    def ok(self) -> bool:
        errors = any(f.severity == "error" for f in self.findings)
        return not errors and not any(v.failed for v in self.verdicts)

    @property
    def stopped(self) -> bool:
        """The engine stopped the actors before they finished (Ctrl-C, timeout, deadlock)."""
        return self.metrics.get("stopped", False) is True


def analyse(
    events_path: Path,
    analysis: Analysis,
    primitives: Mapping[str, Mapping[str, Any]],
    actors: Iterable[str],
    *,
    expected: Iterable[str] = (),
    findings: list[Finding] | None = None,
) -> Report:
    """Read ``events_path`` and run the generic and the scenario's checks over it.

    ``expected`` names the phenomena the config declares (their checks failing is the demo
    working). Whether the engine stopped the run early is read from the log itself (its
    ``stopping`` event), so that the run and its replay reach the same verdicts.
    """
    findings = [] if findings is None else findings
    stopped = _Stopped()
    checks = [*generic_checks(primitives, actors), *analysis.checks(), stopped]
    router = Router(checks)
    router.add(analysis.feed)
    count = router.run(ordered(read_events(events_path, findings), findings=findings))
    if count == 0:
        findings.append(Finding(0, "the log has no events: there is nothing to check"))
    metrics = analysis.metrics()
    metrics["events"] = count
    metrics["stopped"] = stopped.seen
    declared = frozenset(expected)
    verdicts = [
        settle(c, c.verdict(), expected=declared, stopped=stopped.seen)
        for c in checks
        if c is not stopped
    ]
    return Report(metrics, verdicts, findings, count)


class _Stopped(Check):
    """Notes the engine's ``stopping`` event: the actors were stopped before their end."""

    events = frozenset({"stopping"})

    def __init__(self) -> None:
        self.seen = False

    def feed(self, event: Mapping[str, Any]) -> None:
        if event["actor"] == "engine":
            self.seen = True
