"""A test scenario whose analysis fails on any log (a ScenarioError, sim's own kind of error):
actors that log flat out, as in scenario_busy, until they are stopped."""

from __future__ import annotations

from typing import Any

from sim import Analysis, Scenario, actors
from sim.errors import ScenarioError

from .scenario_busy import Params, busy


class Fussy(Analysis[Params]):
    def metrics(self) -> dict[str, Any]:
        raise ScenarioError("the analysis cannot make sense of this log")


scenario = Scenario(
    name="fussy",
    description="Busy actors; the analysis fails on whatever log it is given",
    params=Params,
    primitives=lambda p: {},
    actors=lambda p: actors("busy", p.actors, busy),
    analysis=Fussy,
)
