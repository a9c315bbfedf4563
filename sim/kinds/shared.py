"""Shared memory (kinds ``value``, ``array``, ``shared_memory``): no lost updates.

Shared memory guarantees only that one read or one write of a slot is whole (no torn values).
It does not make ``x = x + 1`` atomic: that is a read, then a write, and another process may
write the slot in between. Its update is then lost, overwritten by a value computed from what
was there before it.

Everything here is read from the ``op`` lines alone. A *cycle* is a process's read of a slot
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

A synchronized ``Value`` or ``Array`` (``lock=True``) has its own RLock, logged as
``<name>.lock`` when an actor takes it with ``get_lock()``; it is checked as an RLock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from multiprocessing.context import BaseContext
from typing import Any, ClassVar

from sim.checks import Check, Verdict
from sim.history.facts import Operation

from ._base import Display, Kind, Logged, Model, PrimSpec, Reading
from .rlock import OneOwner
from .semaphore import LoggedSemaphore

__all__ = [
    "Array",
    "LoggedArray",
    "LoggedSharedMemory",
    "LoggedValue",
    "LostUpdates",
    "ReadModifyWrite",
    "SharedMemory",
    "Value",
    "slot_label",
]


class LoggedValue(Logged):
    """A shared number: every read and write of ``.value`` is logged with the value.

    ``v.value += 1`` is a read and then a write, two separate operations even on a synchronised
    Value: the log shows any other process's write that falls in between (a lost update).
    """

    kind = "value"

    def __init__(self, name: str, raw: Any, log: Any, clock: Any) -> None:
        super().__init__(name, raw, log, clock)
        get_lock = getattr(raw, "get_lock", None)
        self._lock = None if get_lock is None else LoggedSemaphore(
            f"{name}.lock", get_lock(), log, clock, "rlock"
        )  # fmt: skip

    @property
    def value(self) -> Any:
        self._log.info("op", op="read", phase="invoke")
        self._turn()
        current = self._raw.value
        _returned = True  # a stop from here on waits for the line below (see RETURNED)
        self._log.info("op", op="read", phase="ok", value=current)
        return current

    @value.setter
    def value(self, new: Any) -> None:
        self._log.info("op", op="write", phase="invoke", value=new)
        self._turn()
        self._raw.value = new
        _returned = True
        self._log.info("op", op="write", phase="ok", value=new)

    def get_lock(self) -> LoggedSemaphore:
        """The Value's own lock (only for ``lock=True``), logged as ``<name>.lock``."""
        if self._lock is None:
            raise AttributeError(f"{self.name} was made with lock=False and has no lock")
        return self._lock


class LoggedArray(Logged):
    """A shared array: ``a[i]`` reads and ``a[i] = v`` writes are logged with index and value."""

    kind = "array"

    def __init__(self, name: str, raw: Any, log: Any, clock: Any) -> None:
        super().__init__(name, raw, log, clock)
        get_lock = getattr(raw, "get_lock", None)
        self._lock = None if get_lock is None else LoggedSemaphore(
            f"{name}.lock", get_lock(), log, clock, "rlock"
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self._raw)

    def __getitem__(self, index: int) -> Any:
        self._log.info("op", op="read", phase="invoke", index=index)
        self._turn()
        current = self._raw[index]
        _returned = True
        self._log.info("op", op="read", phase="ok", index=index, value=current)
        return current

    def __setitem__(self, index: int, new: Any) -> None:
        self._log.info("op", op="write", phase="invoke", index=index, value=new)
        self._turn()
        self._raw[index] = new
        _returned = True
        self._log.info("op", op="write", phase="ok", index=index, value=new)

    def get_lock(self) -> LoggedSemaphore:
        if self._lock is None:
            raise AttributeError(f"{self.name} was made with lock=False and has no lock")
        return self._lock


class LoggedSharedMemory(Logged):
    """A ``multiprocessing.shared_memory`` block seen as 64-bit integer slots."""

    kind = "shared_memory"

    def __init__(self, name: str, raw: Any, log: Any, clock: Any) -> None:
        super().__init__(name, raw, log, clock)
        # Attaching registers the block with the resource tracker again; that is harmless (the
        # tracker keeps a set of names, and the engine's unlink removes it once), whereas
        # unregistering here would make the tracker fail on the engine's own unregister.
        self._block = shared_memory.SharedMemory(name=raw.name)
        buf = self._block.buf
        assert buf is not None
        self._slots = buf.cast("q")

    def detach(self) -> None:
        """Let go of the block (the views first: a block with live views cannot close)."""
        self._slots.release()
        self._block.close()

    def __len__(self) -> int:
        return len(self._slots)

    def __getitem__(self, index: int) -> int:
        self._log.info("op", op="read", phase="invoke", index=index)
        self._turn()
        current = self._slots[index]
        _returned = True
        self._log.info("op", op="read", phase="ok", index=index, value=current)
        _returned = False  # the line is queued: a stop strikes where it lands again
        return int(current)

    def __setitem__(self, index: int, new: int) -> None:
        self._log.info("op", op="write", phase="invoke", index=index, value=new)
        self._turn()
        self._slots[index] = new
        _returned = True
        self._log.info("op", op="write", phase="ok", index=index, value=new)


@dataclass(frozen=True)
class Value(PrimSpec[LoggedValue]):
    """One number in shared memory; ``lock=False`` makes it a raw, unsynchronised value."""

    kind: ClassVar[str] = "value"
    typecode: str = "i"
    initial: int | float = 0
    lock: bool = True
    #: The values it may take, (low, high), if the program has a bound (a buffer's count lies
    #: in 0 .. capacity): displays draw the band and what left it.
    bounds: tuple[float, float] | None = None

    def build(self, mp: BaseContext) -> Any:
        return mp.Value(self.typecode, self.initial, lock=self.lock)

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"kind": self.kind, "typecode": self.typecode,
                                     "initial": self.initial,
                     "lock": self.lock}  # fmt: skip
        if self.bounds is not None:
            described["bounds"] = list(self.bounds)
        return described


@dataclass(frozen=True)
class Array(PrimSpec[LoggedArray]):
    """A fixed-size array in shared memory."""

    kind: ClassVar[str] = "array"
    typecode: str = "i"
    size: int = 1
    lock: bool = True

    def build(self, mp: BaseContext) -> Any:
        return mp.Array(self.typecode, self.size, lock=self.lock)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "typecode": self.typecode, "size": self.size,
                "lock": self.lock}  # fmt: skip


@dataclass(frozen=True)
class SharedMemory(PrimSpec[LoggedSharedMemory]):
    """A raw ``multiprocessing.shared_memory`` block of ``slots`` 64-bit integers.

    The engine creates and finally unlinks it; actors attach to it by name.
    """

    kind: ClassVar[str] = "shared_memory"
    slots: int = 1

    def build(self, mp: BaseContext) -> Any:
        block = shared_memory.SharedMemory(create=True, size=8 * self.slots)
        buf = block.buf
        assert buf is not None
        buf[: 8 * self.slots] = bytes(8 * self.slots)
        return ShmHandle(block.name, self.slots, block)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "slots": self.slots}

    def release(self, raw: Any) -> None:
        raw.close()


class ShmHandle:
    """What actors receive for a shared-memory block: its name (the engine keeps the block)."""

    def __init__(self, name: str, slots: int, block: Any = None) -> None:
        self.name = name
        self.slots = slots
        self.block = block

    def __getstate__(self) -> dict[str, Any]:
        # Only the name crosses to spawned actors; they attach to the block themselves.
        return {"name": self.name, "slots": self.slots, "block": None}

    def close(self) -> None:
        if self.block is not None:
            self.block.close()
            self.block.unlink()
            self.block = None


@dataclass(frozen=True)
class _Write:
    actor: str
    # When it completed, as lines are ordered (time, then step): in a virtual run lines of
    # many steps share a time, and only the step says which came first.
    ok: tuple[float, int]
    value: Any


@dataclass(frozen=True)
class _Cycle:
    actor: str
    read_value: Any
    write_invoke: tuple[float, int]  # as lines are ordered (time, then step)


@dataclass
class _Slot:
    cycles: list[_Cycle] = field(default_factory=list)  # in the order their writes began
    last: _Write | None = None  # the last completed write
    writing: int = 0  # writes begun and not yet completed
    blind: int = 0  # writes without a read of their own before them
    initial: Any = None  # read before any write began
    latest_read: tuple[tuple[float, int], Any] | None = None  # (invoke at, value) of the latest


def slot_label(prim: str, slot: Hashable) -> str:
    """``counter`` for a Value, ``counter[2]`` for a slot of an Array or SharedMemory."""
    return prim if slot is None else f"{prim}[{slot}]"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class ReadModifyWrite(Model):
    """The reads and writes of one shared primitive, slot by slot (``index``; none for a
    Value), and its values over time as gauges (``value``, ``value[i]``).

    ``cycles`` counts a read followed by the same process's write of that slot, ``stale`` the
    cycles whose write replaced a value other than the one they had read, ``collisions`` the
    pairs of cycles of two processes that read the same value, each before the other wrote;
    ``example`` is the first stale write in words and :meth:`lost` the exact count.
    """

    def __init__(self, name: str, info: Any, history: Any) -> None:
        super().__init__(name, info, history)
        initial = info.get("initial")
        if info.get("kind") == "value" and _is_number(initial):
            self.gauges = {"value": initial}
        self.cycles = 0
        self.stale = 0
        self.collisions = 0
        self.example = ""
        self.counter = True  # every cycle so far wrote what it read plus one
        self.writes = 0
        self._slots: dict[Hashable, _Slot] = defaultdict(_Slot)
        # Per (slot, actor): its latest read since it last wrote (when it completed, the value).
        self._reads: dict[tuple[Hashable, str], tuple[tuple[float, int], Any]] = {}

    @property
    def bounds(self) -> tuple[float, float] | None:
        """The values the program allows (``Value(bounds=...)``), if it said."""
        bounds = self.info.get("bounds")
        if isinstance(bounds, (list, tuple)) and len(bounds) == 2 and all(map(_is_number, bounds)):
            return float(bounds[0]), float(bounds[1])
        return None

    def reading(self) -> Reading | None:
        value = self.gauges.get("value")
        if value is None:
            return None
        writes = f", {self.writes} write{'s' if self.writes != 1 else ''}" if self.writes else ""
        bounds = self.bounds
        if bounds is None:
            return Reading(value, None, f"value {value:g}{writes}")
        low, high = bounds
        inside = low <= value <= high
        where = f"{'within' if inside else 'OUTSIDE'} {low:g} .. {high:g}"
        return Reading(value - low, high - low, f"value {value:g}, {where}{writes}")

    def invoke(self, op: Operation) -> None:
        line = op.invoke
        if line.op != "write":
            return
        key: tuple[Hashable, str] = (line.index, line.actor)
        slot = self._slots[key[0]]
        slot.writing += 1
        read = self._reads.pop(key, None)
        if read is None:
            slot.blind += 1
        else:
            self._cycle(key, slot, op, read)

    def complete(self, op: Operation) -> None:
        done = op.done
        if done is None or done.phase != "ok":
            return
        line = op.invoke
        index = line.index
        slot = self._slots[index]
        value = done.value
        if line.op == "read":
            self._reads[(index, line.actor)] = (done.at, value)
            slot.latest_read = (line.at, value)
            if slot.last is None and not slot.writing and slot.initial is None:
                slot.initial = value
        elif line.op == "write":
            self.writes += 1
            slot.writing -= 1
            slot.last = _Write(line.actor, done.at, value)
            if _is_number(value):
                self.set_gauge(**{"value" if index is None else f"value[{index}]": value})

    def _cycle(
        self,
        key: tuple[Hashable, str],
        slot: _Slot,
        op: Operation,
        read: tuple[tuple[float, int], Any],
    ) -> None:
        actor, now, written = key[1], op.invoke.at, op.invoke.value
        read_at, read_value = read
        self.cycles += 1
        self.counter = self.counter and _is_number(read_value) and written == read_value + 1
        # The value this write replaces is the one the last completed write left. If that is
        # not what this process read, somebody wrote in between and this write wipes it out.
        last = slot.last
        if last is not None and last.value != read_value:
            self.stale += 1
            if not self.example:
                self.example = (
                    f"{actor} read {read_value!r} from {slot_label(self.name, key[0])} at "
                    f"{read_at[0]:.4f} s, {last.actor} wrote {last.value!r} at {last.ok[0]:.4f} s, "
                    f"then {actor} wrote {written!r} over it"
                )
        # Earlier cycles that read the same value before this one wrote, and whose write began
        # after this one's read: two processes read the same value before either wrote.
        for c in reversed(slot.cycles):
            if c.write_invoke <= read_at:
                break
            if c.actor != actor and c.read_value == read_value:
                self.collisions += 1
        slot.cycles.append(_Cycle(actor, read_value, now))

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
        super().__init__()
        self.prim = prim
        self.events = frozenset()
        self.name = f"{prim}: no lost updates"

    def verdict(self) -> Verdict:
        r = self.history.model(self.prim)
        assert isinstance(r, ReadModifyWrite)
        if not r.cycles:
            return self.skip("no read followed by a write of the same slot")
        lost = r.lost()
        # Two processes that read the same value before either wrote it back: the second
        # write wipes out the first, whichever order the writes took (all four workers of a
        # virtual run can read before any writes, and no write then replaces a value other
        # than the one its process read).
        if not r.stale and not r.collisions and not lost:
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


def _checks(name: str, info: Any) -> list[Check]:
    checks: list[Check] = [LostUpdates(name)]
    if info.get("kind") in ("value", "array") and info.get("lock", False):
        checks.append(OneOwner(f"{name}.lock"))
    return checks


_DISPLAY = Display(
    (("value", "-"), ("writes", ":")),
    "shared value over time, and the writes that completed",
    "value",
    rank=1,
)
KINDS = [
    Kind(name, ReadModifyWrite, spec, wrap, _checks, display=_DISPLAY)
    for name, spec, wrap in (
        ("value", Value, LoggedValue),
        ("array", Array, LoggedArray),
        ("shared_memory", SharedMemory, LoggedSharedMemory),
    )
]
