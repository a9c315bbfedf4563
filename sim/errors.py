"""The one exception hierarchy of sim.

Every error a user can cause names the thing that is wrong (the file, the dotted key, the
actor, the line), so that the CLI can print it as one line and exit without a traceback.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ActorCrashed",
    "ConfigError",
    "ProtocolError",
    "ReplayError",
    "ScenarioError",
    "SimError",
    "StorageError",
]


class SimError(Exception):
    """Base class of every error sim raises on purpose.

    ``run_dir`` is the run directory the error is recorded in, when a run got that far (its
    run.json says it failed, and why): the CLI prints it as it prints any run's.
    """

    run_dir: Path | None = None


class ConfigError(SimError):
    """A config file, a ``-s`` override or a command-line value is invalid.

    ``source`` is the file (or ``-s``) and ``key`` the dotted key, when known; the message
    reads ``carpark.toml: params.capacity: must be > 0``.
    """

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        self.source = source
        self.key = key
        self.reason = message
        parts = [p for p in (source, key, message) if p]
        # One line, whatever a file's keys and values hold: control characters are escaped.
        super().__init__(_printable(": ".join(parts)))


def _printable(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ScenarioError(SimError):
    """A scenario module is missing or does not describe a scenario correctly."""


class ActorCrashed(SimError):
    """An actor process raised an exception or died."""

    def __init__(self, actor: str, detail: str):
        self.actor = actor
        self.detail = detail
        super().__init__(f"{actor}: {detail}")


class ProtocolError(SimError):
    """A coordinator client broke the wire protocol (no secret, over-long line, not JSON)."""


class ReplayError(SimError):
    """A run directory or events file cannot be read back."""


class StorageError(SimError):
    """A run's files cannot be written (a full disk, a file size limit): the run is stopped
    and reported failed, and the message names the file and the reason."""
