"""A test scenario: each actor reports how its process was set up when its role began (stdin,
signal dispositions and masks, its threads' masks, its name, structlog's configuration, the
heavy modules it holds)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import msgspec
import structlog

from sim import Analysis, Ctx, Scenario, actors


class Params(msgspec.Struct, forbid_unknown_fields=True):
    actors: int = 3


def _blocked(status: str) -> list[int]:
    """The signals blocked in a /proc/.../status text (its SigBlk mask)."""
    (line,) = [x for x in status.splitlines() if x.startswith("SigBlk:")]
    mask = int(line.split()[1], 16)
    return [n for n in range(1, 65) if mask & (1 << (n - 1))]


def _own_threads() -> list[Path]:
    """The threads this actor started (the flusher among them): those named after it. (Under
    spawn, threads that imports start before the actor is named, such as a BLAS library's,
    keep the interpreter's name.)"""
    name = Path("/proc/self/comm").read_text(encoding="utf-8")
    return [
        task
        for task in sorted(Path("/proc/self/task").iterdir())
        if int(task.name) != os.getpid() and (task / "comm").read_text(encoding="utf-8") == name
    ]


def probe(ctx: Ctx[Params]) -> None:
    others = [_blocked((task / "status").read_text(encoding="ascii")) for task in _own_threads()]
    ctx.log.info(
        "setup",
        stdin=os.path.realpath(f"/proc/self/fd/{sys.stdin.fileno()}"),
        stdin_read=sys.stdin.read(),
        sigint_ignored=signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
        sigterm_handled=callable(signal.getsignal(signal.SIGTERM)),
        sigusr1_handled=callable(signal.getsignal(signal.SIGUSR1)),
        main_blocked=sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        threads_blocked=others,
        comm=Path("/proc/self/comm").read_text(encoding="utf-8").strip(),
        # What the engine imports for its analysis only (numpy: ~10 MB) must not be in an
        # actor: under fork every page of it is mapped at each fork and unmapped at each exit.
        heavy=sorted(m for m in ("numpy", "pandas", "matplotlib") if m in sys.modules),
    )
    # Scenario code may log through structlog's own entry point too.
    structlog.get_logger().info("via_structlog", n=1)


scenario = Scenario(
    name="startup",
    description="Actors that report their process's setup",
    params=Params,
    primitives=lambda p: {},
    actors=lambda p: actors("probe", p.actors, probe),
    analysis=Analysis,
)
