"""Closed-form queueing results to put beside measured ones.

The car park is a finite-source queue: N cars, each driving for an exponential time (rate
lambda) and parking for an exponential time (rate mu) on one of c spaces. With waiting it is the
machine-repair model M/M/c//N; when a car that finds the car park full leaves at once, it is the
Engset loss system. Both have product-form stationary distributions over n, the number of cars
at the car park (parked or waiting). Everything is computed in logarithms so that N = 1000 works.

Beside ``finite_source`` (the car park's own API) the infinite-source models: M/M/c (Erlang C),
M/M/c/K (finite waiting room, ``mm1k`` for one server), the Erlang B loss formula, and the
finite-source ones again (``engset``, ``machine_repair``), all returning a :class:`Prediction`.
Invalid parameters raise :class:`~sim.errors.ScenarioError` naming the parameter. Sums run in
logarithms or through the Erlang B recursion, so hundreds of servers or sources work.

``bounded_buffer`` is the producer-consumer buffer whose producers *wait* while it is full
(they are not turned away, as in M/M/c/K): a birth-death chain with its own result type,
:class:`BufferPrediction`. See docs/theory.md for the assumptions and which scenario
parameters match which model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ScenarioError

__all__ = [
    "BufferPrediction",
    "FiniteSource",
    "Prediction",
    "bounded_buffer",
    "engset",
    "erlang_b",
    "erlang_c",
    "finite_source",
    "machine_repair",
    "mm1k",
    "mmc",
    "mmck",
]


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
    for name, value in (("cars", cars), ("spaces", spaces), ("drive_mean", drive_mean),
                        ("park_mean", park_mean)):  # fmt: skip
        if value <= 0:
            raise ScenarioError(f"{name} must be > 0, got {value}")
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


# ---------------------------------------------------------------------------------------------
# Infinite-source models (Poisson arrivals) and the loss systems, in one result type.


@dataclass(frozen=True)
class Prediction:
    """Stationary predictions of one queueing model; times in the unit of the means given.

    ``p_wait`` and ``p_block`` are fractions of *all* arrivals (by PASTA, or by the arrival
    theorem for finite sources); ``wait_mean`` and ``sojourn_mean`` are per *admitted* arrival,
    so that Little's law holds with ``throughput``: ``queue_mean = throughput * wait_mean``.
    """

    wait_mean: float  # mean wait in the queue per admitted arrival
    p_wait: float  # probability that an arrival is admitted and finds every server busy
    p_block: float  # probability that an arrival is turned away (0 where nobody is)
    utilisation: float  # mean fraction of each server's time spent serving
    queue_mean: float  # mean number waiting (not in service)
    system_mean: float  # mean number waiting or in service
    sojourn_mean: float  # mean time in the system (wait + service) per admitted arrival
    throughput: float  # admitted (and so served) arrivals per unit time
    arrival_rate: float  # arrivals per unit time, turned-away ones included


def _check_count(name: str, value: int) -> None:
    # bool is an int subclass, and True servers is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScenarioError(f"{name} must be an integer, got {value!r}")
    if value <= 0:
        raise ScenarioError(f"{name} must be > 0, got {value}")


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ScenarioError(f"{name} must be > 0 and finite, got {value}")


def _ratio_or_product(name: str, value: float) -> float:
    # Each factor may be fine and the product or ratio still under- or overflow; its logarithm
    # is taken below, so say which parameters are to blame instead of a math domain error.
    if not 0.0 < value < math.inf:
        raise ScenarioError(f"{name} = {value} is out of the floating-point range")
    return value


def _normalise(logs: list[float]) -> list[float]:
    """Probabilities from unnormalised log weights (log-sum-exp, so no weight overflows)."""
    peak = max(logs)
    p = [math.exp(w - peak) for w in logs]
    total = math.fsum(p)
    return [x / total for x in p]


def _erlang_b(load: float, servers: int) -> float:
    # B(0) = 1, B(k) = A B(k-1) / (k + A B(k-1)): every term stays in [0, 1], so nothing
    # overflows for thousands of servers (unlike A^c / c!).
    b = 1.0
    for k in range(1, servers + 1):
        b = load * b / (k + load * b)
    return b


def erlang_b(offered_load: float, servers: int) -> float:
    """Erlang's loss formula B(A, c): the blocking probability of M/M/c/c (also M/G/c/c).

    ``offered_load`` is A = arrival rate x mean service time, in Erlang.
    """
    _check_positive("offered_load", offered_load)
    _check_count("servers", servers)
    return _erlang_b(offered_load, servers)


def erlang_c(offered_load: float, servers: int) -> float:
    """Erlang's delay formula C(A, c): the probability that an arrival waits in M/M/c.

    Needs A < c (utilisation below 1), otherwise the queue grows without bound.
    """
    _check_positive("offered_load", offered_load)
    _check_count("servers", servers)
    rho = offered_load / servers
    if rho >= 1:
        raise ScenarioError(
            f"M/M/c is unstable: utilisation rho = offered_load / servers must be < 1, "
            f"got rho = {rho:.6g} (offered_load={offered_load}, servers={servers})"
        )
    b = _erlang_b(offered_load, servers)
    # The textbook identity C = B / (1 - rho (1 - B)) keeps the recursion's stability.
    return b / (1 - rho * (1 - b))


def mmc(arrival_rate: float, service_mean: float, servers: int) -> Prediction:
    """M/M/c with an unbounded queue (Erlang C): Poisson arrivals, exponential service, FIFO.

    Stable only when rho = arrival_rate * service_mean / servers < 1; otherwise raises
    ScenarioError naming rho.
    """
    _check_positive("arrival_rate", arrival_rate)
    _check_positive("service_mean", service_mean)
    _check_count("servers", servers)
    load = _ratio_or_product("arrival_rate * service_mean", arrival_rate * service_mean)
    rho = load / servers
    if rho >= 1:
        raise ScenarioError(
            f"M/M/c is unstable: utilisation rho = arrival_rate * service_mean / servers "
            f"must be < 1, got rho = {rho:.6g} (arrival_rate={arrival_rate}, "
            f"service_mean={service_mean}, servers={servers})"
        )
    c = erlang_c(load, servers)
    queue = c * rho / (1 - rho)
    wait = queue / arrival_rate
    return Prediction(
        wait_mean=wait,
        p_wait=c,
        p_block=0.0,
        utilisation=rho,
        queue_mean=queue,
        system_mean=queue + load,
        sojourn_mean=wait + service_mean,
        throughput=float(arrival_rate),
        arrival_rate=float(arrival_rate),
    )


def mmck(arrival_rate: float, service_mean: float, servers: int, capacity: int) -> Prediction:
    """M/M/c/K: c servers and room for ``capacity`` = K customers in all (in service and
    waiting, so K - c waiting places); an arrival that finds K there is turned away.

    Stable for every load, rho = 1 and rho > 1 included. ``capacity == servers`` is the loss
    system M/M/c/c, whose ``p_block`` is Erlang B.
    """
    _check_positive("arrival_rate", arrival_rate)
    _check_positive("service_mean", service_mean)
    _check_count("servers", servers)
    _check_count("capacity", capacity)
    if capacity < servers:
        raise ScenarioError(f"capacity must be >= servers ({servers}), got {capacity}")
    load = _ratio_or_product("arrival_rate * service_mean", arrival_rate * service_mean)
    log_load, log_rho = math.log(load), math.log(load / servers)
    # p_n ~ A^n / n! up to c, then A^c / c! * rho^(n - c): the birth-death chain's product form.
    logs = [n * log_load - math.lgamma(n + 1) for n in range(servers + 1)]
    top = logs[-1]
    logs.extend(top + (n - servers) * log_rho for n in range(servers + 1, capacity + 1))
    p = _normalise(logs)
    p_block = p[capacity]
    p_wait = math.fsum(p[servers:capacity])
    queue = math.fsum((n - servers) * p[n] for n in range(servers + 1, capacity + 1))
    system = math.fsum(n * pn for n, pn in enumerate(p))
    throughput = arrival_rate * (1 - p_block)
    return Prediction(
        wait_mean=queue / throughput,
        p_wait=p_wait,
        p_block=p_block,
        utilisation=throughput * service_mean / servers,
        queue_mean=queue,
        system_mean=system,
        sojourn_mean=system / throughput,
        throughput=throughput,
        arrival_rate=float(arrival_rate),
    )


def mm1k(arrival_rate: float, service_mean: float, capacity: int) -> Prediction:
    """M/M/1/K: one server and room for ``capacity`` customers in all (capacity - 1 waiting).

    The sleeping barber with ``chairs`` waiting chairs is M/M/1/(1 + chairs).
    """
    return mmck(arrival_rate, service_mean, 1, capacity)


# ---------------------------------------------------------------------------------------------
# Finite-source models in the same result type.


def _finite(
    sources: int, servers: int, idle_mean: float, service_mean: float, waiting: bool
) -> Prediction:
    _check_count("sources", sources)
    _check_count("servers", servers)
    _check_positive("idle_mean", idle_mean)
    _check_positive("service_mean", service_mean)
    ratio = _ratio_or_product("service_mean / idle_mean", service_mean / idle_mean)
    p = _normalise(_log_weights(sources, servers, ratio, waiting))
    # Only idle sources can arrive, each at rate 1 / idle_mean: arrivals see state n with
    # weight (N - n) p_n (the arrival theorem: what the other N - 1 sources look like).
    seen = [(sources - n) * pn for n, pn in enumerate(p)]
    seen_total = math.fsum(seen)
    arrival_rate = seen_total / idle_mean
    seen_busy = math.fsum(seen[servers:]) / seen_total
    busy = math.fsum(min(n, servers) * pn for n, pn in enumerate(p))
    queue = math.fsum(max(n - servers, 0) * pn for n, pn in enumerate(p))
    system = busy + queue
    p_block = 0.0 if waiting else seen_busy
    throughput = arrival_rate * (1 - p_block)
    return Prediction(
        wait_mean=queue / throughput,
        p_wait=seen_busy if waiting else 0.0,
        p_block=p_block,
        utilisation=busy / servers,
        queue_mean=queue,
        system_mean=system,
        sojourn_mean=system / throughput,
        throughput=throughput,
        arrival_rate=arrival_rate,
    )


def engset(sources: int, servers: int, idle_mean: float, service_mean: float) -> Prediction:
    """The Engset loss system: ``sources`` sources, each idle for an exponential time of mean
    ``idle_mean`` and then asking for one of ``servers`` servers for an exponential time of mean
    ``service_mean``; a request that finds every server busy is lost and the source goes idle
    again. Nobody waits, so ``p_wait`` is 0 and ``p_block`` is the call congestion.

    The car park whose cars leave at once when it is full (``patience = 0``);
    ``p_block`` equals ``finite_source(..., waiting=False).p_wait``.
    """
    return _finite(sources, servers, idle_mean, service_mean, waiting=False)


def machine_repair(sources: int, servers: int, idle_mean: float, service_mean: float) -> Prediction:
    """M/M/c//N, the machine-repair model: as :func:`engset`, but a request that finds every
    server busy waits (FIFO) instead of being lost.

    The car park whose cars wait as long as it takes; the same numbers as
    ``finite_source(..., waiting=True)``, with the queue lengths and times added.
    """
    return _finite(sources, servers, idle_mean, service_mean, waiting=True)


# ---------------------------------------------------------------------------------------------
# The bounded buffer: producers that wait while the buffer is full.


@dataclass(frozen=True)
class BufferPrediction:
    """Stationary predictions of a bounded buffer whose producers block while it is full.

    Times are in the unit of the means given. A *put* is one item a producer has made; it finds
    the buffer full or not (``p_full``) and waits (``wait_full_mean``, over every put, those
    that found room included, which waited 0). A *take* is one item a consumer gets; it waits
    while the buffer is empty (``wait_empty_mean``). Little's law holds: ``blocked_mean =
    throughput * wait_full_mean`` and the mean number of idle consumers is ``throughput *
    wait_empty_mean``.
    """

    p_full: float  # fraction of puts that find the buffer full (or producers waiting before)
    wait_full_mean: float  # a producer's mean wait per put
    wait_empty_mean: float  # a consumer's mean wait per take
    fill_mean: float  # mean number of items in the buffer
    utilisation: float  # mean fraction of consumers working on an item
    blocked_mean: float  # mean number of producers waiting with an item
    throughput: float  # items per unit time


def bounded_buffer(
    producers: int, consumers: int, capacity: int, produce_mean: float, consume_mean: float
) -> BufferPrediction:
    """The bounded buffer of ``capacity`` slots between ``producers`` and ``consumers``.

    Each producer makes an item for an exponential time (mean ``produce_mean``) and puts it
    into the buffer, waiting while the buffer is full; each consumer takes an item (waiting
    while it is empty) and works on it for an exponential time (mean ``consume_mean``).

    With n = items in the buffer + items being worked on + producers waiting with an item, n is
    a birth-death chain on 0 .. c + K + P (c consumers, K slots, P producers): items are made
    at rate (P - max(0, n - c - K)) / produce_mean (a waiting producer makes nothing) and
    finished at rate min(n, c) / consume_mean. A put arriving in state n finds the buffer full
    if n >= c + K, with weight (birth rate x p(n)). One producer (P = 1) is M/M/c/(c + K + 1)
    with arrival rate 1 / produce_mean: the waiting producer is the last place.
    """
    _check_count("producers", producers)
    _check_count("consumers", consumers)
    _check_count("capacity", capacity)
    _check_positive("produce_mean", produce_mean)
    _check_positive("consume_mean", consume_mean)
    c, k, top = consumers, capacity, consumers + capacity + producers

    def birth(n: int) -> float:
        return (producers - max(0, n - c - k)) / produce_mean

    def death(n: int) -> float:
        return min(n, c) / consume_mean

    logs = [0.0]
    for n in range(top):
        logs.append(logs[-1] + math.log(birth(n)) - math.log(death(n + 1)))
    p = _normalise(logs)
    arrivals = [birth(n) * pn for n, pn in enumerate(p)]
    throughput = math.fsum(arrivals)
    blocked = math.fsum(max(0, n - c - k) * pn for n, pn in enumerate(p))
    idle = math.fsum((c - min(n, c)) * pn for n, pn in enumerate(p))
    return BufferPrediction(
        p_full=math.fsum(arrivals[c + k :]) / throughput,
        wait_full_mean=blocked / throughput,
        wait_empty_mean=idle / throughput,
        fill_mean=math.fsum(min(max(n - c, 0), k) * pn for n, pn in enumerate(p)),
        utilisation=math.fsum(min(n, c) * pn for n, pn in enumerate(p)) / c,
        blocked_mean=blocked,
        throughput=throughput,
    )
