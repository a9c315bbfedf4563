"""Closed-form queueing models: textbook values, exact solves, limits, and bad parameters."""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import pytest

from sim.errors import ScenarioError, SimError
from sim.queueing import (
    Prediction,
    engset,
    erlang_b,
    erlang_c,
    finite_source,
    machine_repair,
    mm1k,
    mmc,
    mmck,
)

from .ctmc import stationary

# ---------------------------------------------------------------------------------------------
# Exact references, in rational arithmetic, written from the definitions rather than from the
# recursions and logarithms the module uses.


def exact_erlang_b(load: Fraction, servers: int) -> Fraction:
    terms = [load**k / math.factorial(k) for k in range(servers + 1)]
    return terms[-1] / sum(terms)


def exact_erlang_c(load: Fraction, servers: int) -> Fraction:
    top = load**servers / math.factorial(servers) * servers / (servers - load)
    return top / (sum(load**k / math.factorial(k) for k in range(servers)) + top)


def exact_engset_blocking(sources: int, servers: int, ratio: Fraction) -> Fraction:
    # Call congestion: what the other N - 1 sources look like (the arrival theorem).
    terms = [math.comb(sources - 1, k) * ratio**k for k in range(servers + 1)]
    return terms[-1] / sum(terms)


def solve_birth_death(
    arrival: Fraction, service: Fraction, servers: int, capacity: int
) -> list[Fraction]:
    """The stationary law of M/M/c/K, solved as a chain (pi Q = 0, sum(pi) = 1)."""
    rates = {(n, n + 1): arrival for n in range(capacity)}
    rates |= {(n, n - 1): min(n, servers) * service for n in range(1, capacity + 1)}
    law = stationary(rates, list(range(capacity + 1)))
    return [law[n] for n in range(capacity + 1)]


def close(a: float, b: float, rel: float = 1e-12) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=rel)


def assert_littles_law(model: Prediction, service_mean: float, servers: int) -> None:
    assert close(model.queue_mean, model.throughput * model.wait_mean, 1e-10)
    assert close(model.system_mean, model.throughput * model.sojourn_mean, 1e-10)
    assert close(model.sojourn_mean, model.wait_mean + service_mean, 1e-10)
    assert close(model.utilisation, model.throughput * service_mean / servers, 1e-10)
    assert close(model.throughput, model.arrival_rate * (1 - model.p_block), 1e-10)


# ---------------------------------------------------------------------------------------------
# M/M/1 and M/M/c


def test_mm1_textbook_values() -> None:
    # rho = 0.8: Lq = rho^2 / (1 - rho) = 3.2, Wq = rho / (mu - lambda) = 4 / mu, L = 4, W = 5.
    model = mmc(0.8, 1.0, 1)
    assert model.queue_mean == pytest.approx(3.2, rel=1e-12)
    assert model.wait_mean == pytest.approx(4.0, rel=1e-12)
    assert model.system_mean == pytest.approx(4.0, rel=1e-12)
    assert model.sojourn_mean == pytest.approx(5.0, rel=1e-12)
    assert model.p_wait == pytest.approx(0.8, rel=1e-12)
    assert model.utilisation == pytest.approx(0.8, rel=1e-12)
    assert model.p_block == 0.0
    # The same rho with mu = 2: the queue is as long, the wait half as long (4 / mu).
    faster = mmc(1.6, 0.5, 1)
    assert faster.queue_mean == pytest.approx(3.2, rel=1e-12)
    assert faster.wait_mean == pytest.approx(2.0, rel=1e-12)


@pytest.mark.parametrize("rho", [0.05, 0.3, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("service_mean", [0.2, 1.0, 7.0])
def test_mmc_with_one_server_is_mm1(rho: float, service_mean: float) -> None:
    mu = 1 / service_mean
    model = mmc(rho * mu, service_mean, 1)
    assert close(model.p_wait, rho)
    assert close(model.queue_mean, rho**2 / (1 - rho))
    assert close(model.system_mean, rho / (1 - rho))
    assert close(model.wait_mean, rho / (mu - rho * mu))
    assert close(model.sojourn_mean, 1 / (mu - rho * mu))


def test_erlang_c_known_values() -> None:
    # M/M/2 at rho = 1/2: C = 1/3 and Lq = 2 rho^3 / (1 - rho^2) = 1/3.
    assert erlang_c(1.0, 2) == pytest.approx(1 / 3, rel=1e-12)
    two = mmc(1.0, 1.0, 2)
    assert two.queue_mean == pytest.approx(1 / 3, rel=1e-12)
    assert two.system_mean == pytest.approx(2 * 0.5 / (1 - 0.25), rel=1e-12)  # 2 rho/(1-rho^2)
    # M/M/3 with 2 Erlang offered: C = 4/9.
    assert erlang_c(2.0, 3) == pytest.approx(4 / 9, rel=1e-12)
    three = mmc(2.0, 1.0, 3)
    assert three.queue_mean == pytest.approx(4 / 9 * (2 / 3) / (1 / 3), rel=1e-12)
    # Published tables: C(c=10, A=8) = 0.4092.
    assert erlang_c(8.0, 10) == pytest.approx(0.4092, abs=5e-5)


@pytest.mark.parametrize(("load", "servers"), [(0.5, 1), (2.5, 4), (8, 10), (45, 50), (280, 300)])
def test_erlang_c_against_its_definition(load: float, servers: int) -> None:
    expected = float(exact_erlang_c(Fraction(load), servers))
    assert close(erlang_c(load, servers), expected, 1e-11)
    assert close(mmc(load, 1.0, servers).p_wait, expected, 1e-11)


def test_mmc_refuses_an_unstable_queue() -> None:
    with pytest.raises(ScenarioError, match=r"unstable.*rho = 1 "):
        mmc(2.0, 1.0, 2)
    with pytest.raises(ScenarioError, match=r"rho = 1\.5"):
        mmc(3.0, 1.0, 2)
    with pytest.raises(ScenarioError, match="rho"):
        erlang_c(4.0, 4)


# ---------------------------------------------------------------------------------------------
# Erlang B and M/M/c/K


def test_erlang_b_table_values() -> None:
    assert erlang_b(10.0, 10) == pytest.approx(0.2146, abs=5e-5)
    assert erlang_b(2.0, 3) == pytest.approx(4 / 19, rel=1e-12)  # 0.2105
    assert erlang_b(1.0, 1) == pytest.approx(0.5, rel=1e-12)
    assert erlang_b(100.0, 100) == pytest.approx(0.0757, abs=5e-5)


@pytest.mark.parametrize(("load", "servers"), [(0.1, 1), (3.7, 5), (90, 100), (280, 300)])
def test_erlang_b_against_its_definition(load: float, servers: int) -> None:
    assert close(erlang_b(load, servers), float(exact_erlang_b(Fraction(load), servers)), 1e-11)


def test_erlang_b_with_thousands_of_servers() -> None:
    # A^c / c! overflows a float long before this; the recursion does not. The reference, in
    # integers: B = A^c / sum_k A^k c! / k!.
    load = servers = 2000
    total, power, falling = 0, 1, math.factorial(servers)  # A^k and c! / k!
    for k in range(servers + 1):
        total += power * falling
        power *= load
        falling //= k + 1  # exact: c! / k! = (k + 1) * c! / (k + 1)!
    b = erlang_b(float(load), servers)
    assert 0.0 < b < 0.02
    assert close(b, float(Fraction(load**servers, total)), 1e-9)


@pytest.mark.parametrize(("arrival", "service", "servers"), [(1.0, 1.0, 1), (3.0, 0.5, 4)])
def test_mmcc_is_the_erlang_loss_system(arrival: float, service: float, servers: int) -> None:
    model = mmck(arrival, service, servers, servers)
    assert close(model.p_block, erlang_b(arrival * service, servers))
    assert model.p_wait == 0.0
    assert model.queue_mean == 0.0
    assert model.wait_mean == 0.0
    assert close(model.sojourn_mean, service)


@pytest.mark.parametrize("rho", [0.3, 0.9, 1.5, 4.0])
@pytest.mark.parametrize("capacity", [1, 2, 5, 20])
def test_mm1k_closed_form(rho: float, capacity: int) -> None:
    model = mm1k(rho, 1.0, capacity)
    p_full = (1 - rho) * rho**capacity / (1 - rho ** (capacity + 1))
    length = rho / (1 - rho) - (capacity + 1) * rho ** (capacity + 1) / (1 - rho ** (capacity + 1))
    assert close(model.p_block, p_full)
    assert close(model.system_mean, length)
    p_empty = (1 - rho) / (1 - rho ** (capacity + 1))
    assert close(model.p_wait, 1 - p_empty - p_full)
    assert close(model.utilisation, 1 - p_empty)
    assert_littles_law(model, 1.0, 1)


@pytest.mark.parametrize("capacity", [1, 3, 10])
def test_mm1k_at_rho_one(capacity: int) -> None:
    # Every state equally likely: P_K = 1 / (K + 1), L = K / 2.
    model = mm1k(0.25, 4.0, capacity)
    assert close(model.p_block, 1 / (capacity + 1))
    assert close(model.system_mean, capacity / 2)
    assert close(model.utilisation, capacity / (capacity + 1))


@pytest.mark.parametrize(
    ("arrival", "service", "servers", "capacity"),
    [("3", "1", 2, 6), ("1", "2", 3, 3), ("5", "1", 3, 9), ("2", "1/4", 1, 4), ("7", "1", 4, 5)],
)
def test_mmck_against_an_exact_birth_death_solve(
    arrival: str, service: str, servers: int, capacity: int
) -> None:
    lam, mean = Fraction(arrival), Fraction(service)
    pi = solve_birth_death(lam, 1 / mean, servers, capacity)
    model = mmck(float(lam), float(mean), servers, capacity)
    p_block = pi[capacity]
    queue = sum((n - servers) * pi[n] for n in range(servers, capacity + 1))
    system = sum(n * p for n, p in enumerate(pi))
    busy = sum(min(n, servers) * p for n, p in enumerate(pi))
    assert close(model.p_block, float(p_block))
    assert close(model.p_wait, float(sum(pi[servers:capacity])))
    assert close(model.queue_mean, float(queue))
    assert close(model.system_mean, float(system))
    assert close(model.utilisation, float(busy / servers))
    assert close(model.throughput, float(lam * (1 - p_block)))
    assert close(model.wait_mean, float(queue / (lam * (1 - p_block))))
    assert_littles_law(model, float(mean), servers)


def test_mmck_tends_to_mmc_as_the_waiting_room_grows() -> None:
    limit = mmc(2.4, 1.0, 3)  # rho = 0.8
    near = mmck(2.4, 1.0, 3, 8)
    assert abs(near.queue_mean - limit.queue_mean) > 0.5  # 5 waiting places are far from it
    gaps = [abs(mmck(2.4, 1.0, 3, 3 + k).queue_mean - limit.queue_mean) for k in (5, 20, 80)]
    assert gaps == sorted(gaps, reverse=True)
    far = mmck(2.4, 1.0, 3, 3 + 400)  # 0.8^400 ~ 1e-39
    for field in ("wait_mean", "p_wait", "utilisation", "queue_mean", "system_mean"):
        assert close(getattr(far, field), getattr(limit, field), 1e-10), field
    assert far.p_block < 1e-30


def test_mmck_with_hundreds_of_servers() -> None:
    model = mmck(480.0, 1.0, 500, 700)
    pi_weights = [Fraction(480) ** n / math.factorial(n) for n in range(501)]
    top = pi_weights[-1]
    pi_weights += [top * Fraction(480, 500) ** (n - 500) for n in range(501, 701)]
    total = sum(pi_weights)
    assert close(model.p_wait, float(sum(pi_weights[500:700]) / total), 1e-10)
    assert close(model.p_block, float(pi_weights[700] / total), 1e-9)
    assert_littles_law(model, 1.0, 500)


# ---------------------------------------------------------------------------------------------
# Finite sources


@pytest.mark.parametrize(
    ("sources", "servers", "idle", "service"),
    [(10, 3, 5.0, 1.0), (200, 130, 20.0, 60.0), (4, 6, 1.0, 1.0), (30, 1, 2.0, 0.5)],
)
def test_engset_agrees_with_finite_source_without_waiting(
    sources: int, servers: int, idle: float, service: float
) -> None:
    model = engset(sources, servers, idle, service)
    old = finite_source(sources, servers, idle, service, waiting=False)
    assert close(model.p_block, old.p_wait)
    assert close(model.utilisation, old.utilisation)
    assert close(model.system_mean, old.occupancy_mean)
    assert model.p_wait == 0.0
    assert model.wait_mean == 0.0
    assert_littles_law(model, service, servers)


@pytest.mark.parametrize(
    ("sources", "servers", "ratio"), [(10, 3, "1/5"), (20, 10, "1/2"), (600, 500, "5")]
)
def test_engset_against_the_call_congestion_formula(sources: int, servers: int, ratio: str) -> None:
    r = Fraction(ratio)
    model = engset(sources, servers, 1.0, float(r))
    assert close(model.p_block, float(exact_engset_blocking(sources, servers, r)), 1e-10)


def test_engset_with_no_more_sources_than_servers_blocks_nobody() -> None:
    model = engset(5, 5, 2.0, 3.0)
    assert model.p_block == 0.0
    # Each source alternates idle (2) and busy (3): busy 3/5 of the time.
    assert close(model.system_mean, 5 * 3 / 5)
    assert close(model.throughput, 5 / 5)


def test_engset_tends_to_erlang_b_with_many_sources() -> None:
    load, servers, service = 5.0, 6, 1.0
    limit = erlang_b(load, servers)
    # N sources, each idle for N * service / load: N / idle = load / service arrivals per unit
    # time from the idle sources, whatever N.
    gaps = [
        abs(engset(n, servers, n * service / load, service).p_block - limit)
        for n in (10, 100, 1000, 100_000)
    ]
    assert gaps[0] > 1e-2
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[-1] < 1e-4


@pytest.mark.parametrize(
    ("sources", "servers", "idle", "service"),
    [(12, 5, 20.0, 10.0), (200, 130, 20.0, 60.0), (400, 130, 20.0, 60.0), (3, 1, 1.0, 4.0)],
)
def test_machine_repair_agrees_with_finite_source(
    sources: int, servers: int, idle: float, service: float
) -> None:
    model = machine_repair(sources, servers, idle, service)
    old = finite_source(sources, servers, idle, service)
    assert close(model.wait_mean, old.wait_mean)
    assert close(model.p_wait, old.p_wait)
    assert close(model.utilisation, old.utilisation)
    assert model.p_block == 0.0
    assert_littles_law(model, service, servers)


def test_finite_source_tends_to_mmc_with_many_sources() -> None:
    arrival, service, servers = 2.4, 1.0, 3
    limit = mmc(arrival, service, servers)

    def gap(n: int) -> float:
        # Each of n cars drives n / arrival on average: about `arrival` arrivals per unit time.
        return abs(finite_source(n, servers, n / arrival, service).wait_mean - limit.wait_mean)

    assert gap(30) > 0.05
    assert gap(30) > gap(1000) > gap(100_000)
    big = finite_source(100_000, servers, 100_000 / arrival, service)
    assert big.wait_mean == pytest.approx(limit.wait_mean, rel=1e-3)
    assert big.p_wait == pytest.approx(limit.p_wait, rel=1e-3)
    assert big.utilisation == pytest.approx(limit.utilisation, rel=1e-3)
    repair = machine_repair(100_000, servers, 100_000 / arrival, service)
    assert repair.queue_mean == pytest.approx(limit.queue_mean, rel=1e-3)


# ---------------------------------------------------------------------------------------------
# Bad parameters


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: mmc(1.0, 1.0, 0), "servers must be > 0, got 0"),
        (lambda: mmc(0.0, 1.0, 2), "arrival_rate must be > 0"),
        (lambda: mmc(1.0, -2.0, 2), "service_mean must be > 0 and finite, got -2.0"),
        (lambda: mmc(1.0, math.nan, 2), "service_mean must be > 0 and finite, got nan"),
        (lambda: mmc(1.0, 1.0, 2.5), "servers must be an integer, got 2.5"),  # type: ignore[arg-type]
        (lambda: mmc(1.0, 1.0, True), "servers must be an integer, got True"),
        (lambda: mmck(1.0, 1.0, 3, 2), r"capacity must be >= servers \(3\), got 2"),
        (lambda: mmck(1.0, 1.0, 1, 0), "capacity must be > 0, got 0"),
        (lambda: mm1k(1.0, math.inf, 3), "service_mean must be > 0 and finite, got inf"),
        (lambda: erlang_b(-1.0, 3), "offered_load must be > 0"),
        (lambda: erlang_b(1.0, -3), "servers must be > 0, got -3"),
        (lambda: engset(0, 3, 1.0, 1.0), "sources must be > 0, got 0"),
        (lambda: engset(4, 3, 0.0, 1.0), "idle_mean must be > 0"),
        (lambda: machine_repair(4, 0, 1.0, 1.0), "servers must be > 0, got 0"),
        (lambda: mmck(1e-200, 1e-200, 1, 3), r"arrival_rate \* service_mean = 0.0 is out of"),
        (lambda: mmc(1e200, 1e200, 2), r"arrival_rate \* service_mean = inf is out of"),
        (lambda: engset(3, 2, 1e300, 1e-300), "service_mean / idle_mean = 0.0 is out of"),
    ],
)
def test_bad_parameters_raise_a_scenario_error_naming_them(
    call: Callable[[], Prediction | float], message: str
) -> None:
    with pytest.raises(ScenarioError, match=message) as caught:
        call()
    assert isinstance(caught.value, SimError)
    assert not isinstance(caught.value, ValueError)
