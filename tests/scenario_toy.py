"""A test scenario on the tests' own primitive kind (tests/toykind.py): three actors pass a
token around, each taking it ``rounds`` times."""

from __future__ import annotations

import msgspec

from sim import Analysis, Ctx, Scenario
from sim import actors as numbered

from .toykind import Token


class Params(msgspec.Struct, forbid_unknown_fields=True):
    rounds: int = 3
    # Stands for a peer outside the run, which no scheduler controls.
    outside: bool = False


def passer(ctx: Ctx[Params]) -> None:
    token = ctx.prim("token", Token)
    for _ in range(ctx.params.rounds):
        token.take()
        ctx.sleep(0.5)
        token.give()
        ctx.sleep(0.2)


scenario = Scenario(
    name="toy",
    description="Actors pass a token of a kind the tests define",
    params=Params,
    primitives=lambda p: {"token": Token()},
    actors=lambda p: numbered("passer", 3, passer),
    analysis=Analysis,
    uncontrolled=lambda p: "params.outside: a peer outside the run" if p.outside else None,
)
