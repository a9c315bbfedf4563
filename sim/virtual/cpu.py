"""One CPU for a virtual run.

A virtual run executes one task at a time: the engine grants a step, the chosen actor runs
it, the engine reads its request, grants the next. Nothing in it runs in parallel, so a
second CPU buys nothing, and it costs: every grant and every request wakes a process that
the kernel may have parked on the other CPU, and waking across CPUs is the expensive kind
(an inter-processor interrupt, the other CPU leaving idle, cold caches). Measured on the
2-core machine of docs/benchmarks.md §8: a semaphore handoff between two processes takes
31-43 µs across CPUs (each pinned to one) and 1.1 µs on one; the mutex scenario's step
101-121 µs spread over both CPUs against 45-50 µs with the run on one.

So a virtual run claims one CPU for its engine phase and, once every actor has started (the
start-up of hundreds of processes is work for every CPU there is), runs there: the engine's
thread and each actor pin themselves to it (the grant of an actor's start says which), and
whatever they start later inherits it. Afterwards the engine's thread gets back every CPU it
had. Two virtual runs at once (a sweep's pool, tests side by side) must not share a CPU while
another stays idle, so the claim is a name: an abstract Unix socket ``sim-cpu/<uid>/<n>``,
which the kernel frees when the last process holding it exits (no file is left behind). A run
takes the CPU it is on if that is free, else the next free one; with every CPU claimed it is
not pinned at all.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["claimed_cpu", "leave", "one_cpu", "pin"]

# Where the claims live: every run of this user on this machine claims from the same names
# (tests that check the claiming itself take names of their own, away from other tests' runs).
_NAMES = "sim-cpu"


@contextmanager
def claimed_cpu() -> Iterator[int | None]:
    """Claim a CPU for the duration, without moving to it (see :func:`pin`); yields it, or
    None where pinning is not possible (one CPU only, every CPU claimed by another run, no
    ``sched_setaffinity``). On leaving, the calling thread may run on every CPU it could."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is None or not hasattr(os, "sched_setaffinity"):
        yield None
        return
    allowed: set[int] = getaffinity(0)
    if len(allowed) < 2:
        yield None
        return
    claim = _claim(allowed)
    if claim is None:
        yield None
        return
    cpu, held = claim
    with held:
        try:
            yield cpu
        finally:
            # A CPU taken away meanwhile: keep what is left.
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, allowed)


def pin(cpu: int) -> bool:
    """Run the calling thread, and whatever it starts from now on, on ``cpu`` only."""
    try:
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        return False
    return True


def leave(cpu: int, allowed: set[int]) -> None:
    """Move every thread of this process off ``cpu``, to the others of ``allowed`` (what it
    had before it was pinned); none: stay. (The process's last thread to go tears it down.)"""
    others = allowed - {cpu}
    if not others:
        return
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(AttributeError, OSError):  # gone meanwhile, or a cpuset
            os.sched_setaffinity(int(tid), others)


@contextmanager
def one_cpu() -> Iterator[int | None]:
    """:func:`claimed_cpu` and :func:`pin` at once: the calling thread, and every process
    started from it, on one CPU for the duration."""
    with claimed_cpu() as cpu:
        yield cpu if cpu is not None and pin(cpu) else None


def _claim(allowed: set[int]) -> tuple[int, socket.socket] | None:
    """A CPU no other virtual run holds, the current one first, with the socket that holds
    it; None if every allowed CPU is held."""
    here = _current_cpu(allowed)
    for cpu in [here, *sorted(allowed - {here})]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(f"\0{_NAMES}/{os.getuid()}/{cpu}")
        except OSError:
            sock.close()
            continue
        return cpu, sock
    return None


def _current_cpu(allowed: set[int]) -> int:
    """The CPU this thread runs on now (the kernel put it there, so it was the better
    choice a moment ago), or the lowest allowed one."""
    try:
        with open(f"/proc/self/task/{_tid()}/stat", "rb") as f:
            stat = f.read()
        # Field 39 (``processor``); the command name (field 2) may hold spaces, so count
        # from the parenthesis that closes it.
        cpu = int(stat[stat.rindex(b")") + 2 :].split()[36])
    except (OSError, ValueError, IndexError):
        return min(allowed)
    return cpu if cpu in allowed else min(allowed)


def _tid() -> int:
    gettid = getattr(os, "gettid", None)
    if gettid is not None:
        return int(gettid())
    return os.getpid()  # pragma: no cover - Linux has gettid; elsewhere the process's stat
