"""A test scenario: one actor crashes with an exception, one finishes normally (or, with
``ticks``, keeps logging every so often until it is stopped or done)."""

from __future__ import annotations

import msgspec

from sim import Actor, Analysis, Ctx, Scenario


class Params(msgspec.Struct, forbid_unknown_fields=True):
    steady_minutes: float = 1.0
    crash_after: float = 0.0  # minutes the crasher sleeps first
    ticks: int = 0  # the steady actor's sleep, in this many parts, each logged


def crasher(ctx: Ctx[Params]) -> None:
    if ctx.params.crash_after:
        ctx.sleep(ctx.params.crash_after)
    ctx.log.info("about_to_fail")
    print(1 / 0)


def steady(ctx: Ctx[Params]) -> None:
    for tick in range(ctx.params.ticks):
        ctx.sleep(ctx.params.steady_minutes / ctx.params.ticks)
        ctx.log.info("tick", n=tick)
    if not ctx.params.ticks:
        ctx.sleep(ctx.params.steady_minutes)
    ctx.log.info("fine")


scenario = Scenario(
    name="crash",
    description="One actor raises, one does not",
    params=Params,
    primitives=lambda p: {},
    actors=lambda p: [Actor("crasher-000", crasher), Actor("steady-000", steady)],
    analysis=Analysis,
)
