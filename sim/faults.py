"""Declared faults: what a config's ``[[faults]]`` tables say, checked before anything starts.

A fault kills, stops, pauses or crashes actors of a run at a moment the config names: a
simulated time (``at``, minutes after the start) or the first line that matches a pattern
(``after``: an event, an operation, by whom). Its target is an actor name, a glob (every live
actor that matches), ``random`` (one live actor, drawn from the run's seed) or ``holder:PRIM``
(the actor that has held a unit of PRIM longest at that moment). The engine performs each one
(sim.runtime.nemesis) and logs it as a ``fault`` line; the checks then say what it revealed
(a leaked unit, an abandoned lock, a lost item, a broken barrier). See docs/faults.md.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import RunConfig
    from .history.lines import Line

__all__ = ["Fault", "FaultCrash", "Match", "check_faults"]

Action = Literal["kill", "term", "pause", "crash"]
#: What each action does to a target process, in words (the fault line's ``signal``).
SIGNALS: Mapping[str, str] = {
    "kill": "SIGKILL",
    "term": "SIGTERM",
    "pause": "SIGSTOP",
    "crash": "SIGUSR1",
}


class FaultCrash(Exception):
    """Raised inside an actor by a ``crash`` fault: the role fails there, as if it had a bug."""


class Match(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True
):
    """Which line sets a fault off: every field given must agree (``actor`` may be a glob);
    ``nth``: the nth such line (default the first)."""

    event: str | None = None
    actor: str | None = None
    op: str | None = None
    prim: str | None = None
    kind: str | None = None
    phase: str | None = None
    nth: Annotated[int, msgspec.Meta(ge=1)] = 1

    def __post_init__(self) -> None:
        if all(v is None for v in (self.event, self.actor, self.op, self.prim, self.kind,
                                   self.phase)):  # fmt: skip
            raise ValueError("after: give at least one of event, actor, op, prim, kind, phase")

    @property
    def about_ops(self) -> bool:
        """The pattern is about operations (``op`` lines), not other lines."""
        return self.event == "op" or any(
            v is not None for v in (self.op, self.prim, self.kind, self.phase)
        )

    def matches(self, line: Line) -> bool:
        if self.event is not None and line.event != self.event:
            return False
        if self.actor is not None and not fnmatch.fnmatchcase(line.actor, self.actor):
            return False
        for name in ("op", "prim", "kind", "phase"):
            wanted = getattr(self, name)
            if wanted is not None and line.get(name) != wanted:
                return False
        return True

    def describe(self) -> str:
        parts = [f"{k}={v}" for k in ("event", "actor", "op", "prim", "kind", "phase")
                 if (v := getattr(self, k)) is not None]  # fmt: skip
        nth = f" (#{self.nth})" if self.nth > 1 else ""
        return "after " + " ".join(parts) + nth


class Fault(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True
):
    """One ``[[faults]]`` table."""

    action: Action
    target: str
    at: Annotated[float, msgspec.Meta(ge=0)] | None = None
    after: Match | None = None
    # pause only: how long the target stays stopped, in simulated minutes.
    for_: Annotated[float, msgspec.Meta(gt=0)] | None = msgspec.field(default=None, name="for")

    def __post_init__(self) -> None:
        if (self.at is None) == (self.after is None):
            raise ValueError("give exactly one of at (minutes) or after (a line to wait for)")
        if self.action == "pause" and self.for_ is None:
            raise ValueError("a pause needs `for` (minutes the target stays stopped)")
        if self.action != "pause" and self.for_ is not None:
            raise ValueError(f"`for` is for pause only, not {self.action}")
        if not self.target:
            raise ValueError("target must not be empty")

    def when(self) -> str:
        """The trigger in words."""
        if self.at is not None:
            return f"at {self.at:g} min"
        assert self.after is not None
        return self.after.describe()


def check_faults(config: RunConfig[Any], actors: Sequence[str], prims: Mapping[str, Any]) -> None:
    """Every fault of ``config`` can happen in this run: its target names actors (or a
    primitive) the run has, its pattern can match, its time comes before the run's timeout.
    Raises ConfigError naming the fault's key."""
    names = list(actors)
    for i, fault in enumerate(config.faults):
        key = f"faults[{i}]"
        target = fault.target
        if target.startswith("holder:"):
            prim = target.removeprefix("holder:")
            if prim not in prims:
                raise ConfigError(_unknown("primitive", prim, list(prims)), key=f"{key}.target")
        elif target != "random" and not fnmatch.filter(names, target):
            raise ConfigError(_unknown("actor", target, names), key=f"{key}.target")
        if fault.after is not None:
            after = fault.after
            if after.actor is not None and not fnmatch.filter([*names, "engine"], after.actor):
                raise ConfigError(_unknown("actor", after.actor, names), key=f"{key}.after.actor")
            if after.prim is not None and after.prim not in prims:
                raise ConfigError(_unknown("primitive", after.prim, list(prims)),
                                  key=f"{key}.after.prim")  # fmt: skip
        if fault.at is not None and config.clock.mode == "wall":
            seconds = fault.at * 60.0 / config.clock.speedup
            if seconds >= config.engine.timeout:
                raise ConfigError(
                    f"{fault.at:g} minutes is {seconds:g} s at speedup {config.clock.speedup:g}: "
                    f"the run is stopped before that (engine.timeout = "
                    f"{config.engine.timeout:g} s)",
                    key=f"{key}.at",
                )


def _unknown(what: str, name: str, known: Sequence[str]) -> str:
    shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
    return f"no {what} {name!r} in this run (it has: {shown or 'none'})"
