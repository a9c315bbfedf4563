"""A test scenario whose lines reach the coordinator out of time order, by a set amount.

``holder`` takes the lock and holds it for ``hold`` minutes (its flusher sends the acquire,
``waiter`` queues for the lock), releases it, and stops itself (SIGSTOP) ``settle_s`` later,
before its flusher has sent the release: the flusher's wait for its next batch has begun, and
ends while the holder is stopped, so the release goes out the moment the holder continues.
``waiter`` takes the lock; its lines go out within one ``engine.flush_ms``. ``ticker``
continues the holder (SIGCONT) ``arrive_s`` after the release: it arrives after the acquire
that followed it. The run is correct: the lock never had two holders. Read in arrival order,
it had.
"""

from __future__ import annotations

import os
import signal
import time

import msgspec

from sim import Actor, Analysis, Ctx, Event, Lock, Scenario, Value
from tests.scenario_late import _state  # a process's state letter (T: stopped)


class Params(msgspec.Struct, forbid_unknown_fields=True):
    # Simulated minutes the holder holds the lock: more than engine.flush_ms.
    hold: float = 1.0
    # Wall seconds from the release to the holder's stop: less than engine.flush_ms.
    settle_s: float = 0.2
    # Wall seconds from the release to the holder's continuing.
    arrive_s: float = 0.6


def holder(ctx: Ctx[Params]) -> None:
    lock, ready = ctx.prim("lock", Lock), ctx.prim("ready", Event)
    ctx.prim("pid", Value).value = os.getpid()
    lock.acquire()
    ready.set()
    ctx.sleep(ctx.params.hold)
    lock.release()
    ctx.prim("released", Value).value = time.monotonic()
    time.sleep(ctx.params.settle_s)
    os.kill(os.getpid(), signal.SIGSTOP)
    ctx.log.info("resumed")


def waiter(ctx: Ctx[Params]) -> None:
    lock = ctx.prim("lock", Lock)
    ctx.prim("ready", Event).wait()
    lock.acquire()
    ctx.prim("took", Event).set()
    lock.release()


def ticker(ctx: Ctx[Params]) -> None:
    ctx.prim("took", Event).wait()
    pid = ctx.prim("pid", Value).value
    while _state(pid) != "T":
        time.sleep(0.001)
    released = ctx.prim("released", Value).value
    time.sleep(max(0.0, released + ctx.params.arrive_s - time.monotonic()))
    os.kill(pid, signal.SIGCONT)


scenario = Scenario(
    name="reorder",
    description="A released lock's release arrives after the next acquire; the run is correct",
    params=Params,
    primitives=lambda p: {
        "lock": Lock(),
        "ready": Event(),
        "took": Event(),
        "pid": Value("i", 0),
        "released": Value("d", 0.0),
    },
    actors=lambda p: [Actor("holder", holder), Actor("waiter", waiter), Actor("ticker", ticker)],
    analysis=Analysis,
)
