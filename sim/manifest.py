"""run.json: the manifest of a run, written at its start (status "running") and at its end."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["SCHEMA_VERSION", "iso", "versions", "write_manifest"]

SCHEMA_VERSION = 1


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
    """Write run.json atomically: a reader sees the old manifest or the new one, never half."""
    path = run_dir / "run.json"
    tmp = run_dir / ".run.json.tmp"
    tmp.write_bytes(
        msgspec.json.format(msgspec.json.encode({"schema": SCHEMA_VERSION, **manifest}))
    )
    os.replace(tmp, path)
    return path
