"""Invariants of a Queue or JoinableQueue (kinds ``queue``, ``joinable_queue``), from the op
history alone.

``LoggedQueue`` logs ``put`` with its item on every phase and ``get`` with its item on ``ok``,
so each get can be matched with the put it took its item from. Items are compared by value (as
JSON): equal items (say, one ``None`` sentinel per consumer) are interchangeable, and a get is
matched with the earliest put of an equal item that no get has taken yet.

What a ``multiprocessing.Queue`` promises, and what is checked here:

- Every get returns an item that was put and that no other get has returned (checked at every
  get; the put must have been *invoked* before: a put returns once its item is in the
  producer's buffer, so a consumer may receive it before the producer logs ``put`` ok).
- Every item put is got, once the run is over (a run that leaves items behind lost them).
- FIFO *per producer*. Each producer process has one feeder thread that writes its items into
  the queue's pipe in the order they were put; items of different producers interleave however
  their feeder threads happen to run, so there is no order across producers. Consumers take
  items off the pipe one at a time, so a producer's earlier item leaves the queue before its
  later one. What the log can refute: a producer's later item returned by a get (``ok``) before
  the get that returns an earlier item had even been invoked. With one consumer this is
  exactly "the consumer gets each producer's items in the order they were put"; with several,
  two gets that overlap in time may log their ``ok`` lines in either order, and that is not a
  violation (each consumer still sees each producer's items in put order).
- ``maxsize`` > 0: never more than ``maxsize`` items in the queue. Counted conservatively:
  puts returned minus gets invoked (and not failed), a lower bound of the true number.
- JoinableQueue: ``join`` returns only once every item put before it was marked done, i.e.
  at ``join`` ok, ``task_done`` was invoked at least as often as ``put`` had returned ok
  before the ``join`` was invoked. (``put`` counts an item as unfinished before it returns, and
  ``task_done`` marks it done after its invoke line, so this bound is exact enough and sound.)
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sim.checks import Check, Verdict
from sim.stats import TimeWeighted

__all__ = [
    "Bounded",
    "JoinAfterTaskDone",
    "NoPhantomGets",
    "PerProducerFifo",
    "QueueLedger",
    "Transfer",
    "checks_for",
]

_SHOW = 3


def item_key(item: Any) -> str:
    """An item as comparable text: equal values give equal keys, whatever their key order."""
    return json.dumps(item, sort_keys=True, separators=(",", ":"))


@dataclass(eq=False)
class Transfer:
    """One item's way through the queue: its put, and the get that took it (if any)."""

    item: Any
    key: str
    producer: str
    position: int  # 0-based: the producer's how-manieth put on this queue
    put_invoked: float
    put_ok: float | None = None
    failed: bool = False  # the put timed out or failed: the item never went in
    consumer: str | None = None
    get_invoked: float | None = None
    get_ok: float | None = None

    @property
    def got(self) -> bool:
        return self.get_ok is not None


class QueueLedger:
    """Matches every get of one queue with its put, event by event.

    Also measures the queue's length over time, counted from the ``ok`` lines: an item is in
    the queue from its put ``ok`` until its get ``ok`` (zero time if the get came first).
    """

    def __init__(self) -> None:
        self.transfers: list[Transfer] = []
        self.by_producer: dict[str, list[Transfer]] = {}
        # Gets whose item matches no earlier put still waiting to be got: (actor, ts, item).
        self.phantoms: list[tuple[str, float, Any]] = []
        self.length = TimeWeighted()
        self._waiting: dict[str, deque[Transfer]] = {}  # by key: put, not yet got
        self._putting: dict[str, Transfer] = {}  # by actor: put invoked, not yet returned
        self._getting: dict[str, float] = {}  # by actor: get invoke ts
        self.gets = 0

    def feed(self, event: Mapping[str, Any]) -> Transfer | None:
        """See one op event of this queue; returns the transfer a put or get line concerns."""
        op, phase, actor, ts = event.get("op"), event.get("phase"), event["actor"], event["ts"]
        if op == "put":
            return self._put(phase, actor, ts, event.get("item"))
        if op == "get":
            if phase == "invoke":
                self._getting[actor] = ts
                return None
            invoked = self._getting.pop(actor, ts)
            if phase == "ok":
                return self._got(actor, invoked, ts, event.get("item"))
        return None

    def _put(self, phase: Any, actor: str, ts: float, item: Any) -> Transfer | None:
        if phase == "invoke":
            mine = self.by_producer.setdefault(actor, [])
            t = Transfer(item, item_key(item), actor, len(mine), ts)
            mine.append(t)
            self.transfers.append(t)
            self._waiting.setdefault(t.key, deque()).append(t)
            self._putting[actor] = t
            return t
        t_or_none = self._putting.pop(actor, None)
        if t_or_none is None:
            return None
        t = t_or_none
        if phase == "ok":
            t.put_ok = ts
            if not t.got:
                self.length.change(ts, +1)
        else:
            t.failed = True
            waiting = self._waiting.get(t.key)
            if waiting is not None and any(w is t for w in waiting):
                waiting.remove(t)  # identity: Transfer compares by identity (eq=False)
        return t

    def _got(self, actor: str, invoked: float, ts: float, item: Any) -> Transfer | None:
        self.gets += 1
        waiting = self._waiting.get(item_key(item))
        if not waiting:
            self.phantoms.append((actor, ts, item))
            return None
        t = waiting.popleft()
        t.consumer, t.get_invoked, t.get_ok = actor, invoked, ts
        if t.put_ok is not None:
            self.length.change(ts, -1)
        return t

    def left_behind(self) -> list[Transfer]:
        """Items put (and not failed) that no get returned."""
        return [t for t in self.transfers if not t.got and not t.failed]


class _LedgerCheck(Check):
    def __init__(self, prim: str) -> None:
        self.prim = prim
        self.prims = frozenset({prim})
        self.ledger = QueueLedger()

    def feed(self, event: Mapping[str, Any]) -> None:
        self.ledger.feed(event)


class NoPhantomGets(_LedgerCheck):
    """Every get returns an item that was put and that no earlier get returned."""

    def __init__(self, prim: str) -> None:
        super().__init__(prim)
        self.name = f"{prim}: every get returns an item put, once"

    def verdict(self) -> Verdict:
        ledger = self.ledger
        if not ledger.gets:
            return Verdict(self.name, "skip", "no get returned an item")
        problems = [
            f"{actor} got {item_key(item)} at {ts:.6f} s: never put, or already got"
            for actor, ts, item in ledger.phantoms[:_SHOW]
        ]
        ok = f"{ledger.gets} gets, each matched with its own put"
        return self._result(problems, len(ledger.phantoms), ok)


class EveryPutGot(_LedgerCheck):
    """Once the run is over, every item put has been got: nothing stayed in the queue."""

    needs_completion = True

    def __init__(self, prim: str) -> None:
        super().__init__(prim)
        self.name = f"{prim}: every item put was got"

    def verdict(self) -> Verdict:
        ledger = self.ledger
        if not ledger.transfers:
            return Verdict(self.name, "skip", "nothing was put")
        left = ledger.left_behind()
        problems = [
            f"{t.producer}'s {item_key(t.item)} (put at {t.put_invoked:.6f} s) was never got"
            for t in left[:_SHOW]
        ]
        put = sum(1 for t in ledger.transfers if not t.failed)
        return self._result(problems, len(left), f"{put} items put, all got")


class PerProducerFifo(_LedgerCheck):
    """A producer's later item is never got before its earlier one was even asked for."""

    def __init__(self, prim: str) -> None:
        super().__init__(prim)
        self.name = f"{prim}: FIFO per producer"

    def verdict(self) -> Verdict:
        ledger = self.ledger
        problems: list[str] = []
        count = pairs = 0
        for producer, transfers in sorted(ledger.by_producer.items()):
            got = [t for t in transfers if t.got]
            pairs += max(len(got) - 1, 0)
            # The earlier item whose get was invoked last: a later item whose get returned
            # before that moment overtook it.
            latest: Transfer | None = None
            for t in got:
                assert t.get_ok is not None
                assert t.get_invoked is not None
                if latest is not None and latest.get_invoked is not None:
                    if t.get_ok < latest.get_invoked:
                        count += 1
                        if len(problems) < _SHOW:
                            problems.append(_overtaken(producer, t, latest))
                    if t.get_invoked <= latest.get_invoked:
                        continue
                latest = t
        if not pairs:
            return Verdict(self.name, "skip", "no producer had two items got")
        consumers = {t.consumer for t in ledger.transfers if t.got}
        ok = (
            f"{len(ledger.by_producer)} producers, {len(consumers)} consumers: every producer's "
            "items left the queue in the order they were put"
        )
        return self._result(problems, count, ok)


def _overtaken(producer: str, later: Transfer, earlier: Transfer) -> str:
    return (
        f"{producer}'s put #{later.position + 1} {item_key(later.item)} was got by "
        f"{later.consumer} at {later.get_ok:.6f} s, before {earlier.consumer} even asked for "
        f"put #{earlier.position + 1} {item_key(earlier.item)} (at {earlier.get_invoked:.6f} s)"
    )


class Bounded(Check):
    """A queue with ``maxsize`` > 0 never holds more than ``maxsize`` items."""

    def __init__(self, prim: str, maxsize: int) -> None:
        self.prims = frozenset({prim})
        self.maxsize = maxsize
        self.name = f"{prim}: at most {maxsize} items in the queue"
        self._returned_puts = 0
        self._open_gets = 0  # invoked and not failed: each may already have freed a place
        self._most = 0
        self._problems: list[str] = []
        self._count = 0

    def feed(self, event: Mapping[str, Any]) -> None:
        op, phase = event.get("op"), event.get("phase")
        if op == "get":
            if phase == "invoke":
                self._open_gets += 1
            elif phase != "ok":
                self._open_gets -= 1
        elif op == "put" and phase == "ok":
            self._returned_puts += 1
            inside = self._returned_puts - self._open_gets
            self._most = max(self._most, inside)
            if inside > self.maxsize:
                self._count += 1
                if len(self._problems) < _SHOW:
                    self._problems.append(
                        f"at least {inside} items in the queue when {event['actor']}'s put "
                        f"returned at {event['ts']:.6f} s"
                    )

    def verdict(self) -> Verdict:
        if not self._returned_puts:
            return Verdict(self.name, "skip", "no put returned")
        ok = f"{self._returned_puts} puts, at most {max(self._most, 0)} items in the queue for sure"
        return self._result(self._problems, self._count, ok)


class JoinAfterTaskDone(Check):
    """``join`` returns only after ``task_done`` for every item put before it was called."""

    def __init__(self, prim: str) -> None:
        self.prims = frozenset({prim})
        self.name = f"{prim}: join returned only after every item put was done"
        self._puts = 0  # put ok so far
        self._done = 0  # task_done invoked so far
        self._joining: dict[str, tuple[float, int]] = {}  # actor -> (invoke ts, puts then)
        self._joins = 0
        self._problems: list[str] = []
        self._count = 0

    def feed(self, event: Mapping[str, Any]) -> None:
        op, phase, actor, ts = event.get("op"), event.get("phase"), event["actor"], event["ts"]
        if op == "put" and phase == "ok":
            self._puts += 1
        elif op == "task_done" and phase == "invoke":
            self._done += 1
        elif op == "join" and phase == "invoke":
            self._joining[actor] = (ts, self._puts)
        elif op == "join" and phase == "ok":
            began, puts = self._joining.pop(actor, (ts, self._puts))
            self._joins += 1
            if self._done < puts:
                self._count += 1
                if len(self._problems) < _SHOW:
                    self._problems.append(
                        f"{actor}'s join (invoked at {began:.6f} s, after {puts} puts) returned "
                        f"at {ts:.6f} s after only {self._done} task_done"
                    )

    def verdict(self) -> Verdict:
        if not self._joins:
            return Verdict(self.name, "skip", "no join returned")
        ok = f"{self._joins} joins, each after as many task_done as puts before it"
        return self._result(self._problems, self._count, ok)


def checks_for(name: str, info: Mapping[str, Any]) -> list[Check]:
    """The Queue (and JoinableQueue) checks for primitive ``name``."""
    checks: list[Check] = [NoPhantomGets(name), EveryPutGot(name), PerProducerFifo(name)]
    maxsize = int(info.get("maxsize", 0) or 0)
    if maxsize > 0:
        checks.append(Bounded(name, maxsize))
    if info.get("kind") == "joinable_queue":
        checks.append(JoinAfterTaskDone(name))
    return checks
