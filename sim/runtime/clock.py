"""The run's clock: one time base for every process, scaled to simulated minutes.

In wall mode it is ``time.monotonic_ns()`` (one clock for every process on the host) and a
sleep really sleeps. In virtual mode (``clock.mode = "virtual"``) the time is the scheduler's:
a sleep is a scheduling point, and the time jumps when no task can run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sim.virtual.gate import Gate

__all__ = ["Clock"]


@dataclass(frozen=True)
class Clock:
    """Maps simulated minutes to the log's seconds.

    ``t0_ns`` is the run's start on ``time.monotonic_ns()``. ``speedup`` is simulated time
    per wall time: at 600, one simulated minute lasts 0.1 s. ``gate`` is the actor's side of
    the virtual clock, in a virtual run.
    """

    speedup: float
    t0_ns: int
    gate: Gate | None = None

    def seconds(self, minutes: float) -> float:
        """Seconds of the log's ``ts`` that ``minutes`` simulated minutes last."""
        return minutes * 60.0 / self.speedup

    def minutes(self, seconds: float) -> float:
        """Simulated minutes that ``seconds`` of ``ts`` stand for."""
        return seconds * self.speedup / 60.0

    def elapsed(self) -> float:
        """Seconds since the run started (the ``ts`` of an event)."""
        if self.gate is not None:
            return self.gate.now
        return (time.monotonic_ns() - self.t0_ns) / 1e9

    def now(self) -> float:
        """Simulated minutes since the run started."""
        return self.minutes(self.elapsed())

    def sleep(self, minutes: float) -> None:
        """Block for ``minutes`` simulated minutes."""
        if self.gate is not None:
            self.gate.sleep(self.seconds(max(minutes, 0.0)))
        elif minutes > 0:
            time.sleep(self.seconds(minutes))
