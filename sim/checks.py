"""Invariant checks over a run's event history, fed in time order.

Each check sees every event once and gives a :class:`Verdict`. A check that finds nothing to
look at says ``skip``, never ``pass``: a check that cannot fail must not claim success.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from . import invariants

__all__ = [
    "ActorsEnded",
    "Check",
    "NoDeadlock",
    "Router",
    "SemaphoreBound",
    "SeqContiguous",
    "Verdict",
    "generic_checks",
    "settle",
]

_SHOW = 3  # violations spelled out per check; the rest are counted


@dataclass(frozen=True)
class Verdict:
    """The outcome of one invariant check, in words a student can read."""

    name: str
    status: Literal["pass", "fail", "skip", "expected"]
    detail: str
    # The phenomenon a failure of this check demonstrates (a deadlock, lost updates), if any.
    phenomenon: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "fail"


class Check:
    """Base class: override ``feed`` and ``verdict``.

    ``phenomenon`` names what a failure of this check shows, so that a demo config can declare
    it as expected (``expect = ["lost_updates"]``). ``needs_completion`` marks checks that only
    make sense for a run that went to its end; they are skipped when the run was stopped.
    """

    name = "check"
    phenomenon: str | None = None
    needs_completion = False
    # What the check needs to see: op events on these primitives, events of these names.
    # None for both means every event (correct, but slower on a long log).
    prims: frozenset[str] | None = None
    events: frozenset[str] | None = None

    def feed(self, event: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def verdict(self) -> Verdict:
        raise NotImplementedError

    def _result(self, problems: list[str], count: int, ok: str) -> Verdict:
        if not problems:
            return Verdict(self.name, "pass", ok, self.phenomenon)
        more = f" (and {count - len(problems)} more)" if count > len(problems) else ""
        return Verdict(self.name, "fail", "; ".join(problems) + more, self.phenomenon)


class SeqContiguous(Check):
    """Every actor's ``seq`` runs 0, 1, 2, ... with no gap: no line was lost on the way."""

    name = "seq contiguous"

    def __init__(self) -> None:
        self._next: dict[str, int] = {}
        self._problems: list[str] = []
        self._count = 0
        self._lines = 0

    def feed(self, event: Mapping[str, Any]) -> None:
        actor, seq = event["actor"], event["seq"]
        expected = self._next.get(actor, 0)
        self._lines += 1
        if seq == expected:  # the common case, kept short: this runs for every line
            self._next[actor] = seq + 1
            return
        self._count += 1
        if len(self._problems) < _SHOW:
            self._problems.append(
                f"{actor}: seq {seq} at ts {event['ts']:.6f} where {expected} was due "
                f"({seq - expected:+d})"
            )
        self._next[actor] = max(expected, seq + 1)

    def verdict(self) -> Verdict:
        if not self._lines:
            return Verdict(self.name, "skip", "no events")
        ok = f"{len(self._next)} actors, {self._lines} lines, no gaps"
        return self._result(self._problems, self._count, ok)


class SemaphoreBound(Check):
    """Holders of a semaphore, counted over [acquire ok, release invoke], never exceed its value.

    Counting holders alone cannot see a release without an acquire (a car that leaves twice):
    the count drops and the semaphore silently admits one more than its value. So for a
    semaphore that starts above 0, a completed release must never outnumber the acquires begun.
    """

    def __init__(self, prim: str, value: int) -> None:
        self.prim = prim
        self.value = value
        # A semaphore that starts at 0 is a signal: nobody gets through before a release.
        self.name = (f"{prim}: at most {value} holders" if value else
                     f"{prim}: no acquire without an earlier release")  # fmt: skip
        self.prims = frozenset({prim})
        self._held = 0
        self._max = 0
        self._ops = 0
        self._problems: list[str] = []
        self._count = 0
        self._begun = 0
        self._released = 0

    def feed(self, event: Mapping[str, Any]) -> None:
        if event.get("event") != "op" or event.get("prim") != self.prim:
            return
        op, phase = event.get("op"), event.get("phase")
        if op == "acquire" and phase == "invoke":
            self._begun += 1
        elif op == "release" and phase == "ok" and self.value:
            self._released += 1
            if self._released > self._begun:
                self._count += 1
                if len(self._problems) < _SHOW:
                    self._problems.append(
                        f"{event['actor']} released at ts {event['ts']:.6f} (seq {event['seq']}) "
                        f"more than was ever acquired: the semaphore now admits more than "
                        f"{self.value}"
                    )
                self._released = self._begun  # report each extra release once
        if op == "acquire" and phase == "ok":
            self._ops += 1
            self._held += 1
            self._max = max(self._max, self._held)
            if self._held > self.value:
                self._count += 1
                if len(self._problems) < _SHOW:
                    self._problems.append(
                        f"{self._held} holders at ts {event['ts']:.6f} when {event['actor']} "
                        f"acquired (seq {event['seq']})"
                    )
        elif op == "release" and phase == "invoke":
            self._held -= 1

    def verdict(self) -> Verdict:
        if not self._ops:
            return Verdict(self.name, "skip", "no acquire completed")
        ok = f"{self._ops} acquires, at most {self._max} held at once"
        return self._result(self._problems, self._count, ok)


class ActorsEnded(Check):
    """Every actor the engine started logged a clean end and exited with status 0.

    Once the engine has stopped the run (Ctrl-C, timeout, deadlock, a crash elsewhere), an actor
    that it terminated is not a failure of that actor; a crash always is.
    """

    name = "every actor ended cleanly"
    events = frozenset({"actor_end", "exit", "stopping"})

    def __init__(self, actors: Iterable[str]) -> None:
        self._actors = set(actors)
        self._ends: dict[str, Mapping[str, Any]] = {}
        self._exits: dict[str, int | None] = {}
        self._stopped = False

    def feed(self, event: Mapping[str, Any]) -> None:
        kind = event["event"]
        if kind == "actor_end":
            self._ends[event["actor"]] = event
        elif event["actor"] == "engine":
            if kind == "exit":
                self._exits[event.get("target", "")] = event.get("code")
            else:
                self._stopped = True

    def verdict(self) -> Verdict:
        if not self._actors:
            return Verdict(self.name, "skip", "no actors")
        problems: list[str] = []
        stopped = 0
        for actor in sorted(self._actors):
            end = self._ends.get(actor)
            status = end.get("status", "?") if end else "no end record"
            code = self._exits.get(actor)
            if status == "ok" and code == 0:
                continue
            # 143: SIGTERM handled, -15/-9: killed by the engine's SIGTERM/SIGKILL; None with
            # no end record: the run was stopped before this actor was started at all.
            if self._stopped and status != "crashed" and code in (143, -15, -9, None):
                stopped += 1
                continue
            what = status
            if end and end.get("error"):
                what += f" ({end['error']} at {end.get('where', '?')})"
            problems.append(f"{actor}: {what}, exit code {code}")
        ok = f"{len(self._actors)} actors"
        if stopped:
            ok += f", {stopped} of them stopped by the engine"
        return self._result(problems[:_SHOW], len(problems), ok)


class NoDeadlock(Check):
    """The engine never found every live actor blocked with nobody left to wake them."""

    name = "no deadlock"
    phenomenon = "deadlock"
    events = frozenset({"deadlock", "run_start"})

    def __init__(self) -> None:
        self._found: Mapping[str, Any] | None = None
        self._events = 0

    def feed(self, event: Mapping[str, Any]) -> None:
        self._events += 1
        if event["event"] == "deadlock" and event["actor"] == "engine":
            self._found = event

    def verdict(self) -> Verdict:
        if self._found is None:
            if not self._events:
                return Verdict(self.name, "skip", "no run_start event from the engine")
            return Verdict(self.name, "pass", "never stalled", self.phenomenon)
        detail = f"at {self._found['ts']:.3f} s: {self._found.get('explanation', '')}"
        return Verdict(self.name, "fail", detail, self.phenomenon)


def generic_checks(
    primitives: Mapping[str, Mapping[str, Any]], actors: Iterable[str]
) -> list[Check]:
    """The checks every run gets, whatever its scenario."""
    checks: list[Check] = [SeqContiguous(), ActorsEnded(actors), NoDeadlock()]
    for name, info in primitives.items():
        kind = info.get("kind")
        if kind in ("semaphore", "bounded_semaphore"):
            checks.append(SemaphoreBound(name, int(info["value"])))
        elif kind == "lock":
            checks.append(SemaphoreBound(name, 1))
        checks.extend(invariants.checks_for(name, info))
    return checks


def settle(check: Check, verdict: Verdict, *, expected: frozenset[str], stopped: bool) -> Verdict:
    """A verdict in the light of the run: what the config expects, and whether it completed."""
    if stopped and check.needs_completion and verdict.status != "pass":
        return Verdict(verdict.name, "skip", f"run was stopped early; {verdict.detail}")
    if verdict.phenomenon is None or verdict.phenomenon not in expected:
        return verdict
    if verdict.status == "fail":
        return Verdict(verdict.name, "expected", verdict.detail, verdict.phenomenon)
    return Verdict(
        verdict.name,
        "fail",
        f"expected {verdict.phenomenon}, but it did not appear ({verdict.detail})",
        verdict.phenomenon,
    )


class Router:
    """Feeds each event only to the checks that declared an interest in it."""

    def __init__(self, checks: Iterable[Check]) -> None:
        self._every: list[Any] = []
        self._by_prim: dict[Any, list[Any]] = {}
        self._by_event: dict[str, list[Any]] = {}
        for check in checks:
            if check.prims is None and check.events is None:
                self._every.append(check.feed)
                continue
            for prim in check.prims or ():
                self._by_prim.setdefault(prim, []).append(check.feed)
            for name in check.events or ():
                self._by_event.setdefault(name, []).append(check.feed)

    def add(self, feed: Any) -> None:
        """Also feed every event to ``feed`` (a scenario's analysis)."""
        self._every.append(feed)

    def run(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Feed ``events`` (in time order) to whoever wants them; returns how many there were."""
        every, by_prim, by_event = self._every, self._by_prim, self._by_event
        count = 0
        for event in events:
            count += 1
            for feed in every:
                feed(event)
            name = event["event"]
            targets = by_prim.get(event.get("prim")) if name == "op" else by_event.get(name)
            if targets:
                for feed in targets:
                    feed(event)
        return count
