"""The stationary law of a small continuous-time Markov chain, exactly: the tests' reference
for the queueing models (sim/queueing.py), which use closed forms instead."""

from __future__ import annotations

from fractions import Fraction
from typing import Any


def stationary(rates: dict[tuple[Any, Any], Fraction], states: list[Any]) -> dict[Any, Fraction]:
    """The stationary law of a finite CTMC by Gaussian elimination on pi Q = 0, sum(pi) = 1."""
    index = {s: i for i, s in enumerate(states)}
    size = len(states)
    q = [[Fraction(0)] * size for _ in range(size)]
    for (a, b), rate in rates.items():
        q[index[a]][index[b]] += rate
        q[index[a]][index[a]] -= rate
    rows = [[q[i][j] for i in range(size)] + [Fraction(0)] for j in range(size)]
    rows[-1] = [Fraction(1)] * size + [Fraction(1)]
    for col in range(size):
        pivot = next(r for r in range(col, size) if rows[r][col] != 0)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for r in range(size):
            if r != col and rows[r][col] != 0:
                factor = rows[r][col] / rows[col][col]
                rows[r] = [x - factor * y for x, y in zip(rows[r], rows[col], strict=True)]
    return {s: rows[i][-1] / rows[i][i] for s, i in index.items()}
