"""Readers and writers share a resource: readers may read together, a writer needs it alone.

``policy = "readers"`` (readers-preference, the first classic solution): the first reader in
locks ``resource`` for all readers, the last one out unlocks it; ``read_count`` (a shared
Value, guarded by ``mutex``) counts the readers inside. A writer takes ``resource`` alone. As
long as readers keep overlapping, the count never drops to 0 and a waiting writer never gets
in: writer starvation.

``policy = "fair"``: both readers and writers first pass a turnstile, the ``order`` lock. A
waiting writer holds it, so readers that come after the writer queue behind it; the writer
waits only for the readers already inside.

Every process logs ``want_read``/``want_write`` when it asks, ``enter_read``/``enter_write``
once it is in, and ``exit_read``/``exit_write`` before it leaves, all inside the section the
locks protect, so the log's intervals are exactly the times each one was using the resource.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any, Literal

import msgspec

from sim import (
    Actor,
    Analysis,
    Check,
    Ctx,
    Duration,
    History,
    Line,
    Lock,
    Metric,
    PrimSpec,
    RunConfig,
    Scenario,
    Semaphore,
    States,
    Value,
    Verdict,
    describe,
)
from sim import actors as numbered


class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Durations in simulated minutes."""

    readers: Annotated[int, msgspec.Meta(ge=1)] = 6
    writers: Annotated[int, msgspec.Meta(ge=1)] = 2
    reads: Annotated[int, msgspec.Meta(ge=1)] = 10  # per reader
    writes: Annotated[int, msgspec.Meta(ge=1)] = 3  # per writer
    policy: Literal["readers", "fair"] = "fair"
    read: Duration = Duration(dist="uniform", mean=8.0)
    write: Duration = Duration(dist="uniform", mean=3.0)
    reader_think: Duration = Duration(dist="exponential", mean=2.0)
    writer_think: Duration = Duration(dist="exponential", mean=10.0)
    # A write that waits longer than this for the resource counts as starved.
    writer_wait_bound: Annotated[float, msgspec.Meta(gt=0)] = 45.0


def reader(ctx: Ctx[Params]) -> None:
    """Think, then read; ``reads`` times. The first reader in locks out the writers."""
    p = ctx.params
    mutex, count = ctx.prim("mutex", Lock), ctx.prim("read_count", Value)
    resource = ctx.prim("resource", Semaphore)
    order = ctx.prim("order", Lock) if p.policy == "fair" else None
    for round_ in range(p.reads):
        ctx.sleep(ctx.draw(p.reader_think))
        ctx.log.info("want_read", round=round_)
        if order is not None:
            order.acquire()
        with mutex:
            inside = count.value + 1
            count.value = inside
            if inside == 1:
                resource.acquire()  # the first reader locks the writers out for everyone
        if order is not None:
            order.release()
        ctx.log.info("enter_read", round=round_, readers=inside)
        ctx.sleep(ctx.draw(p.read))
        ctx.log.info("exit_read", round=round_)
        with mutex:
            inside = count.value - 1
            count.value = inside
            if inside == 0:
                resource.release()  # the last reader out lets a writer in


def writer(ctx: Ctx[Params]) -> None:
    """Think, then write alone; ``writes`` times."""
    p = ctx.params
    resource = ctx.prim("resource", Semaphore)
    order = ctx.prim("order", Lock) if p.policy == "fair" else None
    for round_ in range(p.writes):
        ctx.sleep(ctx.draw(p.writer_think))
        ctx.log.info("want_write", round=round_)
        if order is not None:
            order.acquire()  # in the queue: readers who come later wait behind this writer
        resource.acquire()
        if order is not None:
            order.release()
        ctx.log.info("enter_write", round=round_)
        ctx.sleep(ctx.draw(p.write))
        ctx.log.info("exit_write", round=round_)
        resource.release()


def _primitives(p: Params) -> dict[str, PrimSpec[Any]]:
    prims: dict[str, PrimSpec[Any]] = {
        "mutex": Lock(),
        # A semaphore, not a Lock: the reader that releases it is often not the one that took it.
        "resource": Semaphore(1),
        "read_count": Value("i", 0, lock=False),  # guarded by mutex
    }
    if p.policy == "fair":
        prims["order"] = Lock()
    return prims


_ACCESS = frozenset({"enter_read", "exit_read", "enter_write", "exit_write"})


class Exclusion(Check):
    """A writer is never in the resource together with anybody; readers may share it."""

    name = "a writer is alone in the resource"
    events = _ACCESS

    def __init__(self) -> None:
        super().__init__()
        self._readers: set[str] = set()
        self._writers: set[str] = set()
        self._entries = 0
        self._most_readers = 0

    def on_line(self, line: Line) -> None:
        kind, actor = line.event, line.actor
        if kind == "exit_read":
            self._readers.discard(actor)
        elif kind == "exit_write":
            self._writers.discard(actor)
        else:
            self._entries += 1
            inside = self._writers if kind == "enter_read" else self._writers | self._readers
            others = sorted(inside)
            if others:
                self.problems.add(
                    f"{actor} entered ({kind}) at {line.ts:.4f} s while {', '.join(others)} "
                    f"{'was' if len(others) == 1 else 'were'} inside"
                )
            (self._readers if kind == "enter_read" else self._writers).add(actor)
            self._most_readers = max(self._most_readers, len(self._readers))

    def verdict(self) -> Verdict:
        if not self._entries:
            return self.skip("nobody entered the resource")
        ok = f"{self._entries} entries; up to {self._most_readers} readers at once, writers alone"
        return self.result(ok)


class WriterWaitBound(Check):
    """No write waits longer than ``writer_wait_bound`` minutes for the resource."""

    phenomenon = "writer_starvation"
    events = frozenset({"want_write", "enter_write", "enter_read"})

    def __init__(self, bound: float, minutes: Any) -> None:
        super().__init__()
        self.name = f"no writer waits over {bound:g} sim min"
        self._bound = bound
        self._minutes = minutes
        self._wanted: dict[str, tuple[float, int]] = {}  # writer -> (ts, reads entered so far)
        self._reads = 0
        self._writes = 0
        self._starved: list[tuple[float, str, float, int]] = []

    def on_line(self, line: Line) -> None:
        kind, actor, ts = line.event, line.actor, line.ts
        if kind == "enter_read":
            self._reads += 1
        elif kind == "want_write":
            self._wanted[actor] = (ts, self._reads)
        else:
            self._writes += 1
            since, reads_then = self._wanted.pop(actor, (ts, self._reads))
            wait = self._minutes(ts - since)
            if wait > self._bound:
                self._starved.append((wait, actor, since, self._reads - reads_then))

    def verdict(self) -> Verdict:
        if not self._writes:
            return self.skip("no write got in")
        if not self._starved:
            ok = f"{self._writes} writes, none waited over {self._bound:g} sim min"
            return Verdict(self.name, "pass", ok, self.phenomenon)
        wait, actor, since, reads = max(self._starved)
        detail = (
            f"writers starved: {len(self._starved)} of {self._writes} writes waited over "
            f"{self._bound:g} sim min; the longest, {actor} from {since:.3f} s, waited "
            f"{wait:.0f} sim min while {reads} reads got in ahead of it: as long as one reader "
            "is inside, the next reader may join, and the writer never gets its turn"
        )
        return Verdict(self.name, "fail", detail, self.phenomenon)


class EveryAccessDone(Check):
    """Every reader read ``reads`` times and every writer wrote ``writes`` times."""

    name = "every read and write done"
    needs_completion = True
    events = frozenset({"exit_read", "exit_write"})

    def __init__(self, expected: dict[str, int]) -> None:
        super().__init__()
        self._expected = expected
        self._done: Counter[str] = Counter(dict.fromkeys(expected, 0))

    def on_line(self, line: Line) -> None:
        self._done[line.actor] += 1

    def verdict(self) -> Verdict:
        if not self._expected:
            return self.skip("no actors")
        for a, n in sorted(self._expected.items()):
            if self._done[a] != n:
                self.problems.add(f"{a}: {self._done[a]} of {n}")
        return self.result(f"{sum(self._done.values())} accesses")


class ReadersWritersAnalysis(Analysis[Params]):
    """Waits of readers and writers, and how many read at once, from the domain events."""

    events = _ACCESS | {"want_read", "want_write"}

    def __init__(self, config: RunConfig[Params], history: History) -> None:
        super().__init__(config, history)
        p = self.params
        self._wanted: dict[str, float] = {}
        self._waits: dict[str, list[float]] = {"read": [], "write": []}
        self._reading: set[str] = set()
        self._most = 0
        expected = {a.name: p.reads if a.role is reader else p.writes for a in _actors(p)}
        self._checks: list[Check] = [
            Exclusion(),
            WriterWaitBound(p.writer_wait_bound, self.minutes),
            EveryAccessDone(expected),
        ]

    def on_line(self, line: Line) -> None:
        kind, actor, ts = line.event, line.actor, line.ts
        what = kind.partition("_")[2]
        if kind.startswith("want_"):
            self._wanted[actor] = ts
        elif kind.startswith("enter_"):
            self._waits[what].append(self.minutes(ts - self._wanted.pop(actor, ts)))
            if what == "read":
                self._reading.add(actor)
                self._most = max(self._most, len(self._reading))
        elif kind == "exit_read":
            self._reading.discard(actor)

    def metrics(self) -> dict[str, Any]:
        bound = self.params.writer_wait_bound
        return {
            "reads": len(self._waits["read"]),
            "writes": len(self._waits["write"]),
            "readers_max": self._most,
            **describe(self._waits["write"], "writer_wait"),
            "starved_writes": sum(w > bound for w in self._waits["write"]),
            **describe(self._waits["read"], "reader_wait"),
        }

    def checks(self) -> list[Check]:
        return list(self._checks)


def _actors(p: Params) -> list[Actor]:
    return numbered("reader", p.readers, reader) + numbered("writer", p.writers, writer)


scenario = Scenario(
    name="readers_writers",
    description="Readers-writers: readers-preference starves the writers, a turnstile is fair",
    params=Params,
    primitives=_primitives,
    actors=_actors,
    analysis=ReadersWritersAnalysis,
    states=States(
        on={
            "want_read": "want read",
            "enter_read": "reading",
            "exit_read": "thinking",
            "want_write": "want write",
            "enter_write": "writing",
            "exit_write": "thinking",
        },
        start={"reader": "thinking", "writer": "thinking"},
        tones={
            "want read": "asking",
            "want write": "asking",
            "reading": "using",
            "writing": "using",
            "thinking": "idle",
        },
    ),
    metrics=(
        Metric("reads", "reads"),
        Metric("writes", "writes"),
        Metric("readers_max", "readers inside at once, max"),
        *Metric.stats("writer_wait", "writer wait", "sim min"),
        Metric("starved_writes", "writes waiting over the bound"),
        *Metric.stats("reader_wait", "reader wait", "sim min"),
    ),
    phenomena={
        "writer_starvation": "a writer waits longer than writer_wait_bound while readers, "
        "overlapping one another, keep the resource busy"
    },
)
