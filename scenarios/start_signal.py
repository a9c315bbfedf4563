"""A start signal: ``runners`` runners wait on an Event, a starter sets it after ``delay``.

Each runner walks to the start line (``arrive`` minutes), logs ``ready`` and waits on the
Event ``gun``. The starter waits ``delay`` minutes, logs ``fire`` and calls ``set()``: every
waiting runner wakes up, logs ``start`` and runs (``race`` minutes) to ``finish``. A runner
that arrives after the shot finds the flag already set and starts at once.

``patience``: a runner waits at most that many minutes per try (``wait(timeout)``). ``wait``
then returns False, and what the runner does with that is the point: ``on_timeout =
"wait_again"`` checks the return value and waits again; ``"start_anyway"`` ignores it and runs,
a false start.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from sim import (
    Actor,
    Analysis,
    Check,
    Ctx,
    Duration,
    Event,
    History,
    Line,
    Metric,
    Operation,
    RunConfig,
    Scenario,
    States,
    Verdict,
)
from sim import actors as numbered

GUN = "gun"
STARTER = "starter"


class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The race's parameters; durations in simulated minutes."""

    runners: Annotated[int, msgspec.Meta(ge=1, le=256)] = 8
    delay: Annotated[float, msgspec.Meta(ge=0)] = 5.0  # until the starter fires
    arrive: Duration = Duration(dist="uniform", mean=2.0, spread=1.0)  # walk to the line
    race: Duration = Duration(dist="exponential", mean=3.0)
    # Minutes a runner waits for the signal per try; none: as long as it takes.
    patience: Annotated[float, msgspec.Meta(gt=0)] | None = None
    on_timeout: Literal["wait_again", "start_anyway"] = "wait_again"


def starter(ctx: Ctx[Params]) -> None:
    """Wait ``delay`` minutes, then fire: set the Event."""
    ctx.sleep(ctx.params.delay)
    ctx.log.info("fire")
    ctx.prim(GUN, Event).set()


def runner(ctx: Ctx[Params]) -> None:
    """Walk to the line, wait for the signal, run."""
    p = ctx.params
    gun = ctx.prim(GUN, Event)
    walk, race = ctx.draw(p.arrive), ctx.draw(p.race)
    ctx.sleep(walk)
    ctx.log.info("ready")
    if p.patience is None:
        gun.wait()
    else:
        while not gun.wait(timeout=p.patience):
            if p.on_timeout == "start_anyway":
                break  # the bug: wait() said False, the flag is not set, and we run anyway
            ctx.log.info("still_waiting")
    ctx.log.info("start")
    ctx.sleep(race)
    ctx.log.info("finish", ran=race)


def _actors(p: Params) -> list[Actor]:
    return [Actor(STARTER, starter), *numbered("runner", p.runners, runner)]


class NoFalseStart(Check):
    """No runner logs ``start`` before the starter's ``set`` was invoked."""

    name = "nobody started before the signal"
    phenomenon = "false_start"
    events = frozenset({"start"})
    prims = frozenset({GUN})

    def __init__(self, runners: int) -> None:
        super().__init__()
        self._runners = runners
        self._fired: float | None = None
        self._starts = 0
        self._early: list[tuple[str, float]] = []

    def on_invoke(self, op: Operation) -> None:
        if op.name == "set" and self._fired is None:
            self._fired = op.start

    def on_line(self, line: Line) -> None:
        self._starts += 1
        if self._fired is None:
            self._early.append((line.actor, line.ts))

    def verdict(self) -> Verdict:
        if not self._starts:
            return Verdict(self.name, "skip", "nobody started", self.phenomenon)
        if not self._early:
            return Verdict(self.name, "pass", f"{self._starts} runners, all after the signal",
                           self.phenomenon)  # fmt: skip
        actor, ts = self._early[0]
        when = "no signal was ever given" if self._fired is None else (
            f"{(self._fired - ts) * 1000:.0f} ms before the signal"
        )  # fmt: skip
        detail = (
            f"false start: {len(self._early)} of {self._runners} runners started before the "
            f"signal (first {actor}, {when}): their wait timed out, returned False, and they "
            "ran anyway"
        )
        return Verdict(self.name, "fail", detail, self.phenomenon)


class EveryoneFinished(Check):
    """Every runner started and finished the race."""

    name = "every runner finished"
    needs_completion = True
    events = frozenset({"finish"})

    def __init__(self, runners: int) -> None:
        super().__init__()
        self._runners = runners
        self._finished: set[str] = set()

    def on_line(self, line: Line) -> None:
        self._finished.add(line.actor)

    def verdict(self) -> Verdict:
        missing = self._runners - len(self._finished)
        if missing:
            return Verdict(self.name, "fail", f"{missing} of {self._runners} never finished")
        return Verdict(self.name, "pass", f"{self._runners} runners finished")


class StartSignalAnalysis(Analysis[Params]):
    """Wake-up latency after the signal, in wall milliseconds, from the ops on ``gun``."""

    prims = frozenset({GUN})
    events = frozenset({"start"})

    def __init__(self, config: RunConfig[Params], history: History) -> None:
        super().__init__(config, history)
        p = self.params
        self._fired: float | None = None  # set invoke
        self._fired_at: tuple[float, int] | None = None
        self._latencies: list[float] = []
        self._late = 0
        self._timeouts = 0
        self._false_starts = 0
        self._checks: list[Check] = [NoFalseStart(p.runners), EveryoneFinished(p.runners)]

    def on_line(self, line: Line) -> None:
        if self._fired is None:
            self._false_starts += 1

    def on_invoke(self, op: Operation) -> None:
        if op.name == "set" and self._fired is None:
            self._fired, self._fired_at = op.start, op.began

    def on_op(self, op: Operation) -> None:
        done = op.done
        if op.name != "wait" or done is None:
            return
        if done.phase == "timeout":
            self._timeouts += 1
        elif done.phase == "ok":
            if self._fired is None or self._fired_at is None or op.began > self._fired_at:
                self._late += 1  # arrived after the shot: the flag was already set
            else:
                self._latencies.append((done.ts - self._fired) * 1000)

    def metrics(self) -> dict[str, Any]:
        lat = self._latencies
        return {
            "runners": self.params.runners,
            "woken": len(lat),
            "late": self._late,
            "wait_timeouts": self._timeouts,
            "false_starts": self._false_starts,
            "wake_latency_mean": sum(lat) / len(lat) if lat else None,
            "wake_latency_min": min(lat) if lat else None,
            "wake_latency_max": max(lat) if lat else None,
            "wake_spread": (max(lat) - min(lat)) if lat else None,
        }

    def checks(self) -> list[Check]:
        return list(self._checks)


scenario = Scenario(
    name="start_signal",
    description="Runners wait on an Event until a starter sets it: nobody starts before set()",
    params=Params,
    primitives=lambda p: {GUN: Event()},
    actors=_actors,
    analysis=StartSignalAnalysis,
    states=States(
        on={"ready": "ready", "start": "racing", "finish": "finished", "fire": "fired"},
        start={"runner": "walking"},
        tones={
            "ready": "asking",
            "racing": "using",
            "fired": "using",
            "finished": "idle",
            "walking": "idle",
        },
    ),
    metrics=(
        Metric("runners", "runners"),
        Metric("woken", "waiting when the signal came"),
        Metric("late", "arrived after the signal"),
        Metric("wait_timeouts", "waits that timed out"),
        Metric("false_starts", "false starts"),
        Metric("wake_latency_min", "wake-up after set(), first", "ms"),
        Metric("wake_latency_mean", "wake-up after set(), mean", "ms"),
        Metric("wake_latency_max", "wake-up after set(), last", "ms"),
        Metric("wake_spread", "wake-up spread (last - first)", "ms"),
    ),
    phenomena={
        "false_start": "a runner's wait(timeout) returned False and it started anyway, "
        "before the signal",
    },
)
