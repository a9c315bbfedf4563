"""A test scenario: each actor says which CPUs it may run on, at its start and after a sleep,
from its main thread and from a thread it starts."""

from __future__ import annotations

import os
import threading

import msgspec

from sim import Analysis, Ctx, Scenario, actors


class Params(msgspec.Struct, forbid_unknown_fields=True):
    actors: int = 3


def report(ctx: Ctx[Params]) -> None:
    ctx.log.info("cpus", where="start", cpus=sorted(os.sched_getaffinity(0)))
    ctx.sleep(1.0)
    seen: list[int] = []
    helper = threading.Thread(target=lambda: seen.extend(sorted(os.sched_getaffinity(0))))
    helper.start()
    helper.join()
    ctx.log.info("cpus", where="thread", cpus=seen)
    ctx.log.info("cpus", where="later", cpus=sorted(os.sched_getaffinity(0)))


scenario = Scenario(
    name="cpus",
    description="Actors report the CPUs they may run on",
    params=Params,
    primitives=lambda p: {},
    actors=lambda p: actors("cpus", p.actors, report),
    analysis=Analysis,
)
