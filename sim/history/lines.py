"""Reading a run's events file back: typed lines, in time order, problems as findings.

Every line is decoded straight into a :class:`Line`, a msgspec Struct holding the contract's
fields and the payload fields the primitive kinds read. That is both the contract check (a line
whose ``ts``, ``actor``, ``seq`` or ``event`` is missing or of the wrong type does not decode)
and the fastest way msgspec has to read a line: about 0.36 µs, against 1.1 µs for a dict and
the same check by hand. Any other field stays in the line's raw bytes and is decoded only when
somebody asks for it (:attr:`Line.fields`), which most consumers never do.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["Finding", "Line", "chunks", "lateness", "line_of", "ordered", "read_lines"]


@dataclass(frozen=True)
class Finding:
    """Something about the files themselves (not the run): a torn or non-JSON line is an
    ``error`` (lines were lost); a missing manifest or a newer schema is a ``warning``."""

    line: int
    problem: str
    severity: str = "error"


class Line(msgspec.Struct, gc=False, kw_only=True):
    """One line of ``events.jsonl``: the contract's fields, the fields of an ``op`` line, and
    the rest of the line on demand (``line["visit"]``, ``line.get("visit")``).

    ``prim``, ``kind``, ``op`` and the payload fields are typed ``Any``: a domain event may use
    these names for values of its own, so only an ``op`` line's are taken as what they say.
    """

    # In the order the engine writes them (keyword-only, so that pid may come before seq):
    # msgspec looks a key up from the field after the last one found, so a line whose keys
    # come in the fields' order decodes the faster (~0.015 µs a line of a car park run).
    ts: float
    actor: str
    pid: int = 0
    seq: int
    event: str
    # The global scheduling step of a virtual run's line (see docs/log-format.md).
    step: int | None = None
    prim: Any = None
    kind: Any = None
    op: Any = None
    phase: Any = None
    item: Any = None
    value: Any = None
    index: Any = None
    timeout: Any = None
    n: Any = None
    end: Any = None
    peer: Any = None
    error: Any = None
    # Not fields of the log: filled in by the reader. Their names cannot occur in a real line
    # (the engine never writes them); a hostile line's raw is overwritten by every reader, its
    # number by the file's (the live stream's lines are not numbered), and its cache is never
    # taken for one (see fields).
    raw: bytes = msgspec.field(default=b"", name="~raw")
    number: int = msgspec.field(default=0, name="~number")
    cache: Any = msgspec.field(default=None, name="~cache")

    @property
    def at(self) -> tuple[float, int]:
        """When the line happened, as something to compare: its time, then (in a virtual run,
        where lines of different steps share a time) its step."""
        return (self.ts, self.step or 0)

    @property
    def fields(self) -> dict[str, Any]:
        """Every field of the line, as written (decoded from the raw line on first use)."""
        cache = self.cache
        # Kept in a 1-tuple, which no JSON value decodes to: a line's own "~cache" key (a
        # dict, a list...) can never stand for its fields, whoever read the line.
        if type(cache) is not tuple:
            cache = self.cache = (_decode_dict(self.raw) if self.raw else _from_struct(self),)
        return cache[0]  # type: ignore[no-any-return]

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        """A field of the line, or ``default``."""
        return self.fields.get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.fields


_decode_dict = msgspec.json.Decoder(dict[str, Any]).decode
_OWN = frozenset({"raw", "number", "cache"})


def _from_struct(line: Line) -> dict[str, Any]:
    # A line made in memory (a test, the live stream) has no raw bytes: its fields are these.
    return {
        name: value
        for name in line.__struct_fields__
        if name not in _OWN and (value := getattr(line, name)) is not None
    }


decode_line = msgspec.json.Decoder(Line).decode
_encode = msgspec.json.Encoder().encode


def line_of(fields: Mapping[str, Any]) -> Line:
    """A line made in memory from its fields, as if read from a file (a synthetic history)."""
    raw = _encode(fields) + b"\n"
    line = decode_line(raw)
    line.raw = raw
    return line


# Bytes of the file read at a time (whole lines, about 16,000 of the engine's): large enough
# that the per-chunk work vanishes, small enough that memory stays flat in the log's length.
_BLOCK = 1 << 21
# Lines regrouped at a time by :func:`chunks`.
_CHUNK = 1 << 14


def read_lines(path: Path, findings: list[Finding] | None = None) -> Iterator[list[Line]]:
    """The lines of ``path`` in file order, in chunks; bad lines become findings, never
    exceptions (a torn last line, a line that is not JSON or not an event line, a line nested
    too deep to decode)."""
    decode = decode_line
    first = 1  # the number of the block's first line
    with open(path, "rb") as fh:
        # A block of whole lines at a time: the loop below is then all the per-line work
        # there is (no per-line test of the chunk's length or of the file's end).
        while raws := fh.readlines(_BLOCK):
            chunk: list[Line] = []
            append = chunk.append
            for number, raw in enumerate(raws, start=first):
                try:
                    line = decode(raw)
                except (msgspec.DecodeError, RecursionError):
                    _bad(raw, number, findings)
                    continue
                line.raw = raw
                line.number = number
                append(line)
            first += len(raws)
            # Only the file's last line can lack its newline. Decoded, it may still be torn
            # (a cut after a closing brace): the engine always ends a line with one.
            if chunk and not chunk[-1].raw.endswith(b"\n"):
                torn = chunk.pop()
                if findings is not None:
                    findings.append(Finding(torn.number, "last line is torn (no newline)"))
            if chunk:
                yield chunk


def _bad(raw: bytes, number: int, findings: list[Finding] | None) -> None:
    if findings is None:
        return
    if not raw.endswith(b"\n"):
        findings.append(Finding(number, "last line is torn (no newline)"))
        return
    try:
        _decode_dict(raw)
    except msgspec.DecodeError as exc:
        findings.append(Finding(number, f"not JSON: {exc}"))
        return
    except RecursionError:
        findings.append(Finding(number, "nested too deeply to read: not an event line"))
        return
    findings.append(Finding(number, "not an event line: it lacks ts, actor, seq or event, or one "
                            "of them has the wrong type"))  # fmt: skip


def chunks(lines: Iterable[Line], size: int = _CHUNK) -> Iterator[list[Line]]:
    """``lines`` regrouped into lists of at most ``size`` (for lines made in memory)."""
    chunk: list[Line] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


_TS = attrgetter("ts")
_AT = attrgetter("at")


def ordered(
    source: Iterable[list[Line]], window: float = 1.0, findings: list[Finding] | None = None
) -> Iterator[list[Line]]:
    """The chunks of ``source`` regrouped in time order, with memory bounded by ``window``
    seconds of log.

    The file is in order per actor (one connection each) and only roughly across actors (each
    sends in batches), so sorting a sliding window restores the global order: a line is handed
    on once the file has reached lines ``window`` seconds newer than it. Each line is sorted a
    bounded number of times, and the sort is stable, so that lines of one actor with the same
    time keep their ``seq`` order. A virtual run's lines share times across steps: they are
    ordered by time, then step (the order the scheduler let them happen in).

    A line that arrives later than the window allows (a loaded machine, a stalled actor) is
    still handed on, late, and the window grows to take lines as late as that in order from
    then on. Arrival order is the transport's business and says nothing about the run, so it
    is no finding; a reader that must be exact sees the late line (a history counts them,
    :attr:`History.late_lines`) and reads again with the window :func:`lateness` measures.
    """
    buf: list[Line] = []
    newest = float("-inf")
    handed = float("-inf")  # the newest time handed on so far
    sort_at = 0
    key = _TS
    for chunk in source:
        if not chunk:
            continue
        if chunk[0].step is not None:
            key = _AT  # a virtual run: ties of time are broken by step
        buf.extend(chunk)
        newest = max(newest, max(map(_TS, chunk)))
        oldest = min(map(_TS, chunk))
        if oldest < handed:
            window = max(window, newest - oldest)
        if len(buf) < sort_at:
            continue
        buf.sort(key=key)
        cut = bisect.bisect_right(buf, newest - window, key=_TS)
        if cut:
            handed = max(handed, buf[cut - 1].ts)
            yield buf[:cut]
            del buf[:cut]
        # Sort again only once at least as many lines have come as are kept: a line is then
        # sorted a bounded number of times, however many lines the window holds.
        sort_at = 2 * len(buf)
    if buf:
        buf.sort(key=key)
        yield buf


class _Stamp(msgspec.Struct):
    ts: float


def lateness(path: Path) -> float:
    """How far out of time order ``path``'s lines are: the most that a line's ``ts`` lies
    behind the newest ``ts`` before it in the file (0.0 for a file in time order). With a
    window larger than this, :func:`ordered` hands every line on in time order."""
    decode = msgspec.json.Decoder(_Stamp).decode
    newest = float("-inf")
    most = 0.0
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                ts = decode(raw).ts
            except (msgspec.DecodeError, RecursionError):
                continue  # read_lines reports it
            if ts > newest:
                newest = ts
            elif newest - ts > most:
                most = newest - ts
    return most
