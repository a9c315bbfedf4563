"""A shared counter: ``processes`` processes each add 1 to it ``increments`` times.

The counter lives in shared memory: a ``multiprocessing.Value``, an ``Array`` (every process
increments every slot) or a raw ``multiprocessing.shared_memory`` block of 64-bit slots.
``v.value += 1`` is two operations, a read and then a write; ``work`` minutes pass in between
(the time a real program spends computing the new value), which is the window in which another
process can write. ``lock`` decides what protects the counter:

``none``: nothing. Two processes read the same value, both write value + 1: one update is lost.
``value``: a synchronized ``Value(lock=True)``, still ``v.value += 1``. Each read and each write
takes the lock on its own, so nothing stops another process between them: updates are still
lost. (For a shared-memory block, which has no lock of its own, the scenario takes the ``mutex``
Lock around each read and each write separately, which is exactly what a synchronized Value
does.)
``explicit``: ``with v.get_lock(): v.value += 1`` (the ``mutex`` Lock for a shared-memory
block): the read and the write happen inside one critical section. Nothing is lost.

A ``barrier`` starts all workers at once and, when all are done, lets the ``auditor`` read the
final value, so the result is in the log. Lost updates = expected - final, exactly.
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any, Literal

import msgspec

from sim import (
    Actor,
    Analysis,
    Array,
    Barrier,
    Check,
    Ctx,
    History,
    Lock,
    Metric,
    Operation,
    PrimSpec,
    RunConfig,
    Scenario,
    SharedMemory,
    Value,
    Verdict,
    describe,
)
from sim import actors as numbered
from sim.kinds.shared import ReadModifyWrite

AUDITOR = "auditor"


class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The counter's parameters; ``work`` is in simulated minutes."""

    processes: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    increments: Annotated[int, msgspec.Meta(ge=1)] = 50
    # Where the counter lives: a Value, an Array of `slots` counters, or a SharedMemory block
    # of `slots` 64-bit integers.
    store: Literal["value", "array", "shared_memory"] = "value"
    lock: Literal["none", "value", "explicit"] = "none"
    slots: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    # Minutes between reading the counter and writing it back: the race window.
    work: Annotated[float, msgspec.Meta(ge=0)] = 0.1

    def __post_init__(self) -> None:
        if self.store == "value" and self.slots != 1:
            raise ValueError('a Value holds one number: slots must be 1 (or use store = "array")')


def _guards(
    ctx: Ctx[Params],
) -> tuple[contextlib.AbstractContextManager[Any], contextlib.AbstractContextManager[Any]]:
    """What each increment holds: (around the whole read-then-write, around each access)."""
    p, none = ctx.params, contextlib.nullcontext()
    if p.lock == "none":
        return none, none
    if p.store == "shared_memory":
        mutex = ctx.prim("mutex", Lock)
        return (mutex, none) if p.lock == "explicit" else (none, mutex)
    # A synchronized Value or Array already takes its own lock inside every single access
    # (unlogged, inside multiprocessing); "explicit" takes that same lock around both.
    if p.lock != "explicit":
        return none, none
    if p.store == "value":
        return ctx.prim("counter", Value).get_lock(), none
    return ctx.prim("counter", Array).get_lock(), none


def _counter(ctx: Ctx[Params]) -> Any:
    # A Value, an Array or a SharedMemory block: ``counter.value`` or ``counter[slot]``.
    store = {"value": Value, "array": Array, "shared_memory": SharedMemory}[ctx.params.store]
    return ctx.prim("counter", store)


def worker(ctx: Ctx[Params]) -> None:
    """Add 1 to every slot of the counter, ``increments`` times, then wait for the others."""
    p = ctx.params
    counter, barrier = _counter(ctx), ctx.prim("barrier", Barrier)
    whole, each = _guards(ctx)
    barrier.wait()  # everyone starts together, so the increments really overlap
    for _ in range(p.increments):
        for slot in range(p.slots):
            with whole:
                # This is `v.value += 1` (or `a[i] += 1`) taken apart: Python reads, adds and
                # writes back as separate steps; `work` only widens the gap between them.
                with each:
                    seen = counter.value if p.store == "value" else counter[slot]
                ctx.sleep(p.work)
                with each:
                    if p.store == "value":
                        counter.value = seen + 1
                    else:
                        counter[slot] = seen + 1
    barrier.wait()


def auditor(ctx: Ctx[Params]) -> None:
    """After every worker has finished, read the final value of each slot (into the log)."""
    p = ctx.params
    counter, barrier = _counter(ctx), ctx.prim("barrier", Barrier)
    barrier.wait()
    barrier.wait()
    final = [counter.value] if p.store == "value" else [counter[s] for s in range(p.slots)]
    expected = p.processes * p.increments
    ctx.log.info("audit", final=final, expected=expected, lost=[expected - v for v in final])


def _primitives(p: Params) -> dict[str, PrimSpec[Any]]:
    synchronized = p.lock != "none"
    counter: PrimSpec[Any]
    if p.store == "value":
        counter = Value("i", 0, lock=synchronized)
    elif p.store == "array":
        counter = Array("i", p.slots, lock=synchronized)
    else:
        counter = SharedMemory(p.slots)
    prims: dict[str, PrimSpec[Any]] = {"counter": counter, "barrier": Barrier(p.processes + 1)}
    if synchronized and p.store == "shared_memory":
        prims["mutex"] = Lock()  # a raw block has no lock of its own
    return prims


def _actors(p: Params) -> list[Actor]:
    return [*numbered("worker", p.processes, worker), Actor(AUDITOR, auditor)]


def _lost_words(expected: int, final: int, collisions: int) -> str:
    lost = expected - final
    return (
        f"lost {100 * lost / expected:.0f} % of updates ({lost} of {expected}; the counter "
        f"ended at {final}): {collisions} times two processes read the same value before "
        f"either wrote it back"
    )


class NoLostUpdates(Check):
    """The auditor's final value is every increment: processes x increments, in every slot."""

    name = "no lost updates (final value = processes x increments)"
    phenomenon = "lost_updates"
    needs_completion = True
    prims = frozenset({"counter"})

    def __init__(self, p: Params) -> None:
        super().__init__()
        self._expected = p.processes * p.increments
        self._slots = p.slots
        #: The auditor's read of each slot (``None`` for a Value), once it has read it.
        self.final: dict[Any, int] = {}

    def on_op(self, op: Operation) -> None:
        # The auditor reads only after the last barrier: its reads are the final values.
        done = op.done
        if op.actor == AUDITOR and op.name == "read" and done is not None and done.phase == "ok":
            self.final[op.invoke.index] = int(done.value)

    def verdict(self) -> Verdict:
        if len(self.final) != self._slots:
            return self.skip("the auditor did not read every slot")
        expected, final = self._expected * self._slots, sum(self.final.values())
        if final == expected:
            return Verdict(self.name, "pass", f"the counter ended at {final}, as expected",
                           self.phenomenon)  # fmt: skip
        model = self.history.model("counter")
        assert isinstance(model, ReadModifyWrite)
        detail = _lost_words(expected, final, model.collisions)
        return Verdict(self.name, "fail", detail, self.phenomenon)


class CounterAnalysis(Analysis[Params]):
    """Lost updates (exact, from the auditor's reads), collisions and lock waits, from the
    history of ``counter`` and of the lock."""

    def __init__(self, config: RunConfig[Params], history: History) -> None:
        super().__init__(config, history)
        p = self.params
        self._check = NoLostUpdates(p)
        lock = "mutex" if p.store == "shared_memory" else "counter.lock"
        self._waits = history.waits(lock, "acquire")

    def metrics(self) -> dict[str, Any]:
        p = self.params
        model = self.history.model("counter")
        assert isinstance(model, ReadModifyWrite)
        final = self._check.final
        expected = p.processes * p.increments * p.slots
        total = sum(final.values()) if len(final) == p.slots else None
        lost = None if total is None else expected - total
        return {
            "increments": model.cycles,
            "expected": expected,
            "final": total,
            "lost_updates": lost,
            "lost_share": None if lost is None else lost / expected,
            "collisions": model.collisions,
            "stale_writes": model.stale,
            **describe(self._waits.all, "lock_wait", scale=self.minutes(1.0)),
        }

    def checks(self) -> list[Check]:
        return [self._check]


scenario = Scenario(
    name="shared_counter",
    description="Processes increment a shared Value, Array or SharedMemory: lost updates unless "
    "one lock covers the read and the write",
    params=Params,
    primitives=_primitives,
    actors=_actors,
    analysis=CounterAnalysis,
    metrics=(
        Metric("increments", "increments done (read, then write)"),
        Metric("expected", "expected final value"),
        Metric("final", "final value (auditor)"),
        Metric("lost_updates", "updates lost"),
        Metric("lost_share", "updates lost, share", "%"),
        Metric("collisions", "same value read by two before either wrote"),
        Metric("stale_writes", "writes over a value not read"),
        *Metric.stats("lock_wait", "lock wait", "sim min", show=("mean", "max")),
    ),
    phenomena={
        "lost_updates": "two processes read the counter before either wrote it back, so one "
        "increment overwrote the other",
    },
)
