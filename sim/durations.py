"""Random durations in simulated minutes: the building block of every timed scenario."""

from __future__ import annotations

import random
from typing import Annotated, Literal

import msgspec

__all__ = ["Duration"]


class Duration(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """A random duration with its mean in simulated minutes.

    ``exponential`` is the memoryless choice that queueing theory assumes; ``uniform`` draws from
    ``mean * (1 ± spread)``; ``fixed`` always returns ``mean``.
    """

    dist: Literal["exponential", "uniform", "fixed"] = "exponential"
    mean: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    spread: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5

    def draw(self, rng: random.Random) -> float:
        """One draw, in simulated minutes."""
        if self.dist == "fixed" or self.mean == 0:
            return self.mean
        if self.dist == "exponential":
            return rng.expovariate(1.0 / self.mean)
        return rng.uniform(self.mean * (1 - self.spread), self.mean * (1 + self.spread))
