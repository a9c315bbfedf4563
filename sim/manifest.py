"""run.json: the manifest of a run, written at its start (status "running") and at its end."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from pathlib import Path
from typing import Any

import msgspec

__all__ = [
    "SCHEMA_VERSION",
    "drop_reserve",
    "exit_code",
    "iso",
    "reserve",
    "versions",
    "write_manifest",
]

SCHEMA_VERSION = 1
# Room kept on disk for the final run.json (see reserve): a disk that fills up during the run
# must not leave the manifest saying "running".
_RESERVE = ".run.json.reserve"
# Enough for a manifest without its actors, metrics and verdicts (it is about 1.5 KiB).
_SHORT = 8192


def exit_code(status: str) -> int:
    """What ``sim run`` exits with for a run whose manifest says ``status``: 0 ok, 130
    interrupted, 1 any failure (failed, deadlock, timeout; "running" too: it never finished)."""
    return {"ok": 0, "interrupted": 130}.get(status, 1)


def iso(timestamp: float) -> str:
    """A Unix time as an ISO 8601 UTC string."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="milliseconds")


def versions() -> dict[str, str]:
    """What produced the run: Python, sim and the platform."""
    from . import __version__

    return {
        "python": sys.version.split()[0],
        "sim": __version__,
        "platform": platform.platform(),
    }


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write run.json atomically: a reader sees the old manifest or the new one, never half.

    If the disk is full, the space :func:`reserve` kept is given up and the write tried once
    more; an OSError that remains is the caller's to report."""
    path = run_dir / "run.json"
    tmp = run_dir / ".run.json.tmp"
    data = msgspec.json.format(msgspec.json.encode({"schema": SCHEMA_VERSION, **manifest}))
    try:
        tmp.write_bytes(data)
    except OSError:
        tmp.unlink(missing_ok=True)
        if not drop_reserve(run_dir):
            raise
        try:
            tmp.write_bytes(data)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, path)
    return path


def reserve(run_dir: Path, size: int) -> None:
    """Keep ``size`` bytes of the run directory's disk for the final run.json (a full disk
    during the run frees them); best effort: on a disk too full for that, room for a short
    manifest (how the run ended), else none."""
    for amount in (size, _SHORT):
        try:
            with open(run_dir / _RESERVE, "wb") as fh:
                fh.write(bytes(amount))  # written, not sparse: the blocks are really taken
                fh.flush()
                os.fsync(fh.fileno())
            return
        except OSError:
            drop_reserve(run_dir)


def drop_reserve(run_dir: Path) -> bool:
    """Give the reserved space back; True if there was any."""
    try:
        (run_dir / _RESERVE).unlink()
    except OSError:
        return False
    return True
