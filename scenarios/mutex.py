"""Mutual exclusion: ``workers`` processes take turns in a critical section guarded by a lock.

``lock = "lock"``: a ``Lock`` admits one process at a time. ``lock = "rlock"``: an ``RLock``,
which its owner may acquire again; the critical section is a recursive function that takes the
lock once per level (``depth`` levels). ``lock = "none"``: no lock at all, and the log shows
processes inside the critical section together: a race. A plain ``Lock`` with ``depth`` above 1
blocks its own owner at the second acquire, and the engine reports the deadlock.

Each process logs ``enter`` right after it has the lock and ``leave`` right before it lets go,
so the log's intervals between them are exactly the times it was inside.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any, Literal

import msgspec

from sim import (
    Actor,
    Analysis,
    Check,
    Ctx,
    Duration,
    History,
    Line,
    Lock,
    Metric,
    PrimSpec,
    RLock,
    RunConfig,
    Scenario,
    States,
    Verdict,
    describe,
)
from sim import actors as numbered


class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Durations in simulated minutes."""

    workers: Annotated[int, msgspec.Meta(ge=1)] = 4
    rounds: Annotated[int, msgspec.Meta(ge=1)] = 5
    lock: Literal["none", "lock", "rlock"] = "lock"
    # Levels of the recursive critical section: each level acquires the lock again.
    depth: Annotated[int, msgspec.Meta(ge=1, le=20)] = 1
    think: Duration = Duration(dist="exponential", mean=4.0)
    # Time spent inside at each level, before going one level deeper.
    work: Duration = Duration(dist="uniform", mean=3.0)


def worker(ctx: Ctx[Params]) -> None:
    """Think, then pass through the critical section; ``rounds`` times."""
    p = ctx.params
    guard = None if p.lock == "none" else ctx.prim("guard", RLock if p.lock == "rlock" else Lock)
    for round_ in range(p.rounds):
        ctx.sleep(ctx.draw(p.think))
        ctx.log.info("want", round=round_)
        _section(ctx, guard, round_, 0)


def _section(ctx: Ctx[Params], guard: Any, round_: int, level: int) -> None:
    # Recursive, like code that calls a helper which takes the same lock: with an RLock the
    # owner gets it again; with a Lock it waits for itself forever.
    if guard is not None:
        guard.acquire()
    ctx.log.info("enter", round=round_, level=level)
    ctx.sleep(ctx.draw(ctx.params.work))
    if level + 1 < ctx.params.depth:
        _section(ctx, guard, round_, level + 1)
    ctx.log.info("leave", round=round_, level=level)
    if guard is not None:
        guard.release()


def _primitives(p: Params) -> dict[str, PrimSpec[Any]]:
    if p.lock == "none":
        return {}
    return {"guard": RLock() if p.lock == "rlock" else Lock()}


class MutualExclusion(Check):
    """At most one process inside the critical section at a time, from ``enter``/``leave``."""

    name = "one process in the critical section at a time"
    phenomenon = "race"
    events = frozenset({"enter", "leave"})

    def __init__(self) -> None:
        super().__init__()
        self._inside: dict[str, float] = {}  # actor -> when it entered (outermost level)
        self._entries = 0
        self._most = 0

    def on_line(self, line: Line) -> None:
        if line.get("level") != 0:
            return
        actor, ts = line.actor, line.ts
        if line.event == "leave":
            self._inside.pop(actor, None)
            return
        self._entries += 1
        if self._inside:
            others = ", ".join(f"{a} (since {t:.4f} s)" for a, t in self._inside.items())
            verb = "was" if len(self._inside) == 1 else "were"
            self.problems.add(f"{actor} entered at {ts:.4f} s while {others} {verb} inside")
        self._inside[actor] = ts
        self._most = max(self._most, len(self._inside))

    def verdict(self) -> Verdict:
        if not self._entries:
            return self.skip("nobody entered the critical section")
        races = self.problems.count
        if not races:
            return Verdict(self.name, "pass", f"{self._entries} entries, one at a time")
        share = 100 * races / self._entries
        detail = (
            f"{races} of {self._entries} entries ({share:.0f} %) found another process "
            f"already inside the critical section, up to {self._most} at once: nothing kept "
            f"them out. E.g. " + "; ".join(self.problems.shown)
        )
        return Verdict(self.name, "fail", detail, self.phenomenon)


class EveryRoundDone(Check):
    """Every worker went through the critical section ``rounds`` times, every level left."""

    name = "every worker passed every round"
    needs_completion = True
    events = frozenset({"enter", "leave"})

    def __init__(self, names: list[str], rounds: int, depth: int) -> None:
        super().__init__()
        self._expected = rounds * depth
        self._enters: Counter[str] = Counter(dict.fromkeys(names, 0))
        self._exits: Counter[str] = Counter(dict.fromkeys(names, 0))

    def on_line(self, line: Line) -> None:
        (self._enters if line.event == "enter" else self._exits)[line.actor] += 1

    def verdict(self) -> Verdict:
        if not self._enters:
            return self.skip("no workers")
        for a, n in sorted(self._enters.items()):
            if n != self._expected or self._exits[a] != self._expected:
                self.problems.add(f"{a}: entered {n}, left {self._exits[a]} of {self._expected}")
        return self.result(f"{sum(self._enters.values())} entries, each left again")


class MutexAnalysis(Analysis[Params]):
    """Waits for the lock and the crowd inside, from the domain events."""

    events = frozenset({"want", "enter", "leave"})

    def __init__(self, config: RunConfig[Params], history: History) -> None:
        super().__init__(config, history)
        p = self.params
        self._locked = p.lock != "none"
        self._wanted: dict[str, float] = {}
        self._waits: list[float] = []
        self._inside: set[str] = set()
        self._most = 0
        self._crowded = 0
        self._deepest = 0
        self._checks: list[Check] = [
            MutualExclusion(),
            EveryRoundDone([a.name for a in _workers(p)], p.rounds, p.depth),
        ]

    def on_line(self, line: Line) -> None:
        kind, actor, ts = line.event, line.actor, line.ts
        if kind == "want":
            self._wanted[actor] = ts
            return
        level = line.get("level")
        if kind == "enter":
            self._deepest = max(self._deepest, level + 1)
            if level != 0:
                return
            self._waits.append(self.minutes(ts - self._wanted.pop(actor, ts)))
            self._crowded += bool(self._inside)
            self._inside.add(actor)
            self._most = max(self._most, len(self._inside))
        elif level == 0:
            self._inside.discard(actor)

    def metrics(self) -> dict[str, Any]:
        return {
            "entries": len(self._waits),  # one wait per entry at level 0
            "crowded_entries": self._crowded,
            "inside_max": self._most,
            "depth_max": self._deepest,
            # Without a lock nobody waits for one: shown as "-" rather than as 0.
            **describe(self._waits if self._locked else [], "wait"),
        }

    def checks(self) -> list[Check]:
        return list(self._checks)


def _nested(line: Line) -> str | None:
    # Leaving an inner level of a nested critical section leaves the actor inside the outer.
    level = line.get("level") if line.event == "leave" else None
    return "inside" if isinstance(level, int) and level > 0 else None


def _workers(p: Params) -> list[Actor]:
    return numbered("worker", p.workers, worker)


scenario = Scenario(
    name="mutex",
    description="Lock and RLock: mutual exclusion in a critical section; without a lock, a race",
    params=Params,
    primitives=_primitives,
    actors=_workers,
    analysis=MutexAnalysis,
    states=States(
        on={"want": "wanting", "enter": "inside", "leave": "outside"},
        start={"worker": "outside"},
        tones={"wanting": "asking", "inside": "using", "outside": "idle"},
        when=_nested,
    ),
    metrics=(
        Metric("entries", "entries into the critical section"),
        Metric("crowded_entries", "entries while another was inside"),
        Metric("inside_max", "inside at once, max", "processes"),
        Metric("depth_max", "nesting depth, max", "levels"),
        *Metric.stats("wait", "wait for the lock", "sim min"),
    ),
    phenomena={"race": "two or more processes inside the critical section at the same time"},
)
