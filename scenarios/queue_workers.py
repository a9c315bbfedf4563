"""Producers and consumers on one ``multiprocessing.Queue`` (or a ``JoinableQueue``).

Each of ``producers`` producers puts ``items`` items ``{"producer": i, "n": n}`` into the queue
``jobs``, one every ``produce`` minutes. Each of ``consumers`` consumers gets items and works on
each for ``consume`` minutes. The queue hands every item to exactly one consumer, and keeps each
producer's items in the order they were put.

The clean end: nobody knows when *all* producers are done, so each producer, after its last
item, puts one end marker ``{"producer": i, "end": true}`` per consumer, into the same queue.
A consumer stops once it has got as many end markers as there are producers (from whichever
producers). A producer's markers come after all its items (FIFO per producer), so once every
marker has been got, every item has been got: each consumer stops, none too early.

``variant = "joinable"`` uses a JoinableQueue: consumers call ``task_done`` after each item
(and each marker), and each producer, after its last item, calls ``join``, which returns once
every item put so far, by anyone, has been marked done. It logs ``all_done`` before it puts its
end markers.
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
    Handled,
    History,
    JoinableQueue,
    Line,
    Metric,
    Operation,
    PrimSpec,
    Queue,
    RunConfig,
    Scenario,
    States,
    Verdict,
    describe,
)
from sim import actors as numbered
from sim.kinds.queue import QueueModel
from sim.queueing import mmc
from sim.steady import Estimate, Window, steady_metrics

JOBS = "jobs"


class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The workers' parameters; durations in simulated minutes."""

    producers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 3
    consumers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    items: Annotated[int, msgspec.Meta(ge=0)] = 20  # per producer
    # 0: unbounded. Otherwise a put waits while the queue holds maxsize items.
    maxsize: Annotated[int, msgspec.Meta(ge=0)] = 0
    variant: Literal["queue", "joinable"] = "queue"
    produce: Duration = Duration(dist="exponential", mean=1.0)  # before each put
    consume: Duration = Duration(dist="exponential", mean=1.5)  # work on one item
    # Minutes after the last actor's start before the steady window opens; none: ten mean
    # times of work on one item.
    warmup: Annotated[float, msgspec.Meta(ge=0)] | None = None


def producer(ctx: Ctx[Params]) -> None:
    """Put ``items`` numbered items; (joinable: wait until all work is done); end markers."""
    p = ctx.params
    jobs = ctx.prim(JOBS, Queue)
    for n in range(p.items):
        ctx.sleep(ctx.draw(p.produce), "produce")
        jobs.put({"producer": ctx.index, "n": n})
    if p.variant == "joinable":
        # join() waits until every item put so far (by anyone) is marked done, not just ours.
        began = ctx.now()
        jobs.join()
        ctx.log.info("all_done", waited=ctx.now() - began)
    for _ in range(p.consumers):
        jobs.put({"producer": ctx.index, "end": True})


def consumer(ctx: Ctx[Params]) -> None:
    """Get and work on items until as many end markers as producers have come."""
    p = ctx.params
    jobs = ctx.prim(JOBS, Queue)
    ends = 0
    while ends < p.producers:
        item = jobs.get()
        if item.get("end"):
            ends += 1
        else:
            ctx.sleep(ctx.draw(p.consume), "consume")
            ctx.log.info("handled", producer=item["producer"], n=item["n"])
        if p.variant == "joinable":
            jobs.task_done()
    ctx.log.info("stop", ends=ends)


def _primitives(p: Params) -> dict[str, PrimSpec[Any]]:
    kind = JoinableQueue if p.variant == "joinable" else Queue
    return {JOBS: kind(p.maxsize)}


def _actors(p: Params) -> list[Actor]:
    # Producers first: a producer's ctx.index is its producer number.
    return [*numbered("producer", p.producers, producer), *numbered("consumer", p.consumers,
                                                                   consumer)]  # fmt: skip


class EveryItemHandledOnce(Check):
    """Every item of every producer was handled by exactly one consumer, exactly once."""

    name = "every item handled exactly once"
    needs_completion = True
    events = frozenset({"handled"})
    prims = frozenset({JOBS})

    def __init__(self, p: Params) -> None:
        super().__init__()
        self._expected = {(i, n) for i in range(p.producers) for n in range(p.items)}
        self._handled: Counter[tuple[int, int]] = Counter()
        self._got_by: dict[tuple[int, int], str] = {}

    def on_line(self, line: Line) -> None:
        self._handled[(line["producer"], line["n"])] += 1

    def on_op(self, op: Operation) -> None:
        item = op.item if op.name == "get" and op.ok else None
        if isinstance(item, dict) and "n" in item:
            self._got_by[(item["producer"], item["n"])] = op.actor

    def verdict(self) -> Verdict:
        if not self._expected:
            return self.skip("no items")
        twice = sorted(k for k, c in self._handled.items() if c > 1)
        missing = sorted(self._expected - set(self._handled))
        # What a consumer hit by a declared fault took with it is the lost-item check's to
        # report; here it is only counted.
        faulted = self.history.faulted
        taken = [k for k in missing if self._got_by.get(k) in faulted]
        missing = [k for k in missing if k not in taken]
        stray = sorted(set(self._handled) - self._expected)
        shown = [f"producer {i}'s item {n} handled {self._handled[(i, n)]} times"
                 for i, n in twice[:3]]  # fmt: skip
        shown += [f"producer {i}'s item {n} never handled" for i, n in missing[:3]]
        shown += [f"producer {i}'s item {n} was never produced" for i, n in stray[:3]]
        self.problems.extend(shown[:3])
        self.problems.count = len(twice) + len(missing) + len(stray)
        ok = f"{len(self._expected) - len(taken)} items, each handled once"
        return self.result(ok + (f"; {len(taken)} lost with a consumer hit by a fault"
                                 if taken else ""))  # fmt: skip


class HandledInOrder(Check):
    """With one consumer, each producer's items are handled in the order they were put.

    With several consumers this is not promised, and the check skips: the queue hands items
    out in order, but two consumers work at the same time, and the one that got the later item
    may finish first (the ``overtaken`` metric counts how often that happened).
    """

    name = "one consumer: each producer's items handled in put order"
    events = frozenset({"handled"})

    def __init__(self, p: Params) -> None:
        super().__init__()
        self._consumers = p.consumers
        self._last: dict[int, int] = {}
        self._seen = 0

    def on_line(self, line: Line) -> None:
        self._seen += 1
        producer, n = line["producer"], line["n"]
        last = self._last.get(producer, -1)
        if n < last:
            self.problems.add(f"producer {producer}'s item {n} handled after its item {last}")
        self._last[producer] = max(last, n)

    def verdict(self) -> Verdict:
        if self._consumers != 1:
            return self.skip(f"{self._consumers} consumers: order not promised")
        if not self._seen:
            return self.skip("nothing handled")
        return self.result(f"{self._seen} items, in order")


def _is_end(item: Any) -> bool:
    return isinstance(item, dict) and bool(item.get("end"))


class QueueWorkersAnalysis(Analysis[Params]):
    """Queue length, time in the queue, who handled what, and the joins, from the history;
    and the steady window, in which the queue is M/M/c while every producer still puts."""

    prims = frozenset({JOBS})
    events = frozenset({"handled", "all_done", "actor_start"})

    def __init__(self, config: RunConfig[Params], history: History) -> None:
        super().__init__(config, history)
        p = self.params
        self._end = 0.0
        self._length = history.level(JOBS, "length")
        self._joins = history.waits(JOBS, "join")
        self._per_consumer: Counter[str] = Counter({a.name: 0 for a in _actors(p)
                                                    if a.name.startswith("consumer")})  # fmt: skip
        self._last_n: dict[int, int] = {}
        self._overtaken = 0
        self._all_done: float | None = None
        self._checks: list[Check] = [EveryItemHandledOnce(p), HandledInOrder(p)]
        # The steady window opens a warm-up after the last actor's start and closes when the
        # first producer puts its last item (from then on fewer items arrive).
        warm = p.warmup if p.warmup is not None else 10.0 * p.consume.mean
        self._window = Window([a.name for a in _actors(p)], warm * 60.0 / config.clock.speedup,
                              per_second=self.minutes(1.0), what="items put")  # fmt: skip
        self._busy = 0  # consumers working on an item
        self._queued = 0.0
        history.follow(JOBS, "length", self._length_changed)
        self._inside: set[Operation] = set()  # puts in the window

    def on_invoke(self, op: Operation) -> None:
        self._end = max(self._end, op.start)
        if op.name != "put" or _is_end(op.invoke.item):
            return
        if self._window.arrival(op.start):
            self._inside.add(op)
            # The item waits if every consumer works, or as many items are ahead of it.
            found_busy = self._busy + self._queued >= self.params.consumers
            self._window.add("busy", 1.0 if found_busy else 0.0)
        item = op.invoke.item
        if isinstance(item, dict) and item.get("n") == self.params.items - 1:
            self._window.close(op.start, "the first producer put its last item")

    def on_op(self, op: Operation) -> None:
        self._end = max(self._end, op.end or op.start)
        if op.name == "get" and op.ok and not _is_end(op.item):
            self._busy += 1
            self._window.level("busy", op.end or op.start, self._busy)

    def _length_changed(self, ts: float, length: float) -> None:
        self._queued = length
        self._window.level("length", ts, length)

    def on_line(self, line: Line) -> None:
        if line.event == "actor_start":
            self._window.started(line.actor, line.ts)
            return
        if line.event == "all_done":
            self._all_done = line.ts
            return
        self._busy -= 1
        self._window.level("busy", line.ts, self._busy)
        self._per_consumer[line.actor] += 1
        # Overtaken: a later item of the same producer was handled before this one.
        producer, n = line["producer"], line["n"]
        if n < self._last_n.get(producer, -1):
            self._overtaken += 1
        self._last_n[producer] = max(self._last_n.get(producer, -1), n)

    def metrics(self) -> dict[str, Any]:
        model = self.history.model(JOBS)
        assert isinstance(model, QueueModel)
        real = [t for t in model.ledger.transits if not _is_end(t.item)]
        in_queue = [
            self.minutes(max(0.0, t.get_ok - t.put_ok))
            for t in real
            if t.get_ok is not None and t.put_ok is not None
        ]
        for t in real:
            if t.put in self._inside and t.get_ok is not None and t.put_ok is not None:
                self._window.add("wait", self.minutes(max(0.0, t.get_ok - t.put_ok)))
        self._window.finish(self.history.actor_now)
        shares = [self._per_consumer[c] for c in sorted(self._per_consumer)]
        found: dict[str, Any] = {
            "items": sum(1 for t in real if t.got),
            "handled_per_consumer": " / ".join(str(n) for n in shares),
            "overtaken": self._overtaken,
            "queue_len_max": int(self._length.maximum),
            "queue_len_mean": self._length.mean(self._end),
            **describe(in_queue, "in_queue"),
        }
        if self.params.variant == "joinable":
            found.update(describe(self._joins.all, "join_wait", scale=self.minutes(1.0)))
            found["all_done_s"] = self._all_done
        found.update(
            self._window.metrics(
                {
                    "steady_wait_mean": Estimate("wait"),
                    "steady_p_wait": Estimate("busy", upper=1.0),
                    "steady_queue_mean": Estimate("length", "level"),
                    "steady_utilisation": Estimate(
                        "busy", "level", upper=1.0, scale=1.0 / self.params.consumers
                    ),
                }
            )
        )
        return found

    def checks(self) -> list[Check]:
        return list(self._checks)


def _theory(p: Params) -> dict[str, float]:
    """M/M/c, where its assumptions hold: exponential times, an unbounded queue, and fewer
    items arriving than the consumers can handle (otherwise there is no steady state)."""
    if p.produce.dist != "exponential" or p.consume.dist != "exponential" or p.maxsize:
        return {}
    if p.produce.mean <= 0 or p.consume.mean <= 0:
        return {}
    rate = p.producers / p.produce.mean
    if rate * p.consume.mean >= p.consumers:
        return {}
    model = mmc(rate, p.consume.mean, p.consumers)
    return {
        "steady_wait_mean": model.wait_mean,
        "steady_p_wait": model.p_wait,
        "steady_queue_mean": model.queue_mean,
        "steady_utilisation": model.utilisation,
    }


scenario = Scenario(
    name="queue_workers",
    description="Producers and consumers share a Queue (or JoinableQueue with task_done/join)",
    params=Params,
    primitives=_primitives,
    actors=_actors,
    analysis=QueueWorkersAnalysis,
    # An item is dealt with once its consumer logs "handled" with its producer and number.
    handled={JOBS: Handled("handled", ("producer", "n"))},
    states=States(
        on={"handled": "idle", "all_done": "finishing"},
        tones={"idle": "idle", "finishing": "using"},
    ),
    metrics=(
        Metric("items", "items got from the queue"),
        Metric("handled_per_consumer", "items per consumer", words=True),
        Metric("overtaken", "items handled after a later item of their producer"),
        Metric("queue_len_max", "queue length, max", "items"),
        Metric("queue_len_mean", "queue length, mean", "items"),
        *Metric.stats("in_queue", "time in the queue", "sim min"),
        *Metric.stats("join_wait", "join waited", "sim min", show=("mean", "max")),
        Metric("all_done_s", "last join returned at", "s", lower=0.0),
        *steady_metrics(
            Metric(
                "steady_wait_mean", "steady state: time in the queue, mean", "sim min", lower=0.0
            ),
            Metric("steady_p_wait", "steady state: P(every consumer busy)", "%"),
            Metric("steady_queue_mean", "steady state: queue length, mean", "items", lower=0.0),
            Metric("steady_utilisation", "steady state: consumers busy", "%"),
        ),
    ),
    theory=lambda config: _theory(config.params),
)
