"""A test scenario: actors that log as fast as they can until they are stopped."""

from __future__ import annotations

import msgspec

from sim import Analysis, Ctx, Scenario, actors


class Params(msgspec.Struct, forbid_unknown_fields=True):
    actors: int = 4


def busy(ctx: Ctx[Params]) -> None:
    n = 0
    while True:
        ctx.log.info("tick", n=n)
        n += 1


scenario = Scenario(
    name="busy",
    description="Actors log without pause until the engine stops them",
    params=Params,
    primitives=lambda p: {},
    actors=lambda p: actors("busy", p.actors, busy),
    analysis=Analysis,
)
