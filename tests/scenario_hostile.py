"""A test scenario that hands its run's coordinator to a hostile client outside the run.

``insider`` reads what the engine handed it at start (the coordinator's address and the run's
secret, from its caller's frame: ``sim.runtime.worker.main``) and writes them to
``params.path``; then it waits until ``params.path`` + ``.go`` exists, so that the test can
connect to the live coordinator with the right secret while the run goes on. ``early`` ends at
once: its name has been used, and may not connect again.
"""

from __future__ import annotations

import json
import os
import sys
import time

import msgspec

from sim import Actor, Analysis, Ctx, Event, Scenario


class Params(msgspec.Struct, forbid_unknown_fields=True):
    path: str = ""
    wait_s: float = 30.0


def insider(ctx: Ctx[Params]) -> None:
    boot = sys._getframe(1).f_locals["boot"]
    address = boot.address if isinstance(boot.address, str) else list(boot.address)
    tmp = ctx.params.path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"address": address, "secret": boot.secret}, fh)
    os.replace(tmp, ctx.params.path)
    ctx.log.info("leaked")
    until = time.monotonic() + ctx.params.wait_s
    while not os.path.exists(ctx.params.path + ".go") and time.monotonic() < until:
        time.sleep(0.01)
    ctx.log.info("released")


def early(ctx: Ctx[Params]) -> None:
    ctx.log.info("hello")


scenario = Scenario(
    name="hostile",
    description="An actor leaks its run's secret to a client outside the run",
    params=Params,
    primitives=lambda p: {"unused": Event()},
    actors=lambda p: [Actor("insider", insider), Actor("early", early)],
    analysis=Analysis,
)
