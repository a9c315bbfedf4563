"""Reading a run's events file back: the ground truth every analysis starts from."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["Finding", "ordered", "read_events", "sort_key"]


@dataclass(frozen=True)
class Finding:
    """Something about the files themselves (not the run): a torn or non-JSON line is an
    ``error`` (lines were lost); a missing manifest or a newer schema is a ``warning``."""

    line: int
    problem: str
    severity: str = "error"


def read_events(path: Path, findings: list[Finding] | None = None) -> Iterator[dict[str, Any]]:
    """Yield each event of ``path`` in file order; bad lines become findings, not exceptions."""
    decode = msgspec.json.Decoder(dict[str, Any]).decode
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n"):
                if findings is not None:
                    findings.append(Finding(number, "last line is torn (no newline)"))
                break
            try:
                event = decode(raw)
            except msgspec.DecodeError as exc:
                if findings is not None:
                    findings.append(Finding(number, f"not JSON: {exc}"))
                continue
            if _contract(event):
                yield event
            elif findings is not None:
                findings.append(Finding(number, "not an event line: it lacks ts, actor, seq or "
                                        "event, or one of them has the wrong type"))  # fmt: skip


def _contract(event: dict[str, Any]) -> bool:
    ts, actor, seq, name = (event.get(k) for k in ("ts", "actor", "seq", "event"))
    return (
        isinstance(ts, float | int)
        and isinstance(actor, str)
        and isinstance(seq, int)
        and isinstance(name, str)
    )


def sort_key(event: dict[str, Any]) -> tuple[float, str, int]:
    """Time order, then per-actor order: how every analysis walks a run."""
    return (event["ts"], event["actor"], event["seq"])


_BATCH = 1 << 15


def ordered(
    events: Iterable[dict[str, Any]], window: float = 1.0, findings: list[Finding] | None = None
) -> Iterator[dict[str, Any]]:
    """``events`` in time order, streamed with memory bounded by ``window`` seconds of log.

    The file is in order per actor (one connection each) and only roughly across actors (each
    sends in batches), so a sort over a sliding window restores the global order: an event is
    released once the file has reached events ``window`` seconds newer than it. The sort is
    stable and per-actor timestamps increase, so ties keep each actor's ``seq`` order.
    """
    key = itemgetter("ts")
    buf: list[dict[str, Any]] = []
    newest = float("-inf")
    released = float("-inf")
    late = 0
    sort_at = _BATCH
    for event in events:
        ts = event["ts"]
        if ts < released:
            late += 1
        if ts > newest:
            newest = ts
        buf.append(event)
        if len(buf) >= sort_at:
            buf.sort(key=key)
            cut = bisect.bisect_right(buf, newest - window, key=key)
            if cut:
                released = buf[cut - 1]["ts"]
                yield from buf[:cut]
                del buf[:cut]
            # Sort again only after at least as many new events as are kept: each event is
            # then sorted a bounded number of times, however dense the window is.
            sort_at = len(buf) + max(_BATCH, len(buf))
    buf.sort(key=key)
    yield from buf
    if late and findings is not None:
        findings.append(
            Finding(
                0,
                f"{late} events arrived more than {window:g} s out of order; "
                "they were analysed late",
            )
        )
