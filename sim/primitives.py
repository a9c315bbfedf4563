"""Named shared primitives a scenario asks for, by kind.

A scenario returns a mapping ``{"spaces": Semaphore(130)}``; the engine builds each primitive from
the run's multiprocessing context (so it matches the start method of the processes), hands the raw
object to every actor, and each actor wraps it so that every operation is logged as an ``op``
event. Scenario code never logs a primitive operation by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any, ClassVar

__all__ = [
    "Array",
    "Barrier",
    "BoundedSemaphore",
    "Condition",
    "Event",
    "JoinableQueue",
    "Lock",
    "Pipe",
    "PrimSpec",
    "Queue",
    "RLock",
    "Semaphore",
    "SharedMemory",
    "Value",
]


@dataclass(frozen=True)
class PrimSpec:
    """Base of every primitive description; ``kind`` is what the log's ``kind`` field says."""

    kind: ClassVar[str]

    def build(self, mp: BaseContext) -> Any:
        """Create the raw multiprocessing object in the engine, before any actor starts."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What run.json records about this primitive (replay's checks read it back)."""
        return {"kind": self.kind}


@dataclass(frozen=True)
class Semaphore(PrimSpec):
    """A counting semaphore with ``value`` free units (the car park's spaces)."""

    kind: ClassVar[str] = "semaphore"
    value: int = 1

    def build(self, mp: BaseContext) -> Any:
        return mp.Semaphore(self.value)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value}


@dataclass(frozen=True)
class BoundedSemaphore(Semaphore):
    """A semaphore whose ``release`` beyond the initial value raises ValueError."""

    kind: ClassVar[str] = "bounded_semaphore"

    def build(self, mp: BaseContext) -> Any:
        return mp.BoundedSemaphore(self.value)


@dataclass(frozen=True)
class Lock(PrimSpec):
    """A mutual-exclusion lock."""

    kind: ClassVar[str] = "lock"

    def build(self, mp: BaseContext) -> Any:
        return mp.Lock()


@dataclass(frozen=True)
class RLock(PrimSpec):
    """A re-entrant lock: its owner may acquire it again."""

    kind: ClassVar[str] = "rlock"

    def build(self, mp: BaseContext) -> Any:
        return mp.RLock()


@dataclass(frozen=True)
class Event(PrimSpec):
    """A flag that processes wait on until one of them sets it."""

    kind: ClassVar[str] = "event"

    def build(self, mp: BaseContext) -> Any:
        return mp.Event()


@dataclass(frozen=True)
class Condition(PrimSpec):
    """A condition variable with its own lock: wait until notified, notify one or all."""

    kind: ClassVar[str] = "condition"

    def build(self, mp: BaseContext) -> Any:
        return mp.Condition()


@dataclass(frozen=True)
class Barrier(PrimSpec):
    """``parties`` processes wait until all of them have arrived, then all go on."""

    kind: ClassVar[str] = "barrier"
    parties: int = 2

    def build(self, mp: BaseContext) -> Any:
        return mp.Barrier(self.parties)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "parties": self.parties}


@dataclass(frozen=True)
class Queue(PrimSpec):
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


@dataclass(frozen=True)
class Pipe(PrimSpec):
    """A pipe between two processes: one-way (``duplex=False``) or both ways."""

    kind: ClassVar[str] = "pipe"
    duplex: bool = False

    def build(self, mp: BaseContext) -> Any:
        return mp.Pipe(self.duplex)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "duplex": self.duplex}


@dataclass(frozen=True)
class Value(PrimSpec):
    """One number in shared memory; ``lock=False`` makes it a raw, unsynchronised value."""

    kind: ClassVar[str] = "value"
    typecode: str = "i"
    initial: int | float = 0
    lock: bool = True

    def build(self, mp: BaseContext) -> Any:
        return mp.Value(self.typecode, self.initial, lock=self.lock)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "typecode": self.typecode, "initial": self.initial,
                "lock": self.lock}  # fmt: skip


@dataclass(frozen=True)
class Array(PrimSpec):
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
class SharedMemory(PrimSpec):
    """A raw ``multiprocessing.shared_memory`` block of ``slots`` 64-bit integers.

    The engine creates and finally unlinks it; actors attach to it by name.
    """

    kind: ClassVar[str] = "shared_memory"
    slots: int = 1

    def build(self, mp: BaseContext) -> Any:
        from multiprocessing import shared_memory

        block = shared_memory.SharedMemory(create=True, size=8 * self.slots)
        buf = block.buf
        assert buf is not None
        buf[: 8 * self.slots] = bytes(8 * self.slots)
        return _ShmHandle(block.name, self.slots, block)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "slots": self.slots}


class _ShmHandle:
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
