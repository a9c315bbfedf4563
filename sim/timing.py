"""How late the run's timers fired: requested against realised durations, from the log alone.

In wall mode a sleep of ``m`` simulated minutes is a ``time.sleep`` of ``m * 60 / speedup``
seconds, and the operating system wakes the process late by some lateness ``L`` (tens of
microseconds on an idle machine, milliseconds on a loaded one). That lateness is multiplied by
the speedup: every sleep lasts ``L * speedup / 60`` simulated minutes longer than it was meant
to, and every mean duration a queueing model is given is stretched by as much. The run cannot
help it, but it can measure it and say when it matters.

Every ``ctx.sleep`` logs a ``sleep`` line when it returns, with ``minutes`` (asked for),
``began`` (the ``ts`` at which it began) and ``what`` (the duration's name, if the scenario gave
one); a timed call that ran out (``timeout`` on an ``op`` line) is measured the same way, from
its invoke to its ``timeout`` line. :class:`TimerLateness` reads both and sums them up:
lateness in milliseconds and in simulated minutes per sleep, the realised mean of each named
duration beside the requested one, and a warning when the lateness is a significant share of
the shortest mean. In virtual mode (``clock.mode = "virtual"``) the lateness is 0 by
construction: a sleep ends exactly when it was asked to.
"""

from __future__ import annotations

import math
from array import array
from typing import TYPE_CHECKING, Any

from .history import Line, Operation, Subscriber
from .stats import ordered, percentile

if TYPE_CHECKING:
    from .config import RunConfig

__all__ = ["SIGNIFICANT", "TimerLateness", "lateness_rule"]

#: Lateness in simulated minutes, as a share of the shortest mean duration, from which the run
#: warns: a 2 % longer mean moves a model's utilisation by about 2 % and a wait near
#: saturation by much more.
SIGNIFICANT = 0.02


class _Group:
    __slots__ = ("n", "realised", "requested")

    def __init__(self) -> None:
        self.n = 0
        self.requested = 0.0  # seconds of ts, summed
        self.realised = 0.0


def lateness_rule(late_s: float, speedup: float, shortest_minutes: float) -> float:
    """The share of the shortest mean duration that a lateness of ``late_s`` wall seconds per
    sleep stands for at ``speedup``: ``late_s * speedup / 60 / shortest_minutes``."""
    return late_s * speedup / 60.0 / shortest_minutes


class TimerLateness(Subscriber):
    """Collects every sleep and every timed-out call of a run; :meth:`summary` says how late
    they were. Subscribed to every history that :func:`sim.analysis.analyse` reads."""

    prims = None
    events = frozenset({"sleep"})

    def __init__(self, config: RunConfig[Any] | None) -> None:
        self._config = config
        self._late = array("d")  # seconds of ts, one per sleep or timeout
        self._groups: dict[str, _Group] = {}
        self._virtual = False

    def _add(self, what: str, requested: float, realised: float) -> None:
        group = self._groups.get(what)
        if group is None:
            group = self._groups[what] = _Group()
        group.n += 1
        group.requested += requested
        group.realised += realised
        self._late.append(realised - requested)

    def on_line(self, line: Line) -> None:
        if line.actor in ("engine", "coordinator") or self._config is None:
            return
        minutes, began = line.get("minutes"), line.get("began")
        if not _number(minutes) or not _number(began) or minutes <= 0:
            return  # a sleep of nothing is no timer
        if line.step is not None:
            self._virtual = True
        what = line.get("what")
        requested = minutes * 60.0 / self._config.clock.speedup
        self._add(what if isinstance(what, str) and what else "sleep", requested, line.ts - began)

    def on_op(self, op: Operation) -> None:
        done = op.done
        if done is None or done.phase != "timeout" or self._config is None:
            return
        timeout = op.invoke.timeout
        if not _number(timeout) or timeout <= 0:
            return
        requested = timeout * 60.0 / self._config.clock.speedup
        self._add(f"timeout of {op.prim}.{op.name}", requested, done.ts - op.invoke.ts)

    def summary(self) -> dict[str, Any]:
        """What run.json keeps under ``timing`` and the summary prints."""
        config = self._config
        if config is None:
            return {}
        speedup = config.clock.speedup
        mode = config.clock.mode
        per_minute = 60.0 / speedup
        found: dict[str, Any] = {"mode": mode, "speedup": speedup, "sleeps": len(self._late)}
        if not self._late:
            found["note"] = "no sleep lines in the log: nothing to measure"
            return found
        late = ordered(self._late)
        mean = math.fsum(late) / len(late)
        found.update(
            late_mean_ms=mean * 1e3,
            late_p50_ms=float(percentile(late, 50)) * 1e3,
            late_p95_ms=float(percentile(late, 95)) * 1e3,
            late_max_ms=float(late[-1]) * 1e3,
            late_minutes=mean / per_minute,
        )
        means: list[dict[str, Any]] = [
            {
                "what": what,
                "n": g.n,
                "requested": g.requested / g.n / per_minute,
                "realised": g.realised / g.n / per_minute,
            }
            for what, g in sorted(self._groups.items())
        ]
        found["means"] = means
        shortest = min(means, key=lambda m: m["requested"])
        found["shortest"] = {"what": shortest["what"], "mean": shortest["requested"]}
        share = lateness_rule(max(mean, 0.0), speedup, shortest["requested"])
        found["share"] = share
        # The lateness in seconds hardly depends on the speedup (it is the scheduler's), so the
        # share grows in proportion to it: this is where it would reach the threshold.
        found["max_speedup"] = speedup * SIGNIFICANT / share if share > 0 else None
        found["warning"] = None
        if mode == "wall" and share >= SIGNIFICANT:
            most = found["max_speedup"]
            found["warning"] = (
                f"timer lateness of {mean * 1e3:.3g} ms per sleep is "
                f"{mean / per_minute:.3g} simulated minutes at speedup {speedup:g}: "
                f"{share:.1%} of the shortest mean duration ({shortest['what']}, "
                f"{shortest['requested']:.3g} min). Every duration is stretched by as much; "
                f"use clock.speedup={_round_down(most)} or less, or clock.mode=virtual"
            )
        return found


def _round_down(value: float) -> str:
    """Two significant figures, never above ``value``: a speedup to suggest."""
    if value <= 0 or not math.isfinite(value):
        return "1"
    digits = 10 ** (math.floor(math.log10(value)) - 1)
    return f"{math.floor(value / digits) * digits:g}"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
