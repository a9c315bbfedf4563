"""Turn a finished run's log into metrics and invariant verdicts, in one pass of its history.

The engine calls this at the end of a run, and replay calls it again on the same file: both read
the log, never the engine's memory, so what a run reports can always be recomputed.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .checks import Check, SeqContiguous, Verdict, generic_checks, settle
from .errors import ScenarioError, SimError
from .history import History, Subscriber
from .history.lines import Finding, Line, lateness, ordered, read_lines
from .timing import TimerLateness

if TYPE_CHECKING:
    from .config import RunConfig
    from .scenario import Scenario

__all__ = ["Analysis", "Report", "analyse"]

P = TypeVar("P")


class Analysis(Subscriber, Generic[P]):
    """A scenario's own reading of a run: subclass it, subscribe to what you need (``prims``,
    ``events`` and the hooks of :class:`~sim.history.Subscriber`), return your metrics.

    Resource statistics come from the history itself (``history.waits("spaces", "acquire")``,
    ``history.level("spaces", "held")``), so an analysis keeps only what is its scenario's own.
    By default an analysis sees nothing; declare ``events`` and ``prims``.
    """

    prims: frozenset[str] | None = frozenset()
    events: frozenset[str] | None = frozenset()

    def __init__(self, config: RunConfig[P], history: History) -> None:
        self.config = config
        self.params: P = config.params
        self.history = history
        # Simulated minutes per second of ``ts`` (the wall-mode scale, also in virtual runs).
        self._per_second = config.clock.speedup / 60.0

    def minutes(self, seconds: float) -> float:
        """Simulated minutes that ``seconds`` of the log's ``ts`` stand for."""
        return seconds * self._per_second

    def metrics(self) -> dict[str, Any]:
        """The scenario's summary metrics, by the keys its ``Scenario.metrics`` declares."""
        return {}

    def checks(self) -> list[Check]:
        """The scenario's own invariant checks; they subscribe to the history too."""
        return []


@dataclass
class Report:
    """Metrics and verdicts of one run, plus any problems with the file itself."""

    metrics: dict[str, Any]
    verdicts: list[Verdict]
    findings: list[Finding] = field(default_factory=list)
    events: int = 0
    history: History | None = None
    #: How late the run's timers fired (see :mod:`sim.timing`); empty without a config.
    timing: dict[str, Any] = field(default_factory=dict)
    #: What the engine's ``stopping`` line said the run came to ("" if it stopped none).
    stopped_as: str = ""

    @property
    def ok(self) -> bool:
        errors = any(f.severity == "error" for f in self.findings)
        return not errors and not any(v.failed for v in self.verdicts)

    @property
    def reason(self) -> str:
        """The first violated invariant or broken line, in words (empty when there is none).

        Gaps in ``seq`` that the file's unreadable lines account for are their doing, not the
        run's: the damaged file is the reason then."""
        # The first error (a warning fails nothing); line 0 is the file as a whole.
        damage = next((f for f in self.findings if f.severity == "error"), None)
        broken = ""
        if damage is not None:
            where = f"events.jsonl line {damage.line}" if damage.line else "events.jsonl"
            broken = f"{where}: {damage.problem}"
        for verdict in self.verdicts:
            if verdict.failed:
                if verdict.name == SeqContiguous.name and self._gaps_are_damage():
                    return f"the log is damaged: {broken} (so {verdict.name} fails)"
                return f"invariant violated: {verdict.name}: {verdict.detail}"
        return broken

    def _gaps_are_damage(self) -> bool:
        """Every gap in ``seq`` may be an unreadable line of the file: there are at least as
        many of those as lines missing, and each gap (of those kept) has one before it in the
        file. (A torn last line never does: a gap shows on a later line of the actor.)"""
        history = self.history
        unread = [f.line for f in self.findings if f.severity == "error" and f.line > 0]
        if history is None or not history.gaps or not unread:
            return False
        missing = sum(line.seq - due for line, due in history.gaps)
        if history.gap_count > len(history.gaps) or missing > len(unread):
            return False  # more gaps than were kept, or than the damage can explain
        first = min(unread)
        return all(first < line.number for line, _ in history.gaps)

    @property
    def stopped(self) -> bool:
        """The engine stopped the actors before they finished (Ctrl-C, timeout, deadlock)."""
        return self.metrics.get("stopped", False) is True


class _Stopped(Subscriber):
    """Notes the engine's ``stopping`` event: the actors were stopped before their end, and
    what the run came to (``status``: a log written before it was said has none)."""

    events = frozenset({"stopping"})

    def __init__(self) -> None:
        self.seen = False
        self.status = ""

    def on_line(self, line: Line) -> None:
        if line.actor == "engine" and not self.seen:
            self.seen = True
            status = line.get("status")
            self.status = status if isinstance(status, str) else ""

    @property
    def cut_short(self) -> bool:
        """Stopped while it could still have gone on (Ctrl-C, a timeout, the step limit), not
        at the end of its story (a deadlock, a crash)."""
        return self.status in ("interrupted", "timeout")


def analyse(
    source: Path | Iterable[Iterable[Line]],
    *,
    primitives: Mapping[str, Mapping[str, Any]],
    actors: Iterable[str],
    config: RunConfig[Any] | None = None,
    scenario: Scenario[Any] | None = None,
    expected: Iterable[str] = (),
    findings: list[Finding] | None = None,
    subscribers: Sequence[Subscriber] = (),
    track_states: bool = False,
) -> Report:
    """Read ``source`` (an events file, or chunks of lines in time order) into a history and
    run the generic checks, the scenario's analysis and checks, and ``subscribers`` over it.

    ``expected`` names the phenomena the config declares (their checks failing is the demo
    working). Whether the engine stopped the run early is read from the log itself (its
    ``stopping`` event), so that the run and its replay reach the same verdicts.

    A file is read in time order; if some of its lines came so late (a loaded machine, a
    stalled actor) that the reading window missed them, it is read again with a window that
    takes them all in order: arrival order never decides a verdict. (Not when outside
    ``subscribers`` have seen the first reading; they get a warning finding instead.)
    """
    findings = [] if findings is None else findings
    actors, expected = list(actors), tuple(expected)
    given = list(findings)
    report = _analyse(source, primitives, actors, config, scenario, expected, findings,
                      subscribers, track_states, window=1.0)  # fmt: skip
    history = report.history
    assert history is not None
    if isinstance(source, Path) and history.late_lines and not subscribers:
        findings[:] = given
        window = lateness(source) + 1.0
        report = _analyse(source, primitives, actors, config, scenario, expected, findings,
                          subscribers, track_states, window=window)  # fmt: skip
        history = report.history
        assert history is not None
    if history.late_lines:
        findings.append(Finding(0, f"{history.late_lines:,} lines were read out of time order "
                                f"(by up to {history.late_s:.3f} s): verdicts that depend on "
                                "their order may be off", "warning"))  # fmt: skip
    return report


def _analyse(
    source: Path | Iterable[Iterable[Line]],
    primitives: Mapping[str, Mapping[str, Any]],
    actors: list[str],
    config: RunConfig[Any] | None,
    scenario: Scenario[Any] | None,
    expected: Iterable[str],
    findings: list[Finding],
    subscribers: Sequence[Subscriber],
    track_states: bool,
    window: float,
) -> Report:
    history = History(
        primitives,
        actors=actors,
        states=scenario.states if scenario is not None else None,
        track_states=track_states,
    )
    checks = generic_checks(history, actors)
    if scenario is not None:
        from .kinds.queue import LostItems

        checks.extend(LostItems(prim, handled) for prim, handled in scenario.handled.items())
    analysis = None
    if scenario is not None and config is not None:
        # A scenario's analysis is written for its own logs; on a foreign or damaged one it
        # may fail anywhere. That is a finding (the generic checks still run), not a crash.
        what = f"the analysis of {scenario.name}"
        analysis = _guarded(findings, what, lambda: scenario.analysis(config, history), None)
        if analysis is not None:
            checks.extend(_guarded(findings, what, analysis.checks, []))
    stopped = _Stopped()
    timers = TimerLateness(config)
    subs = [*checks, *([analysis] if analysis is not None else []), stopped, timers]
    for sub in [*subs, *subscribers]:
        history.subscribe(sub)
    chunks = ordered(read_lines(source, findings), window) if isinstance(source, Path) else source
    for chunk in chunks:
        history.feed(chunk)
    _guarded(findings, "the end of the history", history.finish, None)
    if history.lines == 0:
        findings.append(Finding(0, "the log has no events: there is nothing to check"))
    for line, why in history.malformed[:3]:
        if not why.startswith("an op line"):
            why = f"a line sim cannot read ({why}): not written by sim"
        findings.append(Finding(line.number, why))
    if history.malformed_count > 3:
        findings.append(Finding(0, f"{history.malformed_count - 3:,} more lines that sim cannot "
                                "read"))  # fmt: skip
    metrics: dict[str, Any] = {}
    if analysis is not None:
        metrics = _guarded(findings, f"the analysis of {scenario.name if scenario else '?'}",
                           analysis.metrics, {})  # fmt: skip
    if scenario is not None:
        _declared(scenario, metrics)
    metrics["events"] = history.lines
    metrics["stopped"] = stopped.seen
    declared = frozenset(expected)
    raw = [(c, _verdict(c, findings)) for c in checks]
    shown = frozenset(v.phenomenon for _, v in raw if v.status == "fail" and v.phenomenon)
    reported: set[str] = set()
    verdicts = [settle(c, v, expected=declared, stopped=stopped.seen, shown=shown,
                       reported=reported, cut_short=stopped.cut_short) for c, v in raw]  # fmt: skip
    return Report(metrics, verdicts, findings, history.lines, history, timers.summary(),
                  stopped.status)  # fmt: skip


T = TypeVar("T")


def _guarded(findings: list[Finding], what: str, call: Callable[[], T], default: T) -> T:
    """``call()``, or ``default`` and a finding if it fails on this log (a SimError, which is
    sim's own verdict on a scenario, still propagates)."""
    try:
        return call()
    except SimError:
        raise
    except Exception as exc:
        findings.append(Finding(0, f"{what} cannot read this log ({type(exc).__name__}: {exc})"))
        return default


def _verdict(check: Check, findings: list[Finding]) -> Verdict:
    failed = Verdict(check.name, "fail", "could not be checked on this log")
    return _guarded(findings, f"the check {check.name!r}", check.verdict, failed)


def _declared(scenario: Scenario[Any], metrics: Mapping[str, Any]) -> None:
    """A metric computed but not declared would never be shown: that is a scenario's bug."""
    keys = [key for m in scenario.metrics for key in (m.key, *m.companions)]
    for key in metrics:
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ScenarioError(
                f"{scenario.name}: the analysis computes metric {key!r}, which Scenario.metrics "
                f"does not declare{hint}"
            )
