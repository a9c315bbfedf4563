"""Invariant checks: small consumers of a run's history, each giving a :class:`Verdict`.

A check subscribes to the facts it needs (operations, holds, transfers of some primitives;
lines of some events) and says at the end what it found, in words a student can read. A check
that finds nothing to look at says ``skip``, never ``pass``: a check that cannot fail must not
claim success. The per-kind checks live with their kinds (sim.kinds); here are the base class,
the one problem collector every check shares, and the checks every run gets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from .history import History, Subscriber
from .history.lines import Line

__all__ = [
    "ActorsEnded",
    "Check",
    "NoDeadlock",
    "Problems",
    "SeqContiguous",
    "Verdict",
    "generic_checks",
    "settle",
]

#: Problems spelled out per check; the rest are counted.
SHOW = 3


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


class Problems:
    """What a check found wrong: the first few in words, all of them counted."""

    __slots__ = ("count", "shown")

    def __init__(self) -> None:
        self.shown: list[str] = []
        self.count = 0

    def __bool__(self) -> bool:
        return self.count > 0

    def __len__(self) -> int:
        return self.count

    def add(self, text: str | Callable[[], str]) -> None:
        """One more problem; ``text`` may be a function, called only if it will be shown."""
        self.count += 1
        if len(self.shown) < SHOW:
            self.shown.append(text if isinstance(text, str) else text())

    def extend(self, texts: Iterable[str]) -> None:
        for text in texts:
            self.add(text)

    def detail(self, sep: str = "; ") -> str:
        """The problems shown, joined by ``sep``, and how many more there are."""
        more = f" (and {self.count - len(self.shown)} more)" if self.count > len(self.shown) else ""
        return sep.join(self.shown) + more


class Check(Subscriber):
    """Base class: subscribe to facts (see :class:`~sim.history.Subscriber`), then give a
    :meth:`verdict`.

    ``phenomenon`` names what a failure of this check shows, so that a demo config can declare
    it as expected (``expect = ["lost_updates"]``). ``needs_completion`` marks checks that only
    make sense for a run that went to its end; they are skipped when the run was stopped.
    """

    name = "check"
    phenomenon: str | None = None
    needs_completion = False

    def __init__(self) -> None:
        self.problems = Problems()

    def verdict(self) -> Verdict:
        raise NotImplementedError

    def result(self, ok: str, problems: Problems | None = None) -> Verdict:
        """``pass`` with ``ok`` if no problem was found, else ``fail`` naming the problems."""
        problems = self.problems if problems is None else problems
        if not problems:
            return Verdict(self.name, "pass", ok, self.phenomenon)
        return Verdict(self.name, "fail", problems.detail(), self.phenomenon)

    def skip(self, why: str) -> Verdict:
        """Nothing to look at: ``skip``, never ``pass`` (a check that cannot fail must not
        claim success)."""
        return Verdict(self.name, "skip", why)


class SeqContiguous(Check):
    """Every actor's ``seq`` runs 0, 1, 2, ... with no gap: no line was lost on the way."""

    name = "seq contiguous"
    events = frozenset()

    def verdict(self) -> Verdict:
        h = self.history
        if not h.lines:
            return self.skip("no events")
        for line, due in h.gaps:
            self.problems.add(
                f"{line.actor}: seq {line.seq} at ts {line.ts:.6f} where {due} was due "
                f"({line.seq - due:+d})"
            )
        self.problems.count = h.gap_count
        return self.result(f"{len(h.next_seq)} actors, {h.lines} lines, no gaps")


class ActorsEnded(Check):
    """Every actor the engine started logged a clean end and exited with status 0.

    Once the engine has stopped the run (Ctrl-C, timeout, deadlock, a crash elsewhere), an actor
    that it terminated is not a failure of that actor; a crash always is, and so is a death that
    came before the stop (a kill from outside: the stop may be the engine's answer to it). An
    actor a declared fault was done to is not a failure either: that is what the config asked
    for, and the other checks say what followed from it.
    """

    name = "every actor ended cleanly"
    events = frozenset({"actor_end", "exit", "stopping", "fault"})

    def __init__(self, actors: Iterable[str]) -> None:
        super().__init__()
        self._actors = set(actors)
        self._ends: dict[str, Line] = {}
        # Exit code, and whether the engine had begun to stop the run when the exit came.
        self._exits: dict[str, tuple[int | None, bool]] = {}
        self._stopped = False
        self._faulted: dict[str, str] = {}

    def on_line(self, line: Line) -> None:
        kind = line.event
        if kind == "actor_end":
            self._ends[line.actor] = line
        elif line.actor == "engine":
            if kind == "exit":
                self._exits[str(line.get("target", ""))] = (line.get("code"), self._stopped)
            elif kind == "fault":
                target = line.get("target")
                if isinstance(target, str) and line.get("action") != "resume":
                    self._faulted.setdefault(target, str(line.get("action", "?")))
            else:
                self._stopped = True

    def verdict(self) -> Verdict:
        if not self._actors:
            return self.skip("no actors")
        stopped = faulted = 0
        for actor in sorted(self._actors):
            end = self._ends.get(actor)
            status = str(end.get("status", "?")) if end else "no end record"
            code, after_stop = self._exits.get(actor, (None, self._stopped))
            if status == "ok" and code == 0:
                continue
            if actor in self._faulted:
                faulted += 1
                continue
            # 143: SIGTERM handled, -15/-9: killed by the engine's SIGTERM/SIGKILL; None with
            # no end record: the run was stopped before this actor was started at all.
            if after_stop and status != "crashed" and code in (143, -15, -9, None):
                stopped += 1
                continue
            what = status
            if end is not None and end.get("error"):
                what += f" ({end['error']} at {end.get('where', '?')})"
            elif end is None and code is not None and code < 0:
                what = f"killed by {_signal_name(-code)} from outside the run"
            self.problems.add(f"{actor}: {what}, exit code {code}")
        ok = f"{len(self._actors)} actors"
        if stopped:
            ok += f", {stopped} of them stopped by the engine"
        if faulted:
            ok += f", {faulted} hit by a declared fault"
        return self.result(ok)


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class NoDeadlock(Check):
    """The engine never found every live actor blocked with nobody left to wake them."""

    name = "no deadlock"
    phenomenon = "deadlock"
    events = frozenset({"deadlock", "run_start"})

    def __init__(self) -> None:
        super().__init__()
        self._found: Line | None = None
        self._started = False

    def on_line(self, line: Line) -> None:
        if line.actor != "engine":
            return
        if line.event == "deadlock":
            self._found = line
            # Found now, not only at the end: a display shows it at this step.
            self.problems.add(str(line.get("explanation", "")))
        else:
            self._started = True

    def verdict(self) -> Verdict:
        if self._found is None:
            if not self._started:
                return self.skip("no run_start event from the engine")
            return Verdict(self.name, "pass", "never stalled", self.phenomenon)
        detail = f"at {self._found.ts:.3f} s: {self._found.get('explanation', '')}"
        return Verdict(self.name, "fail", detail, self.phenomenon)


def generic_checks(history: History, actors: Iterable[str]) -> list[Check]:
    """The checks every run gets, whatever its scenario: the line contract, the actors' ends,
    deadlocks, and each primitive's kind's own checks."""
    checks: list[Check] = [SeqContiguous(), ActorsEnded(actors), NoDeadlock()]
    for name, info in history.primitives.items():
        kind = history.kind(str(info.get("kind", "")))
        if kind is not None:
            checks.extend(kind.checks(name, info))
    return checks


def settle(
    check: Check,
    verdict: Verdict,
    *,
    expected: frozenset[str],
    stopped: bool,
    shown: frozenset[str] = frozenset(),
    reported: set[str] | None = None,
    cut_short: bool = False,
) -> Verdict:
    """A verdict in the light of the run: what the config expects, and whether it completed.

    ``shown``: the phenomena some check found. A declared phenomenon needs to show once (on
    one of five forks, say): the other checks for it then pass as they are. If it showed
    nowhere, the first of its checks says so (``reported`` collects those already said), or,
    in a run ``cut_short`` (Ctrl-C, a timeout, the step limit: it could have gone on), says
    that it had not appeared yet (a skip: it might have). A run stopped by a deadlock or a
    crash is at its end: what did not appear by then never will."""
    if stopped and check.needs_completion and verdict.status != "pass":
        return Verdict(verdict.name, "skip", f"run was stopped early; {verdict.detail}")
    phenomenon = verdict.phenomenon
    if phenomenon is None or phenomenon not in expected:
        return verdict
    if verdict.status == "fail":
        return Verdict(verdict.name, "expected", verdict.detail, phenomenon)
    if phenomenon in shown or verdict.status == "skip":
        return verdict
    if reported is not None:
        if phenomenon in reported:
            return verdict
        reported.add(phenomenon)
    if cut_short:
        return Verdict(verdict.name, "skip", f"run was stopped early, before {phenomenon} "
                       f"appeared ({verdict.detail})", phenomenon)  # fmt: skip
    return Verdict(
        verdict.name,
        "fail",
        f"expected {phenomenon}, but it did not appear ({verdict.detail})",
        phenomenon,
    )
