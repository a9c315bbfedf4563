"""A test scenario: actors that log as fast as they can until they are stopped."""

from __future__ import annotations

import msgspec

from sim import Actor, Analysis, Ctx, Scenario


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
    actors=lambda p: [Actor(f"busy-{i:03d}", busy) for i in range(p.actors)],
    analysis=Analysis,
)
