"""Queues (kinds ``queue``, ``joinable_queue``): items put by some processes, got by others.

The wrapper logs ``put`` with its item on every phase and ``get`` with its item on ``ok``, so
each get can be matched with the put it took its item from. Items are compared by value:
equal items (say, one ``None`` sentinel per consumer) are interchangeable, and a get is matched
with the earliest put of an equal item that no get has taken yet. The model keeps this ledger,
once per queue, for every consumer to read.

What a ``multiprocessing.Queue`` promises, and what is checked here:

- Every get returns an item that was put and that no other get has returned (checked at every
  get; the put must have been *invoked* before: a put returns once its item is in the
  producer's buffer, so a consumer may receive it before the producer logs ``put`` ok).
- Every item put is got, once the run is over (a run that leaves items behind lost them).
- FIFO *per producer*. Each producer process has one feeder thread that writes its items into
  the queue's pipe in the order they were put; items of different producers interleave however
  their feeder threads happen to run, so there is no order across producers. What the log can
  refute: a producer's later item returned by a get (``ok``) before the get that returns an
  earlier item had even been invoked.
- ``maxsize`` > 0: never more than ``maxsize`` items in the queue. Counted conservatively:
  puts returned minus gets invoked (and not failed), a lower bound of the true number.
- JoinableQueue: ``join`` returns only once every item put before it was marked done, i.e.
  at ``join`` ok, ``task_done`` was invoked at least as often as ``put`` had returned ok
  before the ``join`` was invoked.
"""

from __future__ import annotations

import queue as _queue
from collections import deque
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from multiprocessing.reduction import ForkingPickler
from typing import Any, ClassVar

from sim.checks import Check, Verdict
from sim.history.facts import Operation
from sim.history.lines import Line

from ._base import Display, Kind, Logged, Model, PrimSpec, Reading, item_key, limit

__all__ = [
    "Bounded",
    "EveryPutGot",
    "JoinAfterTaskDone",
    "JoinableQueue",
    "Ledger",
    "LoggedQueue",
    "NoPhantomGets",
    "PerProducerFifo",
    "Queue",
    "QueueModel",
    "Transit",
]


class LoggedQueue(Logged):
    """Queue and JoinableQueue: put and get log the item, so replay can match them up."""

    def __init__(self, name: str, raw: Any, log: Any, clock: Any, kind: str) -> None:
        self.kind = kind
        super().__init__(name, raw, log, clock)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> bool:
        """Put ``item``; False (logged ``timeout``/``fail``) if the queue stayed full."""
        self._log.info("op", op="put", phase="invoke", item=item, **limit(timeout, block))
        grant = self._turn(timeout, block)
        seconds = None if timeout is None else self._clock.seconds(timeout)
        try:
            if grant is None:
                self._raw.put(item, block, seconds)
            elif grant.do != "go":
                raise _queue.Full
            else:
                self._put_now(item)
            _returned = True  # a stop from here on waits for the line below (see RETURNED)
        except _queue.Full:
            _returned = True
            self._log.info("op", op="put", phase="timeout" if block else "fail", item=item)
            return False
        self._log.info("op", op="put", phase="ok", item=item)
        return True

    def _put_now(self, item: Any) -> None:
        # A real put hands the item to this process's feeder thread, which writes it to the
        # queue's pipe later: two producers' items then reach the pipe in whatever order their
        # feeders run. In a virtual run the item is written here, at its turn, so the order is
        # the schedule's (the same pipe, lock and semaphores as a real put).
        raw = self._raw
        if not raw._sem.acquire(False):
            raise _queue.Full
        data = ForkingPickler.dumps(item)
        if self.kind == "joinable_queue":
            with raw._cond:
                raw._unfinished_tasks.release()
        with raw._wlock:
            raw._writer.send_bytes(data)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """The next item; raises ``queue.Empty`` (logged ``timeout``/``fail``) if none came."""
        self._log.info("op", op="get", phase="invoke", **limit(timeout, block))
        grant = self._turn(timeout, block)
        seconds = None if timeout is None else self._clock.seconds(timeout)
        try:
            if grant is not None and grant.do != "go":
                raise _queue.Empty
            item = self._raw.get(block, seconds) if grant is None else self._raw.get(True)
            _returned = True
        except _queue.Empty:
            _returned = True
            self._log.info("op", op="get", phase="timeout" if block else "fail")
            raise
        self._log.info("op", op="get", phase="ok", item=item)
        return item

    def qsize(self) -> int:
        return int(self._raw.qsize())

    def close(self) -> None:
        """No more puts from this process; the feeder thread flushes what is buffered."""
        self._log.info("op", op="close", phase="invoke")
        self._turn()
        self._raw.close()
        _returned = True
        self._log.info("op", op="close", phase="ok")

    def join_thread(self) -> None:
        """Block until this process's buffered items have reached the pipe (after close)."""
        self._log.info("op", op="join_thread", phase="invoke")
        self._turn()
        self._raw.join_thread()
        _returned = True
        self._log.info("op", op="join_thread", phase="ok")

    def task_done(self) -> None:
        self._log.info("op", op="task_done", phase="invoke")
        self._turn()
        self._raw.task_done()
        _returned = True
        self._log.info("op", op="task_done", phase="ok")

    def join(self) -> None:
        """Block until every item put has been marked done (JoinableQueue only)."""
        self._log.info("op", op="join", phase="invoke")
        self._turn()
        self._raw.join()
        _returned = True
        self._log.info("op", op="join", phase="ok")


@dataclass(frozen=True)
class Queue(PrimSpec[LoggedQueue]):
    """A FIFO queue for many producers and consumers; ``maxsize`` 0 means unbounded."""

    kind: ClassVar[str] = "queue"
    maxsize: int = 0

    def build(self, mp: BaseContext) -> Any:
        return mp.Queue(self.maxsize)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "maxsize": self.maxsize}


@dataclass(frozen=True)
class JoinableQueue(Queue):
    """A Queue whose consumers confirm each item with ``task_done`` so a producer can ``join``."""

    kind: ClassVar[str] = "joinable_queue"

    def build(self, mp: BaseContext) -> Any:
        return mp.JoinableQueue(self.maxsize)


class Transit:
    """One item's way through the queue: its put, and the get that took it (if any)."""

    __slots__ = ("failed", "get", "item", "key", "position", "put")

    def __init__(self, put: Operation, item: Any, key: Any, position: int) -> None:
        self.put = put
        self.item = item
        self.key = key
        #: 0-based: the producer's how-manieth put on this queue.
        self.position = position
        #: The put timed out or failed: the item never went in.
        self.failed = False
        self.get: Operation | None = None

    @property
    def producer(self) -> str:
        return self.put.actor

    @property
    def consumer(self) -> str | None:
        return None if self.get is None else self.get.actor

    @property
    def got(self) -> bool:
        return self.get is not None

    @property
    def put_ok(self) -> float | None:
        done = self.put.done
        return done.ts if done is not None and done.phase == "ok" else None

    @property
    def get_ok(self) -> float | None:
        return None if self.get is None else self.get.end


class Ledger:
    """Every item of one queue: put by whom, got by whom, when; built once per history."""

    def __init__(self) -> None:
        self.transits: list[Transit] = []
        self.by_producer: dict[str, list[Transit]] = {}
        # Gets whose item matches no put still waiting to be got.
        self.phantoms: list[Operation] = []
        self.gets = 0
        self._waiting: dict[Any, deque[Transit]] = {}  # by item: put, not yet got

    def left_behind(self) -> list[Transit]:
        """Items put (and not failed) that no get returned."""
        return [t for t in self.transits if not t.got and not t.failed]


#: How many ledgers were built (a test counts them: one per queue per history).
ledgers_built = 0


class QueueModel(Model):
    """The ledger of one queue, and its length over time.

    The length counts from the ``ok`` lines: an item is in the queue from its put ``ok`` until
    its get ``ok`` (zero time if the get came first).
    """

    series: ClassVar[tuple[str, ...]] = ("length",)

    def __init__(self, name: str, info: Any, history: Any) -> None:
        global ledgers_built
        super().__init__(name, info, history)
        ledgers_built += 1
        self.ledger = Ledger()
        self.maxsize = int(info.get("maxsize", 0) or 0)
        self.length = 0
        self._peak = 0
        self._putting: dict[Operation, Transit] = {}
        # Items put and not yet marked done (a JoinableQueue's join waits for none).
        self.unfinished = 0

    @property
    def capacity(self) -> int | None:
        return self.maxsize or None

    def reading(self) -> Reading:
        most = int(self.history_peak)
        if self.maxsize:
            return Reading(self.length, self.maxsize, f"{self.length}/{self.maxsize} queued")
        return Reading(self.length, max(most, 1), f"{self.length} queued (peak {most})")

    @property
    def history_peak(self) -> int:
        return self._peak

    def ready(self, op: Operation) -> bool:
        name = op.invoke.op
        if name == "get":
            return self.length > 0
        if name == "put":
            return not self.maxsize or self.length < self.maxsize
        if name == "join":
            return self.unfinished <= 0
        return True

    def invoke(self, op: Operation) -> None:
        if op.invoke.op != "put":
            return
        ledger = self.ledger
        item = op.invoke.item
        mine = ledger.by_producer.setdefault(op.actor, [])
        transit = Transit(op, item, item_key(item), len(mine))
        mine.append(transit)
        ledger.transits.append(transit)
        waiting = ledger._waiting.get(transit.key)
        if waiting is None:
            ledger._waiting[transit.key] = deque((transit,))
        else:
            waiting.append(transit)
        self._putting[op] = transit

    def complete(self, op: Operation) -> None:
        done = op.done
        assert done is not None
        name = op.invoke.op
        if name == "put":
            transit = self._putting.pop(op, None)
            if transit is None:
                return
            if done.phase == "ok":
                self.unfinished += 1
                if not transit.got:
                    self.length += 1
                    self._peak = max(self._peak, self.length)
                    self.set_gauge(length=self.length)
            else:
                transit.failed = True
                waiting = self.ledger._waiting.get(transit.key)
                if waiting is not None and transit in waiting:
                    waiting.remove(transit)
        elif name == "get" and done.phase == "ok":
            self._got(op, done.item)
        elif name == "task_done" and done.phase == "ok":
            self.unfinished -= 1

    def _got(self, op: Operation, item: Any) -> None:
        ledger = self.ledger
        ledger.gets += 1
        waiting = ledger._waiting.get(item_key(item))
        if not waiting:
            ledger.phantoms.append(op)
            return
        transit = waiting.popleft()
        transit.get = op
        if transit.put_ok is not None:
            self.length -= 1
            self.set_gauge(length=self.length)
        self.history.transfer(transit.put, op, "message")


def _text(item: Any) -> str:
    key = item_key(item)
    if isinstance(key, bytes):
        return key.decode()
    import msgspec

    return msgspec.json.encode(key).decode()


class _LedgerCheck(Check):
    def __init__(self, prim: str) -> None:
        super().__init__()
        self.prim = prim
        self.events = frozenset()  # reads the model's ledger at the end

    def ledger(self) -> Ledger:
        model = self.history.model(self.prim)
        assert isinstance(model, QueueModel)
        return model.ledger


class NoPhantomGets(_LedgerCheck):
    """Every get returns an item that was put and that no earlier get returned."""

    def __init__(self, prim: str) -> None:
        super().__init__(prim)
        self.name = f"{prim}: every get returns an item put, once"

    def verdict(self) -> Verdict:
        ledger = self.ledger()
        if not ledger.gets:
            return self.skip("no get returned an item")
        for op in ledger.phantoms:
            end = op.end if op.end is not None else op.start
            self.problems.add(f"{op.actor} got {_text(op.item)} at {end:.6f} s: never put, or "
                              "already got")  # fmt: skip
        return self.result(f"{ledger.gets} gets, each matched with its own put")


class EveryPutGot(_LedgerCheck):
    """Once the run is over, every item put has been got: nothing stayed in the queue."""

    needs_completion = True

    def __init__(self, prim: str) -> None:
        super().__init__(prim)
        self.name = f"{prim}: every item put was got"

    def verdict(self) -> Verdict:
        ledger = self.ledger()
        if not ledger.transits:
            return self.skip("nothing was put")
        put = sum(1 for t in ledger.transits if not t.failed)
        left = ledger.left_behind()
        # A consumer a declared fault took away leaves behind what it would have got: that is
        # the fault's consequence (the lost-item check says what it took with it), not the
        # queue's doing.
        faulted = sorted({t.consumer for t in ledger.transits if t.consumer is not None}
                         & self.history.faulted.keys())  # fmt: skip
        if left and faulted:
            return self.result(f"{put} items put, {put - len(left)} got; {len(left)} left in the "
                               f"queue after {', '.join(faulted)} was hit by a fault")  # fmt: skip
        for t in left:
            self.problems.add(
                f"{t.producer}'s {_text(t.item)} (put at {t.put.start:.6f} s) was never got"
            )
        return self.result(f"{put} items put, all got")


class PerProducerFifo(_LedgerCheck):
    """A producer's later item is never got before its earlier one was even asked for."""

    def __init__(self, prim: str) -> None:
        super().__init__(prim)
        self.name = f"{prim}: FIFO per producer"

    def verdict(self) -> Verdict:
        ledger = self.ledger()
        pairs = 0
        for producer, transits in sorted(ledger.by_producer.items()):
            got = [t for t in transits if t.get is not None]
            pairs += max(len(got) - 1, 0)
            # The earlier item whose get was invoked last: a later item whose get returned
            # before that moment overtook it.
            latest: Transit | None = None
            for t in got:
                assert t.get is not None
                if latest is not None and latest.get is not None:
                    end = t.get.ended
                    if end is not None and end < latest.get.began:
                        self.problems.add(_overtaken(producer, t, latest))
                    if t.get.began <= latest.get.began:
                        continue
                latest = t
        if not pairs:
            return self.skip("no producer had two items got")
        consumers = {t.consumer for t in ledger.transits if t.got}
        ok = (
            f"{len(ledger.by_producer)} producers, {len(consumers)} consumers: every producer's "
            "items left the queue in the order they were put"
        )
        return self.result(ok)


def _overtaken(producer: str, later: Transit, earlier: Transit) -> str:
    assert later.get is not None
    assert earlier.get is not None
    return (
        f"{producer}'s put #{later.position + 1} {_text(later.item)} was got by "
        f"{later.consumer} at {later.get_ok:.6f} s, before {earlier.consumer} even asked for "
        f"put #{earlier.position + 1} {_text(earlier.item)} (at {earlier.get.start:.6f} s)"
    )


class Bounded(Check):
    """A queue with ``maxsize`` > 0 never holds more than ``maxsize`` items."""

    def __init__(self, prim: str, maxsize: int) -> None:
        super().__init__()
        self.prims = frozenset({prim})
        self.maxsize = maxsize
        self.name = f"{prim}: at most {maxsize} items in the queue"
        self._returned_puts = 0
        self._open_gets = 0  # invoked and not failed: each may already have freed a place
        self._most = 0

    def on_invoke(self, op: Operation) -> None:
        if op.invoke.op == "get":
            self._open_gets += 1

    def on_op(self, op: Operation) -> None:
        done = op.done
        if done is None:
            return
        name = op.invoke.op
        if name == "get" and done.phase != "ok":
            self._open_gets -= 1
        elif name == "put" and done.phase == "ok":
            self._returned_puts += 1
            inside = self._returned_puts - self._open_gets
            self._most = max(self._most, inside)
            if inside > self.maxsize:
                self.problems.add(
                    f"at least {inside} items in the queue when {op.actor}'s put returned at "
                    f"{done.ts:.6f} s"
                )

    def verdict(self) -> Verdict:
        if not self._returned_puts:
            return self.skip("no put returned")
        return self.result(
            f"{self._returned_puts} puts, at most {max(self._most, 0)} items in the queue for sure"
        )


class JoinAfterTaskDone(Check):
    """``join`` returns only after ``task_done`` for every item put before it was called."""

    def __init__(self, prim: str) -> None:
        super().__init__()
        self.prims = frozenset({prim})
        self.name = f"{prim}: join returned only after every item put was done"
        self._puts = 0  # put ok so far
        self._done = 0  # task_done invoked so far
        self._joining: dict[Operation, int] = {}  # join -> puts then
        self._joins = 0

    def on_invoke(self, op: Operation) -> None:
        name = op.invoke.op
        if name == "task_done":
            self._done += 1
        elif name == "join":
            self._joining[op] = self._puts

    def on_op(self, op: Operation) -> None:
        done = op.done
        if done is None:
            return
        name = op.invoke.op
        if name == "put" and done.phase == "ok":
            self._puts += 1
        elif name == "join" and done.phase == "ok":
            puts = self._joining.pop(op, self._puts)
            self._joins += 1
            if self._done < puts:
                self.problems.add(
                    f"{op.actor}'s join (invoked at {op.start:.6f} s, after {puts} puts) "
                    f"returned at {done.ts:.6f} s after only {self._done} task_done"
                )

    def verdict(self) -> Verdict:
        if not self._joins:
            return self.skip("no join returned")
        return self.result(f"{self._joins} joins, each after as many task_done as puts before it")


@dataclass(frozen=True)
class Handled:
    """Where a scenario says an item got from a queue has been dealt with: its domain event
    ``event``, whose fields ``fields`` equal the item's fields of the same names (an item
    without them, an end marker, is not followed). A scenario declares it in
    ``Scenario.handled``, by queue; the lost-item check reads it."""

    event: str
    fields: tuple[str, ...]

    def key(self, fields: Any) -> tuple[Any, ...] | None:
        if not isinstance(fields, dict) and not hasattr(fields, "get"):
            return None
        values = tuple(fields.get(f) for f in self.fields)
        return None if any(v is None for v in values) else tuple(item_key(v) for v in values)


class LostItems(Check):
    """No item is lost with a consumer that ended before handling it.

    A queue hands an item to one consumer; once got, it is nowhere else. If that consumer dies
    (or crashes) before the scenario's handling event for the item, nobody will ever handle it.
    """

    phenomenon = "lost_item"

    def __init__(self, prim: str, handled: Handled) -> None:
        super().__init__()
        self.prim = prim
        self.prims = frozenset({prim})
        self.events = frozenset({handled.event, "actor_end", "exit"})
        self.handled = handled
        self.name = f"{prim}: every item got is {handled.event}"
        self._holding: dict[str, dict[tuple[Any, ...], float]] = {}
        self._lost: list[tuple[str, tuple[Any, ...], float, float]] = []
        self._got = 0

    def on_op(self, op: Operation) -> None:
        if op.name == "get" and op.ok:
            key = self.handled.key(op.item)
            if key is not None:
                self._got += 1
                assert op.end is not None
                self._holding.setdefault(op.actor, {})[key] = op.end

    def on_line(self, line: Line) -> None:
        if line.event == self.handled.event:
            key = self.handled.key(line)
            if key is not None:
                self._holding.get(line.actor, {}).pop(key, None)
            return
        if line.event == "exit" and line.actor != "engine":
            return
        # Its end (it unwound, or crashed) or the engine's note of its death: whatever it
        # still held, nobody will handle.
        actor = str(line.get("target", "")) if line.event == "exit" else line.actor
        for key, got in self._holding.pop(actor, {}).items():
            self._lost.append((actor, key, got, line.ts))

    def verdict(self) -> Verdict:
        if not self._lost:
            return self.result(f"{self._got} items got, none lost")
        history = self.history
        for actor, key, got, when in self._lost:
            what = ", ".join(f"{f}={v}" for f, v in zip(self.handled.fields, key, strict=True))
            how = history.ended.get(actor, "ended")
            event = self.handled.event
            self.problems.add(f"{actor} got the item {what} at {history.when(got)} and {how} "
                              f"at {history.when(when)} before it was {event}")  # fmt: skip
        return self.result("")


def _wrap(kind: str) -> Any:
    def wrap(name: str, raw: Any, log: Any, clock: Any) -> LoggedQueue:
        return LoggedQueue(name, raw, log, clock, kind)

    return wrap


def _checks(name: str, info: Any) -> list[Check]:
    checks: list[Check] = [NoPhantomGets(name), EveryPutGot(name), PerProducerFifo(name)]
    maxsize = int(info.get("maxsize", 0) or 0)
    if maxsize > 0:
        checks.append(Bounded(name, maxsize))
    if info.get("kind") == "joinable_queue":
        checks.append(JoinAfterTaskDone(name))
    return checks


_BLOCKING = frozenset({"put", "get", "join", "join_thread"})
_WAITING = {"put": "putting", "get": "getting", "join": "joining", "join_thread": "joining"}
_DISPLAY = Display((("length", "fill"),), "queue length over time (items put and not yet got)",
                   "items", rank=0)  # fmt: skip
KINDS = [
    Kind(name, QueueModel, spec, _wrap(name), _checks, _BLOCKING, _WAITING, ("put", "get"),
         _DISPLAY, {"lost_item": "a consumer died or crashed after it got an item and before "
                                 "it handled it: nobody else will"})
    for name, spec in (("queue", Queue), ("joinable_queue", JoinableQueue))
]  # fmt: skip
