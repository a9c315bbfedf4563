"""Confidence intervals: the t and normal quantiles, t, Wilson and batch-means intervals."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable

import pytest

from sim._sweep.results import _T95
from sim.errors import ScenarioError
from sim.estimate import (
    Interval,
    batch_means,
    mean_interval,
    proportion_interval,
    time_batch_means,
)
from sim.quantiles import normal_quantile, regularized_beta, student_t_cdf, student_t_quantile
from sim.stats import TimeWeighted

# ---------------------------------------------------------------------------------------------
# Quantiles


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [
        (0.975, 1, 12.706),
        (0.975, 2, 4.303),
        (0.975, 5, 2.571),
        (0.975, 30, 2.042),
        (0.95, 3, 2.353),
        (0.995, 10, 3.169),
        (0.9995, 1, 636.619),
        (0.9, 60, 1.296),
    ],
)
def test_t_quantile_table_values(p: float, df: int, expected: float) -> None:
    assert student_t_quantile(p, df) == pytest.approx(expected, abs=5e-4)
    assert student_t_quantile(1 - p, df) == pytest.approx(-expected, abs=5e-4)


@pytest.mark.parametrize("p", [0.5001, 0.6, 0.8, 0.9, 0.975, 0.999, 0.999999])
def test_t_quantile_closed_forms_for_one_and_two_df(p: float) -> None:
    # df = 1 is the Cauchy distribution; df = 2 has t = (2p - 1) / sqrt(2 p (1 - p)).
    assert student_t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
    assert student_t_quantile(p, 2) == pytest.approx(
        (2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9
    )


def test_t_quantile_matches_the_sweep_table() -> None:
    # summary.csv's table, rounded to three places, for 1..30 degrees of freedom.
    for df, tabled in enumerate(_T95, start=1):
        assert abs(student_t_quantile(0.975, df) - tabled) <= 5.01e-4, df


def test_t_quantile_tends_to_the_normal_one() -> None:
    z = normal_quantile(0.975)
    assert z == pytest.approx(1.959963985, abs=1e-9)
    qs = [student_t_quantile(0.975, df) for df in (10, 100, 1000, 9999, 10_001, 10**6, 10**9)]
    assert qs == sorted(qs, reverse=True)
    assert all(q > z for q in qs)
    # t = z + (z^3 + z) / (4 df) + ...: the first correction is the whole gap for large df.
    for df in (10**5, 10**6, 10**9):
        gap = student_t_quantile(0.975, df) - z
        assert gap == pytest.approx((z**3 + z) / (4 * df), rel=1e-4)


@pytest.mark.parametrize("df", [0.5, 1, 3, 7.5, 30, 500, 9_999, 20_000, 1e8])
@pytest.mark.parametrize("p", [1e-6, 0.001, 0.3, 0.9, 0.999999])
def test_t_cdf_inverts_the_quantile(df: float, p: float) -> None:
    assert student_t_cdf(student_t_quantile(p, df), df) == pytest.approx(p, rel=1e-9)


def test_t_cdf_known_values() -> None:
    assert student_t_cdf(0.0, 4) == 0.5
    assert student_t_cdf(math.inf, 4) == 1.0
    assert student_t_cdf(-math.inf, 4) == 0.0


@pytest.mark.parametrize("df", [10_001.0, 20_000.0, 50_000.0])
def test_t_cdf_is_continuous_where_the_expansion_takes_over(df: float) -> None:
    # Above 10,000 df the CDF comes from the expansion while t^2 < df / 100, else from the
    # fraction: on either side of that edge (ten digits apart) the far tail must agree.
    edge = math.sqrt(0.01 * df)
    inside, outside = student_t_cdf(-edge * (1 - 1e-10), df), student_t_cdf(-edge * (1 + 1e-10), df)
    assert 0.0 < outside < inside < 1e-20
    # The density alone makes them differ by about 2e-10 t^2 (d log F / dt ~ -t, as for the
    # normal, since t^2 << df); a jump between the two methods would show on top of that.
    assert (inside / outside - 1) / (2e-10 * edge**2) == pytest.approx(1.0, abs=0.02)
    # df = 1: Cauchy, F(t) = 1/2 + atan(t) / pi; df = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2)).
    for t in (-30.0, -2.0, -0.3, 0.7, 5.0):
        assert student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, rel=1e-12)
        assert student_t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), rel=1e-12)


def test_regularized_beta_known_values() -> None:
    for x in (0.01, 0.3, 0.5, 0.97):
        assert regularized_beta(2.5, 1.0, x) == pytest.approx(x**2.5, rel=1e-12)
        assert regularized_beta(1.0, 3.0, x) == pytest.approx(1 - (1 - x) ** 3, rel=1e-12)
        assert regularized_beta(4.0, 7.0, x) == pytest.approx(
            1 - regularized_beta(7.0, 4.0, 1 - x), abs=1e-14
        )
    assert regularized_beta(2.0, 3.0, 0.4) == pytest.approx(0.5248, rel=1e-12)
    assert regularized_beta(2.0, 3.0, 0.0) == 0.0
    assert regularized_beta(2.0, 3.0, 1.0) == 1.0
    with pytest.raises(ScenarioError, match="0 <= x <= 1"):
        regularized_beta(2.0, 3.0, 1.5)


@pytest.mark.parametrize("a", [1e4, 1e6, 5e8])
def test_regularized_beta_with_a_huge_parameter(a: float) -> None:
    # I_x(a, 1/2) with x = 2a / (2a + t^2) is twice the t tail at t with 2a degrees of freedom,
    # which the expansion gives to rounding. t is recomputed from the float x, so that both
    # sides are about the same x.
    for i in range(1, 60):
        t = i / 10
        x = 2 * a / (2 * a + t * t)
        exact = 2 * student_t_cdf(-math.sqrt(2 * a * (1 - x) / x), 2 * a)
        error = abs(regularized_beta(a, 0.5, x) / exact - 1)
        assert error < 2e-16 * a, t
        if a * (1 - x) < 1:  # far from x = a / (a + b): no loss of digits at all
            assert error < 1e-13, t


def test_normal_quantile_known_values() -> None:
    assert normal_quantile(0.5) == pytest.approx(0.0, abs=1e-15)
    assert normal_quantile(0.8413447460685429) == pytest.approx(1.0, rel=1e-12)
    assert normal_quantile(0.995) == pytest.approx(2.5758293035489, rel=1e-12)
    assert normal_quantile(1e-10) == pytest.approx(-6.361340902404, rel=1e-11)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_quantiles_refuse_impossible_probabilities(bad: float) -> None:
    with pytest.raises(ScenarioError, match="probability must be in"):
        student_t_quantile(bad, 3)
    with pytest.raises(ScenarioError, match="probability must be in"):
        normal_quantile(bad)
    with pytest.raises(ScenarioError, match="degrees of freedom"):
        student_t_quantile(0.9, 0)


# ---------------------------------------------------------------------------------------------
# The t interval of a mean


def coverage(rng: random.Random, z_instead_of_t: bool) -> float:
    hits = 0
    for _ in range(2000):
        values = [rng.gauss(10.0, 2.0) for _ in range(5)]
        if z_instead_of_t:
            m, s = statistics.fmean(values), statistics.stdev(values)
            half = 1.959964 * s / math.sqrt(5)
            low, high = m - half, m + half
        else:
            interval = mean_interval(values)
            assert interval.low is not None
            assert interval.high is not None
            low, high = interval.low, interval.high
        hits += low <= 10.0 <= high
    return hits / 2000


def test_t_interval_covers_the_true_mean_95_percent_of_the_time() -> None:
    assert 0.93 <= coverage(random.Random(20261128), z_instead_of_t=False) <= 0.97
    # The normal quantile in its place covers far less with five values: the check can tell.
    assert coverage(random.Random(20261128), z_instead_of_t=True) < 0.91


def test_mean_interval_values() -> None:
    interval = mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.776445 * math.sqrt(2.5 / 5)  # t(0.975, 4) * s / sqrt(n)
    assert interval.mean == 3.0
    assert interval.low == pytest.approx(3.0 - half, rel=1e-6)
    assert interval.high == pytest.approx(3.0 + half, rel=1e-6)
    assert interval.n == 5
    assert interval.method == "student t, df=4, 95 %"
    wider = mean_interval([1.0, 2.0, 3.0, 4.0, 5.0], level=0.99)
    assert wider.low is not None
    assert interval.low is not None
    assert wider.low < interval.low
    assert "99 %" in wider.method


def test_mean_interval_is_clipped_at_the_bounds() -> None:
    waits = [0.0, 0.0, 0.1, 0.0, 0.4]
    free = mean_interval(waits)
    assert free.low is not None
    assert free.low < 0
    clipped = mean_interval(waits, lower=0)
    assert clipped.low == 0.0
    assert clipped.high == free.high
    assert clipped.mean == free.mean
    assert "clipped at lower bound 0" in clipped.method
    assert "clipped" not in free.method
    probabilities = [1.0, 0.9, 1.0, 1.0, 0.6]
    both = mean_interval(probabilities, lower=0.0, upper=1.0)
    assert both.high == 1.0
    assert both.low is not None
    assert 0.0 < both.low < 1.0
    assert "clipped at upper bound 1" in both.method


def test_mean_interval_of_fewer_than_two_values_is_undefined() -> None:
    one = mean_interval([4.5])
    assert one == Interval(4.5, None, None, 1, one.method)
    assert "undefined" in one.method
    none = mean_interval([])
    assert (none.mean, none.low, none.high, none.n) == (None, None, None, 0)
    assert "no values" in none.method


def test_constant_values_give_a_point_interval() -> None:
    interval = mean_interval([2.0] * 7)
    assert (interval.low, interval.mean, interval.high) == (2.0, 2.0, 2.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: mean_interval([1.0, -0.5], lower=0.0), r"values\[1\] = -0.5 is below the lower"),
        (lambda: mean_interval([1.0, 1.5], upper=1.0), r"values\[1\] = 1.5 is above the upper"),
        (lambda: mean_interval([1.0, math.nan]), r"values\[1\] must be finite"),
        (lambda: mean_interval([1.0, 2.0], level=1.0), r"level must be in \(0, 1\), got 1.0"),
        (lambda: mean_interval([1.0], lower=2.0, upper=1.0), "lower must be <= upper"),
    ],
)
def test_mean_interval_refuses_bad_arguments(call: Callable[[], Interval], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        call()


# ---------------------------------------------------------------------------------------------
# Wilson


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [(0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (5, 10, 0.2366, 0.7634), (1, 20, 0.0089, 0.2361)],
)
def test_wilson_known_values(successes: int, trials: int, low: float, high: float) -> None:
    interval = proportion_interval(successes, trials)
    assert interval.mean == successes / trials
    assert interval.low == pytest.approx(low, abs=1e-4)
    assert interval.high == pytest.approx(high, abs=1e-4)
    assert interval.n == trials
    assert "wilson" in interval.method


def test_wilson_ends_are_exact_and_inside_the_unit_interval() -> None:
    assert proportion_interval(0, 7).low == 0.0
    assert proportion_interval(7, 7).high == 1.0
    for trials in range(1, 60):
        for successes in range(trials + 1):
            i = proportion_interval(successes, trials, level=0.99)
            assert i.low is not None
            assert i.high is not None
            assert i.mean is not None
            assert 0.0 <= i.low <= i.mean <= i.high <= 1.0
            assert i.low < i.high


def test_wilson_covers_about_95_percent() -> None:
    rng = random.Random(7)
    hits = 0
    for _ in range(2000):
        k = sum(rng.random() < 0.3 for _ in range(40))
        i = proportion_interval(k, 40)
        assert i.low is not None
        assert i.high is not None
        hits += i.low <= 0.3 <= i.high
    assert 0.93 <= hits / 2000 <= 0.97


def test_wilson_refuses_bad_counts() -> None:
    assert proportion_interval(0, 0).low is None
    with pytest.raises(ScenarioError, match=r"successes must be <= trials \(3\), got 4"):
        proportion_interval(4, 3)
    with pytest.raises(ScenarioError, match="trials must be an integer >= 0"):
        proportion_interval(0, -1)


# ---------------------------------------------------------------------------------------------
# Batch means


def ar1(rng: random.Random, n: int, phi: float = 0.9) -> list[float]:
    """A mean-zero AR(1) series: x[t] = phi x[t-1] + noise, started in its stationary law."""
    x = rng.gauss(0.0, 1.0 / math.sqrt(1 - phi * phi))
    out = []
    for _ in range(n):
        x = phi * x + rng.gauss(0.0, 1.0)
        out.append(x)
    return out


def half_width(interval: Interval) -> float:
    assert interval.low is not None
    assert interval.high is not None
    return (interval.high - interval.low) / 2


def test_batch_means_is_wider_than_the_naive_interval_on_correlated_data() -> None:
    series = ar1(random.Random(3), 5000)
    naive, batched = mean_interval(series), batch_means(series)
    # The variance of the mean is (1 + phi) / (1 - phi) = 19 times the naive one: sqrt(19) ~ 4.4.
    assert half_width(batched) > 2.5 * half_width(naive)
    assert batched.n == 5000
    assert "10 batches of 500" in batched.method
    assert "df=9" in batched.method


def test_batch_means_covers_where_the_naive_interval_does_not() -> None:
    rng = random.Random(11)
    naive = batched = 0
    for _ in range(200):
        series = ar1(rng, 2000)
        for interval, hit in ((mean_interval(series), "naive"), (batch_means(series), "batch")):
            assert interval.low is not None
            assert interval.high is not None
            inside = interval.low <= 0.0 <= interval.high
            naive += inside and hit == "naive"
            batched += inside and hit == "batch"
    assert batched / 200 >= 0.88
    assert naive / 200 <= 0.6


def test_batch_means_is_the_t_interval_of_the_batches() -> None:
    rng = random.Random(5)
    samples = [rng.expovariate(1.0) for _ in range(120)]
    means = [statistics.fmean(samples[i * 20 : (i + 1) * 20]) for i in range(6)]
    expected = mean_interval(means, lower=0.0)
    got = batch_means(samples, batches=6, lower=0.0)
    assert got.mean == pytest.approx(expected.mean, rel=1e-12)
    assert got.low == pytest.approx(expected.low, rel=1e-12)
    assert got.high == pytest.approx(expected.high, rel=1e-12)
    assert got.n == 120


def test_batch_means_drops_the_leading_remainder() -> None:
    samples = [1000.0] * 3 + [float(i) for i in range(50)]
    interval = batch_means(samples)
    assert interval.mean == pytest.approx(24.5)  # the three leading outliers are not in it
    assert interval.n == 50
    assert "first 3 of 53 dropped" in interval.method


def test_batch_means_with_too_few_observations() -> None:
    interval = batch_means([1.0, 2.0, 3.0] * 16)  # 48 < 10 batches x 5
    assert interval.low is None
    assert interval.high is None
    assert interval.mean == pytest.approx(2.0)
    assert interval.n == 48
    assert interval.method == "too few observations: 48 < 50 (10 batches of at least 5)"
    assert batch_means([1.0, 2.0, 3.0] * 16, batches=4, min_batch=12).low is not None
    with pytest.raises(ScenarioError, match="batches must be an integer >= 2"):
        batch_means([1.0] * 100, batches=1)


def test_batch_means_clipping() -> None:
    samples = [0.0] * 45 + [1.0] * 5  # all the mass in the last batch
    interval = batch_means(samples, lower=0.0, upper=1.0)
    assert interval.low == 0.0
    assert "clipped at lower bound 0" in interval.method


# ---------------------------------------------------------------------------------------------
# Time-weighted batch means


def test_time_batch_means_of_unit_steps_equals_batch_means() -> None:
    # A level that holds sample i on [i, i + 1): its sub-window means are the batch means.
    rng = random.Random(9)
    samples = ar1(rng, 200)
    changes = [(float(i), v) for i, v in enumerate(samples)]
    timed = time_batch_means(changes, 0.0, 200.0, batches=8)
    plain = batch_means(samples, batches=8)
    assert timed.mean == pytest.approx(plain.mean, rel=1e-9)
    assert timed.low == pytest.approx(plain.low, rel=1e-9)
    assert timed.high == pytest.approx(plain.high, rel=1e-9)
    assert timed.n == 200
    assert "8 sub-windows of 25" in timed.method


def test_time_batch_means_weighs_by_time_within_a_window() -> None:
    rng = random.Random(13)
    changes, t, level = [], 0.0, 0
    for _ in range(400):
        t += rng.expovariate(1.0)
        level = max(0, level + rng.choice((-1, 1)))
        changes.append((t, float(level)))
    start, end = 37.3, t - 11.1  # both in the middle of a segment
    at_start = [lv for c, lv in changes if c <= start][-1]
    reference = TimeWeighted(start, at_start)
    for c, lv in changes:
        if start < c < end:
            reference.change(c, lv - reference.level)
    interval = time_batch_means(changes, start, end, lower=0.0)
    assert interval.mean == pytest.approx(reference.mean(end), rel=1e-9)
    assert interval.n == sum(1 for c, _ in changes if start <= c < end)
    assert interval.low is not None
    assert interval.high is not None
    assert interval.mean is not None
    assert interval.low < interval.mean < interval.high


def test_time_batch_means_uses_the_initial_level_before_the_first_change() -> None:
    changes = [(5.0 + i, float(i % 2)) for i in range(60)]
    zero = time_batch_means(changes, 0.0, 65.0, batches=5)
    three = time_batch_means(changes, 0.0, 65.0, batches=5, initial=3.0)
    # Only [0, 5) differs: by 3 over 5 of 65 time units.
    assert three.mean is not None
    assert zero.mean is not None
    assert three.mean - zero.mean == pytest.approx(3.0 * 5.0 / 65.0, rel=1e-12)


def test_time_batch_means_with_too_few_changes() -> None:
    changes = [(float(i), float(i % 3)) for i in range(30)]
    interval = time_batch_means(changes, 0.0, 30.0)
    assert interval.low is None
    assert interval.high is None
    assert interval.mean == pytest.approx(1.0)
    assert interval.method.startswith("too few observations: 30 changes < 50")


def test_time_batch_means_refuses_bad_input() -> None:
    with pytest.raises(ScenarioError, match="time order"):
        time_batch_means([(2.0, 1.0), (1.0, 0.0)], 0.0, 3.0)
    with pytest.raises(ScenarioError, match="start < end"):
        time_batch_means([(2.0, 1.0)], 3.0, 3.0)
    with pytest.raises(ScenarioError, match=r"changes\[0\] level = -1.0 is below"):
        time_batch_means([(2.0, -1.0)], 0.0, 3.0, lower=0.0)
    with pytest.raises(ScenarioError, match=r"initial = 2\.0 is above"):
        time_batch_means([(2.0, 1.0)], 0.0, 3.0, initial=2.0, upper=1.0)
    # Each change is tested inline and looked at again only when it fails: every kind of bad
    # change, anywhere, is still refused, and named as before.
    good = [(0.5, 1.0), (1.0, 0.0)]
    for bad, said in [
        ((math.nan, 1.0), r"changes\[2\] time must be finite, got nan"),
        ((math.inf, 1.0), r"changes\[2\] time must be finite, got inf"),
        ((-math.inf, 1.0), r"changes\[2\] time must be finite, got -inf"),
        ((0.75, 1.0), r"changes\[2\] at t=0.75 comes before changes\[1\] at t=1.0"),
        ((2.0, math.nan), r"changes\[2\] level must be finite, got nan"),
        ((2.0, math.inf), r"changes\[2\] level must be finite, got inf"),
        ((2.0, 1.5), r"changes\[2\] level = 1.5 is above the upper bound 1.0"),
    ]:
        with pytest.raises(ScenarioError, match=said):
            time_batch_means([*good, bad, (2.5, 0.0)], 0.0, 3.0, lower=0.0, upper=1.0)


# ---------------------------------------------------------------------------------------------
# describe: a sorted list below sim.stats._ARRAY_FROM values, a numpy array from there on


@pytest.mark.parametrize("scale", [1.0, 1.5])
def test_describe_gives_the_same_figures_sorted_as_a_list_or_as_an_array(
    monkeypatch: pytest.MonkeyPatch, scale: float
) -> None:
    from array import array

    from sim import stats

    rng = random.Random(5)
    values = array("d", (rng.expovariate(0.3) for _ in range(2_001)))
    as_list = stats.describe(values, "wait", scale)
    monkeypatch.setattr(stats, "_ARRAY_FROM", 1)  # the numpy path for the same values
    as_array = stats.describe(values, "wait", scale)
    assert as_list == as_array  # the same doubles, bit for bit
    ordered = sorted(v * scale for v in values)
    assert as_list["wait_max"] == ordered[-1]
    assert as_list["wait_p50"] == ordered[1000]  # (2,001 values: the middle one exactly)
    assert math.isclose(as_list["wait_mean"] or 0.0, statistics.fmean(ordered), rel_tol=1e-12)
