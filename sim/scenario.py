"""What a scenario module declares, and how the engine finds it.

A scenario module (``scenarios/carpark.py``) defines one module-level ``scenario = Scenario(...)``:
its parameters as a msgspec Struct, its named primitives, its actors (each a plain blocking
function of a :class:`~sim.Ctx`), and how to read a finished run back into metrics and verdicts.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

from .errors import ScenarioError

if TYPE_CHECKING:
    from .analysis import Analysis
    from .config import RunConfig
    from .primitives import PrimSpec
    from .runtime.ctx import Ctx

__all__ = ["Actor", "Metric", "Scenario", "actors", "available", "load"]

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
    """A summary metric's key in run.json, its label in the table and its unit."""

    key: str
    label: str
    unit: str = ""


@dataclass(frozen=True)
class Scenario(Generic[P]):
    """The description of a scenario; see ``scenarios/carpark.py`` for a complete one."""

    name: str
    description: str
    params: type[P]
    primitives: Callable[[P], Mapping[str, PrimSpec]]
    actors: Callable[[P], Sequence[Actor]]
    analysis: Callable[[RunConfig], Analysis]
    metrics: Sequence[Metric] = field(default_factory=tuple)
    # Phenomena a config of this scenario may declare in ``expect``, with what each means.
    # "deadlock" is always available: the engine detects it for every scenario.
    phenomena: Mapping[str, str] = field(default_factory=dict)
    # What queueing theory (or another model) predicts for a config, by metric key; sweeps put
    # it beside the measured values as ``theory_<key>``.
    theory: Callable[[RunConfig], Mapping[str, float]] | None = None


def module_name(name: str) -> str:
    """The module that holds the scenario called ``name``."""
    # A bare name is a module of the bundled ``scenarios`` package; a dotted one is taken as a
    # full module path, so that benchmarks and users can keep scenarios elsewhere.
    return name if "." in name else f"scenarios.{name}"


def load(name: str) -> Scenario[Any]:
    """Import the scenario called ``name`` (``carpark`` or ``package.module``)."""
    module = module_name(name)
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.startswith(exc.name):
            raise ScenarioError(f"no scenario named {name!r}") from None
        raise
    scenario = getattr(loaded, "scenario", None)
    if not isinstance(scenario, Scenario):
        raise ScenarioError(f"module {module} does not define `scenario = Scenario(...)`")
    return scenario


def available() -> list[str]:
    """Names of the scenarios bundled in the ``scenarios`` package."""
    import scenarios

    return sorted(m.name for m in pkgutil.iter_modules(scenarios.__path__) if not m.ispkg)
