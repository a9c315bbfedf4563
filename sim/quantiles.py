"""The Student t and normal distributions' CDFs and quantiles, without scipy.

The t CDF comes from the regularized incomplete beta function, evaluated by its continued
fraction (Lentz's method, as in Numerical Recipes, 3rd ed., section 6.4); quantiles are found by
bisection on the CDF, which is monotone, so the answer is as exact as the CDF itself (about 1e-12
here). Beyond 10,000 degrees of freedom, where the fraction loses digits, the Cornish-Fisher
expansion of the t quantile around the normal one takes over. The normal CDF is ``math.erfc``.
Quantiles are cached: an interval over many runs asks for the same few again and again.
"""

from __future__ import annotations

import math
from functools import lru_cache

from .errors import ScenarioError

__all__ = ["normal_quantile", "regularized_beta", "student_t_cdf", "student_t_quantile"]

_EPS = 1e-15
_TINY = 1e-300
# Near x = a / (a + b) the continued fraction needs O(sqrt(max(a, b))) terms: enough for
# parameters up to about 1e10.
_MAX_TERMS = 200_000


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b), good for x < (a + 1) / (a + b + 2)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_TERMS):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + aa / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta fraction did not converge (a={a}, b={b}, x={x})")


def _log_gamma_ratio(a: float, b: float) -> float:
    """log Gamma(a + b) - log Gamma(a) for a >= 1000, from Stirling's series.

    lgamma(a + b) - lgamma(a) would cancel: both are ~ a log a, so for a = 1e9 the difference
    (~ b log a) keeps only 6 digits. Written as below nothing large is subtracted; the series'
    next term, 1 / (1680 a^7), is below any float's resolution here.
    """

    def correction(x: float) -> float:
        return 1.0 / (12.0 * x) - 1.0 / (360.0 * x**3) + 1.0 / (1260.0 * x**5)

    return (
        (a - 0.5) * math.log1p(b / a) + b * math.log(a + b) - b + correction(a + b) - correction(a)
    )


def _log_beta(a: float, b: float) -> float:
    small, big = min(a, b), max(a, b)
    if big < 1000.0:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return math.lgamma(small) - _log_gamma_ratio(big, small)


def _ibeta(a: float, b: float, x: float, y: float, log_x: float, log_y: float) -> float:
    """I_x(a, b) with y = 1 - x and both logarithms given as exactly as the caller can."""
    if x == 0.0 or y == 0.0:
        return 1.0 - y
    log_front = a * log_x + b * log_y - _log_beta(a, b)
    # Use the fraction where it converges fast; the symmetry I_x(a, b) = 1 - I_{1-x}(b, a)
    # covers the other side.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, y) / b


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function, for a, b > 0 and 0 <= x <= 1.

    The relative error is about 1e-16 * max(a, b) at worst, near x = a / (a + b), where the
    continued fraction needs most terms; ``student_t_cdf`` leaves it before that matters.
    """
    if not (a > 0 and b > 0 and 0.0 <= x <= 1.0):
        raise ScenarioError(f"regularized_beta needs a, b > 0 and 0 <= x <= 1, got {a}, {b}, {x}")
    if x == 0.0 or x == 1.0:
        return x
    return _ibeta(a, b, x, 1.0 - x, math.log(x), math.log1p(-x))


def _check_df(df: float) -> None:
    if not math.isfinite(df) or df <= 0:
        raise ScenarioError(f"degrees of freedom must be > 0 and finite, got {df}")


def _check_probability(p: float) -> None:
    if not 0.0 < p < 1.0:
        raise ScenarioError(f"probability must be in (0, 1), got {p}")


# Beyond this many degrees of freedom the continued fraction loses digits (its terms come close
# to cancelling when x = df / (df + t^2) is near 1), and the expansion below is exact to
# rounding: its first omitted term is of order 1 / df^5.
_LARGE_DF = 1e4


def _cornish_fisher(z: float, df: float) -> float:
    """The t quantile whose normal quantile is z, to order 1 / df^4 (Abramowitz and Stegun,
    26.7.5)."""
    g1 = (z**3 + z) / 4.0
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96.0
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384.0
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160.0
    return z + (g1 + (g2 + (g3 + g4 / df) / df) / df) / df


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    _check_df(df)
    if math.isnan(t):
        raise ScenarioError("t must be a number, got nan")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    if df > _LARGE_DF and t * t < 0.01 * df:
        # Invert the expansion: z = t - (cornish_fisher(z) - z), a contraction while t^2 << df.
        z = t
        for _ in range(8):
            z = t - (_cornish_fisher(z, df) - z)
        return _normal_cdf(z)
    # P(|T| > |t|) = I_x(df / 2, 1 / 2) with x = df / (df + t^2). For large df, x is within
    # t^2 / df of 1: log x and 1 - x are formed without subtracting from 1, where digits die.
    ratio = t * t / df
    x, y = 1.0 / (1.0 + ratio), ratio / (1.0 + ratio)
    log_x = -math.log1p(ratio)
    log_y = math.log(ratio) + log_x if ratio > 0 else -math.inf
    tail = 0.5 * _ibeta(df / 2.0, 0.5, x, y, log_x, log_y)
    return 1.0 - tail if t > 0 else tail


@lru_cache(maxsize=256)
def student_t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p for Student's t with ``df`` degrees of freedom."""
    _check_probability(p)
    _check_df(df)
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    if df > _LARGE_DF:
        return _cornish_fisher(normal_quantile(p), df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        low, high = high, high * 2.0
    # Bisection: the CDF is monotone, so this cannot go astray (Newton can, in the far tail).
    while high - low > 1e-13 * max(1.0, high):
        mid = 0.5 * (low + high)
        if student_t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def _normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


@lru_cache(maxsize=64)
def normal_quantile(p: float) -> float:
    """The z with P(Z <= z) = p for the standard normal distribution."""
    _check_probability(p)
    low, high = -40.0, 40.0  # the CDF is 0 and 1 in floating point beyond these
    for _ in range(200):
        mid = 0.5 * (low + high)
        if _normal_cdf(mid) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-15 * max(1.0, abs(mid)):
            break
    return 0.5 * (low + high)
