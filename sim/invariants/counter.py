"""Invariants of shared memory (``Value``, ``Array``, ``SharedMemory``): no lost updates.

Shared memory guarantees only that one read or one write of a slot is whole (no torn values).
It does not make ``x = x + 1`` atomic: that is a read, then a write, and another process may
write the slot in between. Its update is then lost, overwritten by a value computed from what
was there before it.

Everything here is derived from the ``op`` events alone. A *cycle* is a process's read of a slot
followed by its next write of that slot. Two kinds of evidence:

- *Stale writes*: a cycle's write replaces whatever the last completed write left in the slot
  (writes taken in the order they completed). If that is not the value the process read,
  another write came in between and is wiped out. Writes that replace an equal value are not
  stale: four processes that all read 5 and all write 6 lose three increments and make three
  stale writes, but one that reads 5 and replaces 7 with 6 loses two with one stale write. The
  count is a witness, not a measure, and writes logged microseconds apart may be misordered.
- *The count*, exact, when the slot is used as a counter: if every cycle wrote what it read
  plus one, the log shows a read before any write (the initial value) and one after every
  write (the final value), then ``lost = cycles - (final - initial)``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sim.checks import Check, Verdict

__all__ = ["LockOwner", "LostUpdates", "ReadModifyWrite", "checks_for"]

_SHOW = 3


@dataclass(frozen=True)
class _Write:
    actor: str
    ok: float
    value: Any


@dataclass(frozen=True)
class _Cycle:
    actor: str
    read_ok: float
    read_value: Any
    write_invoke: float


@dataclass
class _Slot:
    cycles: list[_Cycle] = field(default_factory=list)  # in the order their writes began
    last: _Write | None = None  # the last completed write
    writing: int = 0  # writes begun and not yet completed
    blind: int = 0  # writes without a read of their own before them
    initial: Any = None  # read before any write began
    latest_read: tuple[float, Any] | None = None  # (invoke ts, value) of the latest read


def slot_label(prim: str, slot: Hashable) -> str:
    """``counter`` for a Value, ``counter[2]`` for a slot of an Array or SharedMemory."""
    return prim if slot is None else f"{prim}[{slot}]"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class ReadModifyWrite:
    """Follows the reads and writes of one primitive, slot by slot (``index``; none for a Value).

    After feeding: ``cycles`` (a read followed by the same process's write of that slot),
    ``stale`` (cycles whose write replaced a value other than the one they had read),
    ``collisions`` (pairs of cycles of two processes that read the same value, each before the
    other wrote), the first stale write in words (``example``) and :meth:`lost`.
    """

    def __init__(self, prim: str) -> None:
        self.prim = prim
        self.cycles = 0
        self.stale = 0
        self.collisions = 0
        self.example = ""
        self.counter = True  # every cycle so far wrote what it read plus one
        self._slots: dict[Hashable, _Slot] = defaultdict(_Slot)
        # Per (slot, actor): when its read began, and its latest read since it last wrote.
        self._asked: dict[tuple[Hashable, str], float] = {}
        self._reads: dict[tuple[Hashable, str], tuple[float, Any]] = {}

    def feed(self, event: Mapping[str, Any]) -> None:
        """See one event; only ``op`` events on this primitive count."""
        if event.get("event") != "op" or event.get("prim") != self.prim:
            return
        op, phase, ts = event.get("op"), event.get("phase"), event["ts"]
        key: tuple[Hashable, str] = (event.get("index"), event["actor"])
        slot = self._slots[key[0]]
        if op == "read" and phase == "invoke":
            self._asked[key] = ts
        elif op == "read" and phase == "ok":
            value = event.get("value")
            self._reads[key] = (ts, value)
            slot.latest_read = (self._asked.pop(key, ts), value)
            if slot.last is None and not slot.writing and slot.initial is None:
                slot.initial = value
        elif op == "write" and phase == "invoke":
            slot.writing += 1
            read = self._reads.pop(key, None)
            if read is None:
                slot.blind += 1
            else:
                self._cycle(key, slot, event, read)
        elif op == "write" and phase == "ok":
            slot.writing -= 1
            slot.last = _Write(event["actor"], ts, event.get("value"))

    def _cycle(
        self, key: tuple[Hashable, str], slot: _Slot, event: Mapping[str, Any], read: Any
    ) -> None:
        actor, now, written = key[1], event["ts"], event.get("value")
        read_ts, read_value = read
        self.cycles += 1
        self.counter = self.counter and _is_number(read_value) and written == read_value + 1
        # The value this write replaces is the one the last completed write left. If that is
        # not what this process read, somebody wrote in between and this write wipes it out.
        last = slot.last
        if last is not None and last.value != read_value:
            self.stale += 1
            if not self.example:
                self.example = (
                    f"{actor} read {read_value!r} from {slot_label(self.prim, key[0])} at "
                    f"{read_ts:.4f} s, {last.actor} wrote {last.value!r} at {last.ok:.4f} s, "
                    f"then {actor} wrote {written!r} over it"
                )
        # Earlier cycles that read the same value before this one wrote, and whose write began
        # after this one's read: two processes read the same value before either wrote.
        for c in reversed(slot.cycles):
            if c.write_invoke <= read_ts:
                break
            if c.actor != actor and c.read_value == read_value:
                self.collisions += 1
        slot.cycles.append(_Cycle(actor, read_ts, read_value, now))

    def lost(self) -> int | None:
        """Increments lost, exactly, if every slot was used as a counter and the log shows its
        initial and its final value; otherwise None."""
        if not self.cycles or not self.counter:
            return None
        total = 0
        for slot in self._slots.values():
            if not slot.cycles:
                continue
            final = slot.latest_read
            settled = final is not None and slot.last is not None and final[0] > slot.last.ok
            if slot.blind or slot.writing or slot.initial is None or not settled:
                return None
            assert final is not None
            total += len(slot.cycles) - (final[1] - slot.initial)
        return int(total)


class LostUpdates(Check):
    """Each write of a read-then-write replaces the value its process read: no write between."""

    phenomenon = "lost_updates"

    def __init__(self, prim: str) -> None:
        self.name = f"{prim}: no lost updates"
        self._rmw = ReadModifyWrite(prim)

    def feed(self, event: Mapping[str, Any]) -> None:
        self._rmw.feed(event)

    def verdict(self) -> Verdict:
        r = self._rmw
        if not r.cycles:
            return Verdict(self.name, "skip", "no read followed by a write of the same slot")
        lost = r.lost()
        if not r.stale and not lost:
            exact = ", the final value counts every one" if lost == 0 else ""
            ok = f"{r.cycles} read-then-write cycles, each wrote over the value it had read{exact}"
            return Verdict(self.name, "pass", ok, self.phenomenon)
        words = [
            f"lost {100 * lost / r.cycles:.0f} % of updates ({lost} of {r.cycles} increments)"
            if lost
            else "lost updates",
            f"{r.collisions} times two processes read the same value before either wrote it back",
        ]
        if r.example:
            words.append(f"{r.stale} writes replaced a value their process had not read, first: "
                         f"{r.example}")  # fmt: skip
        return Verdict(self.name, "fail", "; ".join(words), self.phenomenon)


class LockOwner(Check):
    """A re-entrant lock (a Value's ``get_lock()``) has at most one owning process at a time."""

    def __init__(self, prim: str) -> None:
        self.prim = prim
        self.name = f"{prim}: one owner at a time"
        self._owner: str | None = None
        self._depth = 0
        self._acquires = 0
        self._problems: list[str] = []
        self._count = 0

    def feed(self, event: Mapping[str, Any]) -> None:
        if event.get("event") != "op" or event.get("prim") != self.prim:
            return
        op, phase, actor = event.get("op"), event.get("phase"), event["actor"]
        if op == "acquire" and phase == "ok":
            self._acquires += 1
            if self._owner is not None and self._owner != actor:
                self._count += 1
                if len(self._problems) < _SHOW:
                    self._problems.append(
                        f"{actor} acquired at {event['ts']:.4f} s while {self._owner} held it"
                    )
                # Follow the newcomer, so one overlap is reported once, not at every later op.
                self._depth = 0
            self._owner = actor
            self._depth += 1
        elif op == "release" and phase == "invoke" and self._owner == actor:
            # Logged before the release takes effect: from here on the next owner may come.
            self._depth -= 1
            if self._depth <= 0:
                self._owner, self._depth = None, 0

    def verdict(self) -> Verdict:
        if not self._acquires:
            return Verdict(self.name, "skip", f"nobody took {self.prim}")
        return self._result(self._problems, self._count, f"{self._acquires} acquires, one owner")


def checks_for(name: str, info: Mapping[str, Any]) -> list[Check]:
    """Checks for a ``value``, ``array`` or ``shared_memory`` primitive called ``name``."""
    checks: list[Check] = [LostUpdates(name)]
    # A synchronized Value or Array has its own RLock, logged as "<name>.lock" when an actor
    # takes it with get_lock(); a SharedMemory block has none.
    if info.get("kind") in ("value", "array") and info.get("lock", False):
        checks.append(LockOwner(f"{name}.lock"))
    return checks
