"""What a scenario module declares, and how the engine finds it.

A scenario module (``scenarios/carpark.py``) defines one module-level ``scenario = Scenario(...)``:
its parameters as a msgspec Struct, its named primitives, its actors (each a plain blocking
function of a :class:`~sim.Ctx`), and how to read a finished run back into metrics and verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

if TYPE_CHECKING:
    from .analysis import Analysis
    from .config import RunConfig
    from .history import History
    from .history.lines import Line
    from .kinds import PrimSpec
    from .kinds.queue import Handled
    from .runtime.ctx import Ctx

__all__ = ["Actor", "Metric", "Scenario", "States", "actors", "available", "load", "of"]

P = TypeVar("P", bound=msgspec.Struct)


@dataclass(frozen=True)
class Actor:
    """One OS process of a run: its unique name and the role function it runs."""

    name: str
    role: Callable[[Ctx[Any]], None]


def actors(prefix: str, count: int, role: Callable[[Ctx[Any]], None]) -> list[Actor]:
    """``count`` actors named ``prefix-000``, ``prefix-001``... running ``role``.

    The numbers are zero-padded to a common width so that names sort in order.
    """
    width = max(3, len(str(max(count - 1, 0))))
    return [Actor(f"{prefix}-{i:0{width}d}", role) for i in range(count)]


@dataclass(frozen=True)
class Metric:
    """A summary metric's key in run.json, its label in the table and its unit.

    Every metric an analysis computes must be declared (a key that is not is an error, never
    silently dropped); ``show=False`` keeps one out of the summary table (it is still in
    run.json and in a sweep's results).

    ``lower`` and ``upper`` are the bounds the metric cannot leave (a wait is never negative,
    a probability stays in [0, 1]; a ``%`` metric is a fraction in [0, 1] unless told
    otherwise): confidence intervals and a sweep's bands are clipped to them. ``interval=True``
    says the analysis may give a confidence interval of its own (batch means within one run) as
    ``{key}_low`` and ``{key}_high``, which need no declaration of their own. ``words=True``
    says its value is text, never a number (``"12 / 9 / 11"``): shown in the table, never
    averaged or drawn by a sweep.
    """

    key: str
    label: str
    unit: str = ""
    show: bool = True
    lower: float | None = None
    upper: float | None = None
    interval: bool = False
    words: bool = False

    @property
    def bounds(self) -> tuple[float | None, float | None]:
        """``(lower, upper)``: what was declared, or [0, 1] for a fraction shown in %."""
        if self.lower is None and self.upper is None and self.unit == "%":
            return 0.0, 1.0
        return self.lower, self.upper

    @property
    def companions(self) -> tuple[str, ...]:
        """The keys of this metric's own interval, if it has one."""
        return (f"{self.key}_low", f"{self.key}_high") if self.interval else ()

    @staticmethod
    def stats(
        prefix: str,
        label: str,
        unit: str = "",
        show: Sequence[str] = ("mean", "p95", "max"),
        lower: float | None = 0.0,
    ) -> tuple[Metric, ...]:
        """The four metrics :func:`sim.describe` computes for ``prefix`` (mean, p50, p95,
        max), labelled ``"{label}, mean"`` ...; those not in ``show`` stay out of the table.
        They describe durations, so by default they are never below 0."""
        return tuple(
            Metric(f"{prefix}_{stat}", f"{label}, {stat}", unit, stat in show, lower=lower)
            for stat in ("mean", "p50", "p95", "max")
        )


#: How a display colours a state: what the actor waited for and has now (``using``), about to
#: ask for it (``asking``), doing something else (``idle``).
Tone = str


@dataclass(frozen=True)
class States:
    """What a scenario's domain events mean for the timeline: the state each event puts its
    actor in (``on``), the state each role starts in (``start``), and how each state is shown
    (``tones``: ``using``, ``asking`` or ``idle``).

    ``when``, if given, is asked first for every line and may return a state name (a state
    that depends on a field of the event, not only on its name), or None to fall back to
    ``on``.
    """

    on: Mapping[str, str] = field(default_factory=dict)
    start: Mapping[str, str] = field(default_factory=dict)
    tones: Mapping[str, Tone] = field(default_factory=dict)
    when: Callable[[Line], str | None] | None = None

    def __call__(self, line: Line) -> tuple[str, Tone] | None:
        state: str | None = None
        if self.when is not None:
            state = self.when(line)
        if state is None:
            if line.event == "actor_start":
                state = self.start.get(str(line.get("role", "")))
            else:
                state = self.on.get(line.event)
        return None if state is None else (state, self.tones.get(state, "idle"))


@dataclass(frozen=True)
class Scenario(Generic[P]):
    """The description of a scenario; see ``scenarios/carpark.py`` for a complete one."""

    name: str
    description: str
    params: type[P]
    primitives: Callable[[P], Mapping[str, PrimSpec[Any]]]
    actors: Callable[[P], Sequence[Actor]]
    analysis: Callable[[RunConfig[P], History], Analysis[P]]
    metrics: Sequence[Metric] = field(default_factory=tuple)
    # What the scenario's domain events mean on the timeline (the player, the plot).
    states: States | None = None
    # Phenomena a config of this scenario may declare in ``expect``, with what each means.
    # "deadlock" is always available: the engine detects it for every scenario.
    phenomena: Mapping[str, str] = field(default_factory=dict)
    # What queueing theory (or another model) predicts for a config, by metric key; sweeps put
    # it beside the measured values as ``theory_<key>``.
    theory: Callable[[RunConfig[P]], Mapping[str, float]] | None = None
    # Where an item got from a queue counts as dealt with (a domain event), by queue: what the
    # lost-item check follows (an item got by a consumer that ended before that is lost).
    handled: Mapping[str, Handled] = field(default_factory=dict)
    # Why a config of this scenario cannot run under the virtual clock (a peer outside the run
    # decides when it answers, and no scheduler can wait for it), or None when it can.
    uncontrolled: Callable[[P], str | None] | None = None


def load(name: str, *, base: Path | None = None) -> Scenario[Any]:
    """Import the scenario called ``name``: a bundled or installed name (``carpark``), a file
    (``printer.py``, relative to ``base``, default the current directory) or a dotted module
    (``mypkg.printer``). See :mod:`sim._lookup` for which code may be imported."""
    from ._lookup import find

    return find(name, base=base).load()


def of(config: RunConfig[Any]) -> Scenario[Any]:
    """The scenario a validated config runs (found when the config was validated)."""
    if config.origin is None:
        from .errors import ScenarioError

        raise ScenarioError(f"scenario {config.scenario!r} was not imported: {config.skipped}")
    return config.origin.load()


def available() -> list[str]:
    """Names of the scenarios bundled in the ``scenarios`` package."""
    from ._lookup import bundled

    return bundled()
