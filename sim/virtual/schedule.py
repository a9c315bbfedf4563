"""``schedule.json``: the choices a virtual run made, to replay it exactly.

Every virtual run writes one. It lists, step by step, which task ran (and a short digest of
which tasks were ready to: a replay of a changed config or scenario notices the difference
at the first step that differs), and which waiters each ``notify`` woke. ``python -m sim run
CONFIG --schedule FILE`` makes the same choices again; ``explore`` writes schedules of its own
(a prefix it forces, then the least surprising choices: no preemption).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from sim.errors import ConfigError, SimError

from .policy import Least, Policy

__all__ = ["Divergence", "Forced", "Schedule", "digest", "load_schedule"]

FORMAT = 1


class Divergence(SimError):
    """A replayed schedule does not fit the run: the run is not the one it was recorded from."""

    def __init__(self, step: int, what: str) -> None:
        self.step = step
        super().__init__(f"the schedule does not fit this run at step {step}: {what}")


def digest(ready: Sequence[str]) -> str:
    """A short fingerprint of a set of ready tasks (names sorted)."""
    return f"{zlib.crc32(chr(0).join(ready).encode()):08x}"


class _File(msgspec.Struct, forbid_unknown_fields=False):
    schedule: int
    steps: list[tuple[str, str | None]]
    woke: dict[str, list[str]] = msgspec.field(default_factory=dict)
    choices: list[tuple[list[str], list[str], str | None, str, dict[str, str]]] | None = None
    policy: str = ""
    seed: int | None = None
    scenario: str = ""
    preemptions: int | None = None


@dataclass
class Schedule:
    """The choices of one run: ``steps`` (task, digest of the ready set or None), the
    waiters each notify woke (by step), and where it came from."""

    steps: list[tuple[str, str | None]] = field(default_factory=list)
    woke: dict[int, list[str]] = field(default_factory=dict)
    policy: str = ""
    seed: int | None = None
    scenario: str = ""
    preemptions: int = 0
    #: Every step's choice (ready tasks, those among them whose step is local, the task that
    #: ran last, the one chosen), when the run recorded them (explore does).
    choices: list[tuple[list[str], list[str], str | None, str, dict[str, str]]] | None = None
    #: Replayed strictly (a divergence is an error), or only as far as it goes (explore's).
    strict: bool = True

    def write(self, path: Path) -> Path:
        data = {
            "schedule": FORMAT,
            "scenario": self.scenario,
            "policy": self.policy,
            "seed": self.seed,
            "preemptions": self.preemptions,
            "steps": self.steps,
            "woke": {str(k): v for k, v in sorted(self.woke.items())},
        }
        if self.choices is not None:
            data["choices"] = self.choices
        path.write_bytes(msgspec.json.encode(data) + b"\n")
        return path


def load_schedule(path: Path) -> Schedule:
    """Read a schedule file; a missing or broken one is a ConfigError naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from None
    try:
        data = msgspec.json.decode(raw, type=_File)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"not a schedule file: {exc}", source=str(path)) from None
    if data.schedule != FORMAT:
        raise ConfigError(f"schedule format {data.schedule}, this sim reads {FORMAT}",
                          source=str(path))  # fmt: skip
    woke: dict[int, list[str]] = {}
    for key, names in data.woke.items():
        try:
            woke[int(key)] = list(names)
        except ValueError:
            raise ConfigError(f"woke: {key!r} is not a step", source=str(path)) from None
    choices = None if data.choices is None else list(data.choices)
    return Schedule(
        [(t, d) for t, d in data.steps],
        woke,
        data.policy,
        data.seed,
        data.scenario,
        data.preemptions or 0,
        choices,
    )


class Forced(Policy):
    """Make the choices of ``schedule`` (checking each step's ready set where it recorded
    one), then, if ``strict`` is off, go on as :class:`~sim.virtual.policy.Least` would."""

    name = "forced"
    uses_local = True

    def __init__(self, schedule: Schedule, *, strict: bool = True) -> None:
        self._steps = schedule.steps
        self._woke = schedule.woke
        self._strict = strict
        self._least = Least()

    def choose(self, ready: Sequence[str], step: int, running: str | None) -> str:
        if step <= len(self._steps):
            task, expected = self._steps[step - 1]
            if expected is not None and self._strict and expected != digest(ready):
                shown = ", ".join(ready[:6]) + (" ..." if len(ready) > 6 else "")
                raise Divergence(step, f"it recorded {task} to run among other ready tasks than "
                                 f"these {len(ready)}: {shown}")  # fmt: skip
            if task in ready:
                return task
            if self._strict:
                raise Divergence(step, f"it recorded {task} to run, but {task} cannot run now "
                                 f"(ready: {', '.join(ready[:6])})")  # fmt: skip
        elif self._strict:
            raise Divergence(step, f"the run goes on past the schedule's {len(self._steps)} "
                             "steps")  # fmt: skip
        self._least.local = self.local
        return self._least.choose(ready, step, running)

    def pick(self, waiters: Sequence[str], n: int, step: int) -> list[str]:
        recorded = self._woke.get(step)
        if recorded is not None:
            if self._strict and any(w not in waiters for w in recorded):
                raise Divergence(step, f"it recorded a notify waking {', '.join(recorded)}, but "
                                 f"the waiters are {', '.join(waiters) or 'nobody'}")  # fmt: skip
            return [w for w in recorded if w in waiters][:n]
        return list(waiters[:n])
