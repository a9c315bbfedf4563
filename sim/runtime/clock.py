"""The run's clock: one monotonic time base for every process, scaled to simulated minutes."""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["Clock"]


@dataclass(frozen=True)
class Clock:
    """Maps simulated minutes to wall seconds.

    ``t0_ns`` is the run's start on ``time.monotonic_ns()``, which on Linux is one clock for every
    process on the host, so timestamps from different actors can be compared directly.
    ``speedup`` is simulated time per wall time: at 600, one simulated minute lasts 0.1 s.
    """

    speedup: float
    t0_ns: int

    def seconds(self, minutes: float) -> float:
        """Wall seconds that ``minutes`` simulated minutes last."""
        return minutes * 60.0 / self.speedup

    def minutes(self, seconds: float) -> float:
        """Simulated minutes that ``seconds`` wall seconds stand for."""
        return seconds * self.speedup / 60.0

    def elapsed(self) -> float:
        """Wall seconds since the run started (the ``ts`` of an event)."""
        return (time.monotonic_ns() - self.t0_ns) / 1e9

    def now(self) -> float:
        """Simulated minutes since the run started."""
        return self.minutes(self.elapsed())

    def sleep(self, minutes: float) -> None:
        """Block for ``minutes`` simulated minutes."""
        if minutes > 0:
            time.sleep(self.seconds(minutes))
