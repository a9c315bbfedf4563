"""A test scenario: one actor crashes with an exception, one finishes normally."""

from __future__ import annotations

import msgspec

from sim import Actor, Analysis, Ctx, Scenario


class Params(msgspec.Struct, forbid_unknown_fields=True):
    steady_minutes: float = 1.0


def crasher(ctx: Ctx[Params]) -> None:
    ctx.log.info("about_to_fail")
    print(1 / 0)


def steady(ctx: Ctx[Params]) -> None:
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
