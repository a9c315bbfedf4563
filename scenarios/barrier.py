"""A phased computation: ``workers`` processes do ``phases`` phases of random work each, and a
``Barrier(workers)`` between phases holds everyone until the slowest has finished.

Each worker logs ``phase_start`` and ``phase_end`` around its work and then waits at the
barrier; ``wait`` returns each worker its arrival index, and the one with index 0 logs
``phase_done`` for the phase (a serial step done by exactly one process). With
``sync = "none"`` there is no barrier: fast workers run ahead into the next phase while slow
ones are still in the last, which the log shows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

from sim import Actor, Analysis, Check, Ctx, Duration, Metric, RunConfig, Scenario
from sim import actors as numbered
from sim.checks import Verdict
from sim.primitives import Barrier, PrimSpec
from sim.stats import describe

_SHOW = 3


class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Durations in simulated minutes."""

    workers: Annotated[int, msgspec.Meta(ge=2)] = 4
    phases: Annotated[int, msgspec.Meta(ge=1)] = 5
    sync: Literal["barrier", "none"] = "barrier"
    work: Duration = Duration(dist="exponential", mean=10.0)


def worker(ctx: Ctx[Params]) -> None:
    """Work through the phases, waiting at the barrier after each."""
    p = ctx.params
    barrier = ctx.prim("barrier") if p.sync == "barrier" else None
    for phase in range(p.phases):
        ctx.log.info("phase_start", k=phase)
        ctx.sleep(ctx.draw(p.work))
        ctx.log.info("phase_end", k=phase)
        if barrier is not None and barrier.wait() == 0:
            # Everyone has finished this phase; one of them, whichever got index 0, says so.
            ctx.log.info("phase_done", k=phase)


def _primitives(p: Params) -> dict[str, PrimSpec]:
    return {"barrier": Barrier(p.workers)} if p.sync == "barrier" else {}


class Lockstep(Check):
    """No worker starts phase k+1 before every worker has finished phase k."""

    name = "no phase starts before all finished the one before"
    phenomenon = "phases_overlap"
    events = frozenset({"phase_start", "phase_end"})

    def __init__(self, names: list[str]) -> None:
        self._names = names
        self._ended: dict[int, set[str]] = {}
        self._starts = 0
        self._problems: list[str] = []
        self._count = 0

    def feed(self, event: Mapping[str, Any]) -> None:
        phase, actor = event["k"], event["actor"]
        if event["event"] == "phase_end":
            self._ended.setdefault(phase, set()).add(actor)
            return
        self._starts += 1
        if phase == 0:
            return
        behind = sorted(set(self._names) - self._ended.get(phase - 1, set()))
        if behind:
            self._count += 1
            if len(self._problems) < _SHOW:
                self._problems.append(
                    f"{actor} started phase {phase} at {event['ts']:.4f} s while "
                    f"{', '.join(behind)} {'was' if len(behind) == 1 else 'were'} still in "
                    f"phase {phase - 1}"
                )

    def verdict(self) -> Verdict:
        if not self._starts:
            return Verdict(self.name, "skip", "no phase started")
        if not self._count:
            ok = f"{self._starts} phase starts, each after all had finished the phase before"
            return Verdict(self.name, "pass", ok, self.phenomenon)
        detail = (
            f"{self._count} of {self._starts} phase starts came before everybody had finished "
            "the phase before: without a barrier the fast workers run ahead. E.g. "
            + "; ".join(self._problems)
        )
        return Verdict(self.name, "fail", detail, self.phenomenon)


class EveryPhaseDone(Check):
    """Every worker finished every phase."""

    name = "every worker finished every phase"
    needs_completion = True
    events = frozenset({"phase_end"})

    def __init__(self, names: list[str], phases: int) -> None:
        self._phases = phases
        self._done: Counter[str] = Counter(dict.fromkeys(names, 0))

    def feed(self, event: Mapping[str, Any]) -> None:
        self._done[event["actor"]] += 1

    def verdict(self) -> Verdict:
        if not self._done:
            return Verdict(self.name, "skip", "no workers")
        short = [f"{a}: {n} of {self._phases}" for a, n in sorted(self._done.items())
                 if n != self._phases]  # fmt: skip
        return self._result(short[:_SHOW], len(short), f"{sum(self._done.values())} phases")


class BarrierAnalysis(Analysis):
    """Work time and time spent waiting at the barrier, per worker and phase."""

    def __init__(self, config: RunConfig) -> None:
        p: Params = config.params
        self._per_minute = config.clock.speedup / 60.0
        self._started: dict[str, float] = {}
        self._ended: dict[str, float] = {}
        self._work = 0.0
        self._idle: list[float] = []
        self._phases_done = 0
        self._last = 0.0
        names = [a.name for a in _workers(p)]
        self._checks: list[Check] = [Lockstep(names), EveryPhaseDone(names, p.phases)]

    def feed(self, event: Mapping[str, Any]) -> None:
        kind, actor, ts = event["event"], event["actor"], event["ts"]
        if kind == "phase_start":
            self._started[actor] = ts
        elif kind == "phase_end":
            self._work += ts - self._started.pop(actor, ts)
            self._ended[actor] = ts
            self._last = max(self._last, ts)
        elif kind == "phase_done":
            self._phases_done += 1
        elif kind == "op" and event.get("op") == "wait" and event.get("phase") == "ok":
            # Idle: from finishing the phase's work to leaving the barrier.
            self._idle.append((ts - self._ended.pop(actor, ts)) * self._per_minute)

    def metrics(self) -> dict[str, Any]:
        idle = sum(self._idle) / self._per_minute
        return {
            "phases_done": self._phases_done if self._idle else None,
            **describe(self._idle, "barrier_wait"),
            "efficiency": self._work / (self._work + idle) if self._work else None,
            "sim_minutes": self._last * self._per_minute,
        }

    def checks(self) -> list[Check]:
        return list(self._checks)


def _workers(p: Params) -> list[Actor]:
    return numbered("worker", p.workers, worker)


scenario = Scenario(
    name="barrier",
    description="Barrier: workers compute in phases; nobody starts a phase before all finished",
    params=Params,
    primitives=_primitives,
    actors=_workers,
    analysis=BarrierAnalysis,
    metrics=(
        Metric("phases_done", "phases completed by all"),
        Metric("barrier_wait_mean", "wait at the barrier, mean", "sim min"),
        Metric("barrier_wait_p95", "wait at the barrier, p95", "sim min"),
        Metric("barrier_wait_max", "wait at the barrier, max", "sim min"),
        Metric("efficiency", "time spent working", "%"),
        Metric("sim_minutes", "makespan", "sim min"),
    ),
    phenomena={
        "phases_overlap": "without a barrier, a worker starts the next phase while others "
        "are still in the last one"
    },
)
