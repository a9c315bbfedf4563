"""How the scheduler chooses which ready task runs next: random, PCT, FIFO, or as recorded.

Every policy is seeded from the run seed, so the same config and seed choose the same way.
``choose(ready, step)`` gets the names of the ready tasks, sorted, and returns one of them;
``pick(waiters, n, step)`` chooses which waiters a ``notify`` wakes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

__all__ = ["Fifo", "Least", "Pct", "Policy", "Random", "make"]


class Policy:
    """Base: the scheduler tells a policy about tasks as they become ready and as they run."""

    name = "policy"

    def became_ready(self, task: str, step: int) -> None:
        """``task`` has been waiting since ``step``."""

    #: Tasks whose next step touches nothing shared (a start, a sleep's end, a thread's begin
    #: or join): set by the scheduler before each choice, for policies that care (those with
    #: ``uses_local``; for the others it is not worked out).
    local: frozenset[str] = frozenset()
    uses_local = False

    def choose(self, ready: Sequence[str], step: int, running: str | None) -> str:
        raise NotImplementedError

    def pick(self, waiters: Sequence[str], n: int, step: int) -> list[str]:
        """Which ``n`` of ``waiters`` (in the order they began to wait) a notify wakes."""
        return list(waiters[:n])


class Random(Policy):
    """A uniformly random ready task at every step (the default)."""

    name = "random"

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(f"schedule/{seed}")

    def choose(self, ready: Sequence[str], step: int, running: str | None) -> str:
        return ready[0] if len(ready) == 1 else self._rng.choice(ready)

    def pick(self, waiters: Sequence[str], n: int, step: int) -> list[str]:
        if n >= len(waiters):
            return list(waiters)
        return sorted(self._rng.sample(list(waiters), n), key=list(waiters).index)


class Fifo(Policy):
    """The task that has been ready longest (ties by name): a fair, predictable order."""

    name = "fifo"

    def __init__(self) -> None:
        self._since: dict[str, int] = {}

    def became_ready(self, task: str, step: int) -> None:
        self._since[task] = step

    def choose(self, ready: Sequence[str], step: int, running: str | None) -> str:
        return min(ready, key=lambda t: (self._since.get(t, 0), t))


class Pct(Policy):
    """Probabilistic concurrency testing (Burckhardt et al., 2010): every task gets a random
    priority, the highest-priority ready task runs, and at ``depth - 1`` random steps the
    running task's priority drops below all others. A bug of depth d shows with probability at
    least 1 / (n k^(d-1)) for n tasks and k steps."""

    name = "pct"

    def __init__(self, seed: int, depth: int, steps: int) -> None:
        self._rng = random.Random(f"pct/{seed}")
        self._priority: dict[str, float] = {}
        self._changes = sorted(self._rng.sample(range(1, max(steps, depth) + 1), depth - 1))
        self._low = 0.0

    def _of(self, task: str) -> float:
        if task not in self._priority:
            self._priority[task] = 1.0 + self._rng.random()
        return self._priority[task]

    def choose(self, ready: Sequence[str], step: int, running: str | None) -> str:
        while self._changes and self._changes[0] <= step and running is not None:
            self._changes.pop(0)
            self._low -= 1.0  # below every initial priority, and below earlier changes
            self._priority[running] = self._low
        return max(ready, key=lambda t: (self._of(t), t))

    def pick(self, waiters: Sequence[str], n: int, step: int) -> list[str]:
        ranked = sorted(waiters, key=lambda t: -self._of(t))
        chosen = set(ranked[:n])
        return [w for w in waiters if w in chosen]


class Least(Policy):
    """The least surprising schedule: a task whose next step touches nothing shared goes
    first (the first by name); otherwise the task that ran last goes on while it can (no
    preemption), else the first ready one by name. What ``explore`` takes as the default
    around the choices it makes."""

    name = "least"
    uses_local = True

    def choose(self, ready: Sequence[str], step: int, running: str | None) -> str:
        local = [t for t in ready if t in self.local]
        if local:
            return local[0]
        if running is not None and running in ready:
            return running
        return ready[0]


def make(name: str, seed: int, depth: int = 3, steps: int = 1000) -> Policy:
    """The policy called ``name`` (``random``, ``pct``, ``fifo``), seeded from ``seed``."""
    if name == "fifo":
        return Fifo()
    if name == "pct":
        return Pct(seed, depth, steps)
    return Random(seed)
