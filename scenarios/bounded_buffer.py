"""The bounded buffer: producers and consumers share ``capacity`` slots, guarded by a Condition.

The buffer is the textbook ring: a shared ``Array`` ``slots`` of ``capacity`` integers, and
shared Values ``count`` (items in the buffer), ``in`` (the next slot to fill) and ``out`` (the
next slot to empty). Every access happens while holding the Condition ``cond``:

- a producer makes an item (``produce`` minutes, outside the lock), takes the lock, waits while
  the buffer is full, writes the item to ``slots[in]``, advances ``in``, increments ``count``,
  calls ``notify_all`` and releases the lock;
- a consumer takes the lock, waits while the buffer is empty, takes ``slots[out]`` (and clears
  the slot to 0), advances ``out``, decrements ``count``, calls ``notify_all``, releases the
  lock and works on the item (``consume`` minutes).

One Condition serves both kinds of waiter, so ``notify_all`` wakes producers and consumers
alike; each must check its condition again when it wakes, which is why the wait is in a
``while`` loop. ``guard = "if"`` checks only once before waiting: a consumer woken by
``notify_all`` takes from the buffer although another consumer, woken by the same call, has
already emptied it. The buffer underflows (or, for producers, overflows).

Producer ``i``'s item ``n`` is the number ``1000 * (i + 1) + n`` (so 0 means an empty slot).
Consumers take a fixed share of all items each, so the run ends without end markers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec

from sim import (
    Actor,
    Analysis,
    Array,
    Check,
    Condition,
    Ctx,
    Duration,
    History,
    Line,
    LoggedCondition,
    Metric,
    Operation,
    PrimSpec,
    RunConfig,
    Scenario,
    States,
    TimeWeighted,
    Value,
    Verdict,
    describe,
)
from sim import actors as numbered
from sim.queueing import bounded_buffer
from sim.steady import Estimate, Window, steady_metrics

COND = "cond"
PHENOMENON = "out_of_bounds"


class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The buffer's parameters; durations in simulated minutes."""

    capacity: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 4
    producers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    consumers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    items: Annotated[int, msgspec.Meta(ge=0, le=999)] = 20  # per producer
    produce: Duration = Duration(dist="exponential", mean=1.0)  # make one item, unlocked
    consume: Duration = Duration(dist="exponential", mean=1.0)  # work on one item, unlocked
    # How a waiter re-checks its condition after waking: "while" (correct) or "if" (the bug).
    guard: Literal["while", "if"] = "while"
    # Minutes after the last actor's start before the steady window opens; none: ten times
    # the longer of the two mean durations.
    warmup: Annotated[float, msgspec.Meta(ge=0)] | None = None


def item_id(producer: int, n: int) -> int:
    """Producer ``producer``'s item ``n`` as the number stored in a slot (never 0)."""
    return 1000 * (producer + 1) + n


def _wait_until(ctx: Ctx[Params], cond: LoggedCondition, ready: Callable[[], bool]) -> None:
    """Wait on ``cond`` until ``ready()``: the guard the ``guard`` parameter chooses."""
    if ctx.params.guard == "while":
        while not ready():
            cond.wait()
    elif not ready():
        cond.wait()  # the bug: after waking, nobody checks ready() again


def producer(ctx: Ctx[Params]) -> None:
    """Make ``items`` items and put each into the buffer, waiting while it is full."""
    p = ctx.params
    cond, slots = ctx.prim(COND, Condition), ctx.prim("slots", Array)
    count, at = ctx.prim("count", Value), ctx.prim("in", Value)
    for n in range(p.items):
        ctx.sleep(ctx.draw(p.produce), "produce")
        item = item_id(ctx.index, n)
        with cond:
            _wait_until(ctx, cond, lambda: count.value < p.capacity)
            i = at.value
            slots[i] = item
            at.value = (i + 1) % p.capacity
            count.value += 1
            ctx.log.info("put", item=item, slot=i, count=count.value)
            cond.notify_all()


def consumer(ctx: Ctx[Params]) -> None:
    """Take this consumer's share of the items, waiting while the buffer is empty."""
    p = ctx.params
    cond, slots = ctx.prim(COND, Condition), ctx.prim("slots", Array)
    count, at = ctx.prim("count", Value), ctx.prim("out", Value)
    for _ in range(_share(p, ctx.index - p.producers)):
        with cond:
            _wait_until(ctx, cond, lambda: count.value > 0)
            i = at.value
            item = slots[i]
            slots[i] = 0
            at.value = (i + 1) % p.capacity
            count.value -= 1
            ctx.log.info("take", item=item, slot=i, count=count.value)
            cond.notify_all()
        ctx.sleep(ctx.draw(p.consume), "consume")


def _share(p: Params, consumer: int) -> int:
    """How many items consumer number ``consumer`` takes: all items, split as evenly as can be."""
    total = p.producers * p.items
    return total // p.consumers + (1 if consumer < total % p.consumers else 0)


def _primitives(p: Params) -> dict[str, PrimSpec[Any]]:
    # lock=False: the Values and the Array are raw shared memory; the Condition is the one lock.
    return {
        COND: Condition(),
        "slots": Array("i", p.capacity, lock=False),
        "count": Value("i", 0, lock=False, bounds=(0, p.capacity)),
        "in": Value("i", 0, lock=False),
        "out": Value("i", 0, lock=False),
    }


def _actors(p: Params) -> list[Actor]:
    # Producers first: a producer's ctx.index is its producer number.
    return [*numbered("producer", p.producers, producer), *numbered("consumer", p.consumers,
                                                                   consumer)]  # fmt: skip


class InBounds(Check):
    """Every value written to ``count`` lies in 0 .. capacity: no overflow, no underflow."""

    phenomenon = PHENOMENON
    prims = frozenset({"count", COND})

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.name = f"buffer never over- or underflows (0 <= count <= {capacity})"
        self._writes = 0
        self._low = self._high = 0
        self._bad: list[tuple[str, float, int, bool]] = []  # actor, ts, value, fresh from wait
        self._last_cond: dict[str, str] = {}  # actor -> its last op on the condition

    def on_invoke(self, op: Operation) -> None:
        if op.prim == COND:
            self._last_cond[op.actor] = f"{op.name}/invoke"

    def on_op(self, op: Operation) -> None:
        done = op.done
        if done is None:
            return
        if op.prim == COND:
            self._last_cond[op.actor] = f"{op.name}/{done.phase}"
            return
        if op.name != "write" or done.phase != "ok":
            return
        value = int(done.value)
        self._writes += 1
        self._low, self._high = min(self._low, value), max(self._high, value)
        if not 0 <= value <= self.capacity:
            woke = self._last_cond.get(op.actor) == "wait/ok"
            self._bad.append((op.actor, done.ts, value, woke))
            # Counted as found now, so that a display shows it at the step it happened.
            self.problems.add(lambda: self._said(*self._bad[-1]))

    def _said(self, actor: str, ts: float, value: int, woke: bool) -> str:
        under = value < 0
        what = "underflow" if under else "overflow"
        did = "took from an empty" if under else "put into a full"
        why = (
            ": it had been woken by notify_all and did not check the condition again (if "
            "instead of while), while another waiter woken by the same call got there first"
            if woke
            else ""
        )
        return f"buffer {what}: count went to {value} at {ts:.3f} s when {actor} {did} buffer{why}"

    def verdict(self) -> Verdict:
        if not self._writes:
            return Verdict(self.name, "skip", "count was never written", self.phenomenon)
        if not self._bad:
            ok = f"{self._writes} updates, count stayed within {self._low} .. {self._high}"
            return Verdict(self.name, "pass", ok, self.phenomenon)
        detail = (
            f"{self._said(*self._bad[0])}; {len(self._bad)} of {self._writes} updates out of "
            "bounds, count ranged "
            f"{self._low} .. {self._high} (capacity {self.capacity})"
        )
        return Verdict(self.name, "fail", detail, self.phenomenon)


class TakenOnceInOrder(Check):
    """Every item put was taken exactly once, in the order put (the ring is FIFO under the
    lock), and no take found an empty slot."""

    name = "every item taken once, in the order put"
    phenomenon = PHENOMENON
    needs_completion = True
    events = frozenset({"put", "take"})

    def __init__(self) -> None:
        super().__init__()
        self._puts: list[int] = []
        self._takes: list[tuple[str, int]] = []

    def on_line(self, line: Line) -> None:
        if line.event == "put":
            self._puts.append(int(line.item))
        else:
            self._takes.append((line.actor, int(line.item)))

    def verdict(self) -> Verdict:
        if not self._puts:
            return Verdict(self.name, "skip", "nothing was put", self.phenomenon)
        empty = [a for a, item in self._takes if item == 0]
        taken = Counter(item for _, item in self._takes if item != 0)
        twice = sorted(i for i, c in taken.items() if c > 1)
        never = [i for i in self._puts if i not in taken]
        if empty:
            self.problems.add(f"{len(empty)} takes found an empty slot (first by {empty[0]})")
        if twice:
            self.problems.add(f"{len(twice)} items taken twice or more (first {twice[0]})")
        if never:
            self.problems.add(f"{len(never)} items never taken (first {never[0]})")
        if not self.problems and [i for _, i in self._takes] != self._puts:
            self.problems.add("items were taken in another order than they were put")
        return self.result(f"{len(self._puts)} items, each taken once, in the order put")


class BoundedBufferAnalysis(Analysis[Params]):
    """Fill level, and waits on full (producers) and on empty (consumers), from the log; and
    the steady window, in which the buffer is the birth-death chain of
    :func:`sim.queueing.bounded_buffer` while every actor still has work."""

    prims = frozenset({"count", COND})
    events = frozenset({"put", "take", "actor_start", "actor_end"})

    def __init__(self, config: RunConfig[Params], history: History) -> None:
        super().__init__(config, history)
        p = self.params
        self._fill = TimeWeighted()
        self._level = 0
        self._end = 0.0
        self._waits: dict[str, list[float]] = {"producer": [], "consumer": []}
        self._woke: set[str] = set()  # actors back from a wait, not yet done with an item
        self._futile = 0
        self._taken = 0
        self._checks: list[Check] = [InBounds(p.capacity), TakenOnceInOrder()]
        actors = _actors(p)
        self._producers = frozenset(a.name for a in actors[: p.producers])
        # How many items each actor handles before it stops: the window closes when the first
        # of them is done (a producer put its last item, a consumer took its share).
        self._left = {a.name: p.items for a in actors[: p.producers]}
        self._left.update({a.name: _share(p, i) for i, a in enumerate(actors[p.producers :])})
        warm = p.warmup if p.warmup is not None else 10.0 * max(p.produce.mean, p.consume.mean)
        self._window = Window([a.name for a in actors], warm * 60.0 / config.clock.speedup,
                              per_second=self.minutes(1.0), what="puts")  # fmt: skip
        # Producers that found the buffer full and have not put yet: one arriving meanwhile
        # finds it full too. And when each actor's item began: a producer's arrival with its
        # item (its acquire of the lock), a consumer's asking for one.
        self._blocked = 0
        self._arrived: dict[str, tuple[float, bool, bool]] = {}
        self._busy: set[str] = set()  # consumers working on an item

    def on_line(self, line: Line) -> None:
        event, actor, ts = line.event, line.actor, line.ts
        if event == "actor_start":
            self._window.started(actor, ts)
            return
        if event == "actor_end":
            if actor in self._busy:
                self._busy.discard(actor)
                self._window.level("busy", ts, len(self._busy))
            return
        self._woke.discard(actor)
        self._taken += event == "take"
        self._end = ts
        start, inside, full = self._arrived.pop(actor, (ts, False, False))
        if event == "put":
            self._blocked -= full
            if inside:
                self._window.add("full", 1.0 if full else 0.0)
                self._window.add("wait_full", self.minutes(ts - start))
        else:
            if inside:
                self._window.add("wait_empty", self.minutes(ts - start))
            self._busy.add(actor)
            self._window.level("busy", ts, len(self._busy))
        self._left[actor] = self._left.get(actor, 0) - 1
        if self._left[actor] == 0:
            self._window.close(ts, f"{actor} handled its last item")

    def on_invoke(self, op: Operation) -> None:
        if op.prim != COND:
            return
        if op.name == "wait" and op.actor in self._woke:
            self._futile += 1  # woken, found the condition still false, waits again
        if op.name != "acquire":
            return
        actor = op.actor
        if actor in self._producers:
            full = self._level >= self.params.capacity or self._blocked > 0
            self._blocked += full
            self._arrived[actor] = (op.start, self._window.arrival(op.start), full)
        else:
            if actor in self._busy:
                self._busy.discard(actor)
                self._window.level("busy", op.start, len(self._busy))
            self._arrived[actor] = (op.start, self._window.contains(op.start), False)

    def on_op(self, op: Operation) -> None:
        done = op.done
        if done is None:
            return
        if op.prim == "count":
            if op.name == "write" and done.phase == "ok":
                self._fill.change(done.ts, int(done.value) - self._level)
                self._level = int(done.value)
                self._window.level("fill", done.ts, self._level)
        elif op.name == "wait":
            role = op.actor.split("-")[0]
            self._waits.setdefault(role, []).append(self.minutes(done.ts - op.start))
            self._woke.add(op.actor)

    def metrics(self) -> dict[str, Any]:
        full, empty = self._waits["producer"], self._waits["consumer"]
        self._window.finish(self.history.actor_now)
        # Under the ``if`` bug the count leaves its bounds: no estimate may assume them.
        bounded = self.params.guard == "while"
        return {
            "taken": self._taken,
            "fill_mean": self._fill.mean(self._end),
            "fill_max": int(self._fill.maximum),
            "waits_full": len(full),
            **describe(full, "wait_full"),
            "waits_empty": len(empty),
            **describe(empty, "wait_empty"),
            "futile_wakeups": self._futile,
            **self._window.metrics(
                {
                    "steady_p_full": Estimate("full", upper=1.0),
                    "steady_wait_full": Estimate("wait_full"),
                    "steady_wait_empty": Estimate("wait_empty"),
                    "steady_fill_mean": Estimate("fill", "level", lower=0.0 if bounded else None),
                    "steady_utilisation": Estimate(
                        "busy", "level", upper=1.0, scale=1.0 / self.params.consumers
                    ),
                }
            ),
        }

    def checks(self) -> list[Check]:
        return list(self._checks)


def _theory(p: Params) -> dict[str, float]:
    """The bounded buffer's birth-death chain, where its assumptions hold: exponential times
    and the correct (``while``) guard."""
    if p.produce.dist != "exponential" or p.consume.dist != "exponential" or p.guard != "while":
        return {}
    if p.produce.mean <= 0 or p.consume.mean <= 0:
        return {}
    model = bounded_buffer(p.producers, p.consumers, p.capacity, p.produce.mean, p.consume.mean)
    return {
        "steady_p_full": model.p_full,
        "steady_wait_full": model.wait_full_mean,
        "steady_wait_empty": model.wait_empty_mean,
        "steady_fill_mean": model.fill_mean,
        "steady_utilisation": model.utilisation,
    }


scenario = Scenario(
    name="bounded_buffer",
    description="Producers and consumers share a fixed-size buffer guarded by a Condition",
    params=Params,
    primitives=_primitives,
    actors=_actors,
    analysis=BoundedBufferAnalysis,
    states=States(
        on={"put": "producing", "take": "consuming"},
        start={"producer": "producing", "consumer": "consuming"},
        tones={"producing": "idle", "consuming": "idle"},
    ),
    metrics=(
        Metric("taken", "items taken"),
        Metric("fill_mean", "buffer fill, mean", "items"),
        Metric("fill_max", "buffer fill, max", "items"),
        Metric("waits_full", "waits on full (producers)"),
        *Metric.stats("wait_full", "wait on full", "sim min", show=("mean", "max")),
        Metric("waits_empty", "waits on empty (consumers)"),
        *Metric.stats("wait_empty", "wait on empty", "sim min", show=("mean", "max")),
        Metric("futile_wakeups", "woken, condition still false, waited again"),
        *steady_metrics(
            Metric("steady_p_full", "steady state: P(a put finds it full)", "%"),
            Metric("steady_wait_full", "steady state: wait on full per put", "sim min", lower=0.0),
            Metric(
                "steady_wait_empty", "steady state: wait on empty per take", "sim min", lower=0.0
            ),
            Metric("steady_fill_mean", "steady state: buffer fill, mean", "items"),
            Metric("steady_utilisation", "steady state: consumers busy", "%"),
        ),
    ),
    theory=lambda config: _theory(config.params),
    phenomena={
        PHENOMENON: "the buffer over- or underflowed: a waiter woken by notify_all did not "
        "check its condition again (if instead of while)",
    },
)
