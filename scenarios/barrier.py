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
from typing import Annotated, Any, Literal

import msgspec

from sim import (
    Actor,
    Analysis,
    Barrier,
    Check,
    Ctx,
    Duration,
    History,
    Line,
    Metric,
    Operation,
    PrimSpec,
    RunConfig,
    Scenario,
    States,
    Verdict,
    describe,
)
from sim import actors as numbered


class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Durations in simulated minutes."""

    workers: Annotated[int, msgspec.Meta(ge=2)] = 4
    phases: Annotated[int, msgspec.Meta(ge=1)] = 5
    sync: Literal["barrier", "none"] = "barrier"
    work: Duration = Duration(dist="exponential", mean=10.0)


def worker(ctx: Ctx[Params]) -> None:
    """Work through the phases, waiting at the barrier after each."""
    p = ctx.params
    barrier = ctx.prim("barrier", Barrier) if p.sync == "barrier" else None
    for phase in range(p.phases):
        ctx.log.info("phase_start", k=phase)
        ctx.sleep(ctx.draw(p.work))
        ctx.log.info("phase_end", k=phase)
        if barrier is not None and barrier.wait() == 0:
            # Everyone has finished this phase; one of them, whichever got index 0, says so.
            ctx.log.info("phase_done", k=phase)


def _primitives(p: Params) -> dict[str, PrimSpec[Any]]:
    return {"barrier": Barrier(p.workers)} if p.sync == "barrier" else {}


class Lockstep(Check):
    """No worker starts phase k+1 before every worker has finished phase k."""

    name = "no phase starts before all finished the one before"
    phenomenon = "phases_overlap"
    events = frozenset({"phase_start", "phase_end"})

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self._names = names
        self._ended: dict[int, set[str]] = {}
        self._starts = 0

    def on_line(self, line: Line) -> None:
        phase, actor = line["k"], line.actor
        if line.event == "phase_end":
            self._ended.setdefault(phase, set()).add(actor)
            return
        self._starts += 1
        if phase == 0:
            return
        behind = sorted(set(self._names) - self._ended.get(phase - 1, set()))
        if behind:
            self.problems.add(
                f"{actor} started phase {phase} at {line.ts:.4f} s while {', '.join(behind)} "
                f"{'was' if len(behind) == 1 else 'were'} still in phase {phase - 1}"
            )

    def verdict(self) -> Verdict:
        if not self._starts:
            return self.skip("no phase started")
        if not self.problems:
            ok = f"{self._starts} phase starts, each after all had finished the phase before"
            return Verdict(self.name, "pass", ok, self.phenomenon)
        detail = (
            f"{self.problems.count} of {self._starts} phase starts came before everybody had "
            "finished the phase before: without a barrier the fast workers run ahead. E.g. "
            + "; ".join(self.problems.shown)
        )
        return Verdict(self.name, "fail", detail, self.phenomenon)


class EveryPhaseDone(Check):
    """Every worker finished every phase."""

    name = "every worker finished every phase"
    needs_completion = True
    events = frozenset({"phase_end"})

    def __init__(self, names: list[str], phases: int) -> None:
        super().__init__()
        self._phases = phases
        self._done: Counter[str] = Counter(dict.fromkeys(names, 0))

    def on_line(self, line: Line) -> None:
        self._done[line.actor] += 1

    def verdict(self) -> Verdict:
        if not self._done:
            return self.skip("no workers")
        for a, n in sorted(self._done.items()):
            if n != self._phases:
                self.problems.add(f"{a}: {n} of {self._phases}")
        return self.result(f"{sum(self._done.values())} phases")


class BarrierAnalysis(Analysis[Params]):
    """Work time and time spent waiting at the barrier, per worker and phase."""

    prims = frozenset({"barrier"})
    events = frozenset({"phase_start", "phase_end", "phase_done"})

    def __init__(self, config: RunConfig[Params], history: History) -> None:
        super().__init__(config, history)
        p = self.params
        self._started: dict[str, float] = {}
        self._ended: dict[str, float] = {}
        self._work = 0.0
        self._idle: list[float] = []
        self._phases_done = 0
        self._last = 0.0
        names = [a.name for a in _workers(p)]
        self._checks: list[Check] = [Lockstep(names), EveryPhaseDone(names, p.phases)]

    def on_line(self, line: Line) -> None:
        kind, actor, ts = line.event, line.actor, line.ts
        if kind == "phase_start":
            self._started[actor] = ts
        elif kind == "phase_end":
            self._work += ts - self._started.pop(actor, ts)
            self._ended[actor] = ts
            self._last = max(self._last, ts)
        else:
            self._phases_done += 1

    def on_op(self, op: Operation) -> None:
        done = op.done
        if op.name == "wait" and done is not None and done.phase == "ok":
            # Idle: from finishing the phase's work to leaving the barrier.
            self._idle.append(self.minutes(done.ts - self._ended.pop(op.actor, done.ts)))

    def metrics(self) -> dict[str, Any]:
        idle = sum(self._idle) / self.minutes(1.0)
        return {
            "phases_done": self._phases_done if self._idle else None,
            **describe(self._idle, "barrier_wait"),
            "efficiency": self._work / (self._work + idle) if self._work else None,
            "sim_minutes": self.minutes(self._last),
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
    states=States(
        on={"phase_start": "working", "phase_end": "done with phase"},
        start={"worker": "working"},
        tones={"working": "using", "done with phase": "asking"},
    ),
    metrics=(
        Metric("phases_done", "phases completed by all"),
        *Metric.stats("barrier_wait", "wait at the barrier", "sim min"),
        Metric("efficiency", "time spent working", "%"),
        Metric("sim_minutes", "makespan", "sim min"),
    ),
    phenomena={
        "phases_overlap": "without a barrier, a worker starts the next phase while others "
        "are still in the last one"
    },
)
