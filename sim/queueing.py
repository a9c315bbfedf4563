"""Closed-form queueing results to put beside measured ones.

The car park is a finite-source queue: N cars, each driving for an exponential time (rate
lambda) and parking for an exponential time (rate mu) on one of c spaces. With waiting it is the
machine-repair model M/M/c//N; when a car that finds the car park full leaves at once, it is the
Engset loss system. Both have product-form stationary distributions over n, the number of cars
at the car park (parked or waiting). Everything is computed in logarithms so that N = 1000 works.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["FiniteSource", "finite_source"]


@dataclass(frozen=True)
class FiniteSource:
    """Stationary predictions; times in the units of the rates' inverse (simulated minutes)."""

    wait_mean: float  # mean wait in the queue per arriving car
    p_wait: float  # probability that an arriving car finds every space taken
    utilisation: float  # mean fraction of spaces occupied
    occupancy_mean: float  # mean number of occupied spaces


def _log_weights(n_cars: int, spaces: int, ratio: float, waiting: bool) -> list[float]:
    log_r = math.log(ratio)
    weights = []
    top = n_cars if waiting else min(n_cars, spaces)
    for n in range(top + 1):
        # N! / (N-n)! * r^n / (n! for n <= c, c! c^(n-c) for n > c)
        w = math.lgamma(n_cars + 1) - math.lgamma(n_cars - n + 1) + n * log_r
        if n <= spaces:
            w -= math.lgamma(n + 1)
        else:
            w -= math.lgamma(spaces + 1) + (n - spaces) * math.log(spaces)
        weights.append(w)
    return weights


def finite_source(
    cars: int, spaces: int, drive_mean: float, park_mean: float, *, waiting: bool = True
) -> FiniteSource:
    """M/M/c//N (``waiting=True``) or the Engset loss system (``waiting=False``)."""
    if cars <= 0 or spaces <= 0 or drive_mean <= 0 or park_mean <= 0:
        raise ValueError("cars, spaces and both means must be positive")
    ratio = park_mean / drive_mean  # lambda / mu
    logs = _log_weights(cars, spaces, ratio, waiting)
    peak = max(logs)
    p = [math.exp(w - peak) for w in logs]
    total = sum(p)
    p = [x / total for x in p]
    busy = sum(min(n, spaces) * pn for n, pn in enumerate(p))
    queued = sum(max(n - spaces, 0) * pn for n, pn in enumerate(p))
    # Arrivals see the system with weight (N - n): only driving cars can arrive.
    arrivals = [(cars - n) * pn for n, pn in enumerate(p)]
    seen_full = sum(a for n, a in enumerate(arrivals) if n >= spaces)
    p_wait = seen_full / sum(arrivals)
    lam = 1.0 / drive_mean
    throughput = lam * sum(arrivals)  # arrivals per minute, blocked ones included
    accepted = throughput * (1 - p_wait) if not waiting else throughput
    wait = queued / accepted if waiting and accepted > 0 else 0.0
    return FiniteSource(wait, p_wait, busy / spaces, busy)
