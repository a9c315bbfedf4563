"""Reading a run's events file back: the ground truth every analysis starts from."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["Finding", "read_events"]


@dataclass(frozen=True)
class Finding:
    """Something wrong with the file itself (not with the run): a torn or non-JSON line."""

    line: int
    problem: str


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
                yield decode(raw)
            except msgspec.DecodeError as exc:
                if findings is not None:
                    findings.append(Finding(number, f"not JSON: {exc}"))


def sort_key(event: dict[str, Any]) -> tuple[float, str, int]:
    """Time order, then per-actor order: how every analysis walks a run."""
    return (event["ts"], event["actor"], event["seq"])
