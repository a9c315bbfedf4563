"""A test scenario whose log reaches the coordinator out of order, by seconds, losing nothing.

``holder`` takes the lock, lets ``waiter`` queue for it, releases it and at once stops itself
(SIGSTOP) before its flusher has sent the release: those lines sit in a stopped process while
``waiter`` takes the lock and ``ticker`` keeps logging. ``ticker`` continues ``holder``
(SIGCONT) ``late_s`` wall seconds later, and the release reaches the coordinator that late,
after lines that happened after it. The run itself is correct: the lock never had two holders.
"""

from __future__ import annotations

import os
import signal
import time

import msgspec

from sim import Actor, Analysis, Ctx, Event, Lock, Scenario, Value


class Params(msgspec.Struct, forbid_unknown_fields=True):
    late_s: float = 2.5
    burst: int = 400


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "?"


def holder(ctx: Ctx[Params]) -> None:
    lock, ready = ctx.prim("lock", Lock), ctx.prim("ready", Event)
    ctx.prim("pid", Value).value = os.getpid()
    lock.acquire()
    ready.set()
    ctx.sleep(0.5)  # the waiter queues for the lock meanwhile
    lock.release()
    # Stopped before the flusher's next send (engine.flush_ms after the release line).
    os.kill(os.getpid(), signal.SIGSTOP)
    ctx.log.info("resumed")


def waiter(ctx: Ctx[Params]) -> None:
    lock = ctx.prim("lock", Lock)
    ctx.prim("ready", Event).wait()
    lock.acquire()
    lock.release()


def ticker(ctx: Ctx[Params]) -> None:
    ctx.prim("ready", Event).wait()
    pid = ctx.prim("pid", Value).value
    n = 0
    while _state(pid) != "T":
        ctx.log.info("tick", n=n)
        n += 1
        time.sleep(0.02)
    # Lines keep coming while the holder is stopped, many of them: the reader reads a file in
    # chunks of thousands of lines, and the late lines must come chunks after their time.
    until = time.monotonic() + ctx.params.late_s
    while time.monotonic() < until:
        for _ in range(ctx.params.burst):
            ctx.log.info("tick", n=n)
            n += 1
        time.sleep(0.02)
    os.kill(pid, signal.SIGCONT)


scenario = Scenario(
    name="late",
    description="A stopped actor's lines arrive seconds late; the run is correct",
    params=Params,
    primitives=lambda p: {"lock": Lock(), "ready": Event(), "pid": Value("i", 0)},
    actors=lambda p: [Actor("holder", holder), Actor("waiter", waiter), Actor("ticker", ticker)],
    analysis=Analysis,
)
