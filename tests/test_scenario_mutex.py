"""Lock and RLock: one process in the critical section at a time; a race without a lock; an
RLock re-entered by its owner, a Lock re-entered deadlocks.

The runs use the real CLI (real processes, the coordinator socket); the invariants are
recomputed here from the events, independently of sim's own checks.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest

from .conftest import finished, kind_verdicts

QUICK = ["-s", "params.rounds=3", "-s", "clock.speedup=3000"]


run = partial(finished, args=QUICK, timeout=60)  # a quick run of a config


def inside_counts(events: list[dict[str, Any]]) -> list[int]:
    """Processes inside the critical section (outermost level) after each enter."""
    inside: set[str] = set()
    counts = []
    for e in events:
        if e["event"] in ("enter", "leave") and e["level"] == 0:
            if e["event"] == "enter":
                inside.add(e["actor"])
                counts.append(len(inside))
            else:
                inside.discard(e["actor"])
    return counts


def owners(events: list[dict[str, Any]], prim: str) -> tuple[int, int]:
    """(most owners at once, deepest nesting) of a lock, from acquire ok / release invoke."""
    depth: dict[str, int] = {}
    most = deepest = 0
    for e in events:
        if e["event"] != "op" or e["prim"] != prim:
            continue
        if e["op"] == "acquire" and e["phase"] == "ok":
            depth[e["actor"]] = depth.get(e["actor"], 0) + 1
        elif e["op"] == "release" and e["phase"] == "invoke":
            depth[e["actor"]] -= 1
        holding = [d for d in depth.values() if d > 0]
        most = max(most, len(holding))
        deepest = max(deepest, *holding, 0)
    return most, deepest


def statuses(manifest: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v["status"] for v in manifest["invariants"]}


@pytest.mark.timeout(60)
def test_a_lock_admits_one_process_at_a_time(out: Path) -> None:
    result = run(out, "mutex")
    assert result.code == 0
    counts = inside_counts(result.events)
    assert len(counts) == 4 * 3
    assert max(counts) == 1
    assert owners(result.events, "guard") == (1, 1)
    # Every "enter" comes right after its own acquire ok, every "leave" before its release.
    last_op: dict[str, tuple[str, str]] = {}
    for e in result.events:
        if e["event"] == "op":
            last_op[e["actor"]] = (e["op"], e["phase"])
        elif e["event"] == "enter":
            assert last_op[e["actor"]] == ("acquire", "ok")
    assert set(statuses(result.manifest).values()) == {"pass"}
    assert statuses(result.manifest)["guard: at most 1 holders"] == "pass"
    assert result.manifest["metrics"]["inside_max"] == 1


@pytest.mark.timeout(60)
def test_an_rlock_is_re_entered_by_its_owner(out: Path) -> None:
    result = run(out, "mutex-rlock")
    assert result.code == 0
    assert max(inside_counts(result.events)) == 1
    most, deepest = owners(result.events, "guard")
    assert (most, deepest) == (1, 3)
    levels = [e["level"] for e in result.events if e["event"] == "enter"]
    assert sorted(set(levels)) == [0, 1, 2]
    verdicts = statuses(result.manifest)
    assert verdicts["guard: one owner at a time"] == "pass"
    assert verdicts["guard: released only by its owner"] == "pass"
    assert set(verdicts.values()) == {"pass"}
    assert result.manifest["metrics"]["depth_max"] == 3


@pytest.mark.timeout(60)
def test_without_a_lock_the_race_shows_and_is_declared(out: Path) -> None:
    result = run(out, "mutex-none")
    assert result.code == 0
    crowded = [c for c in inside_counts(result.events) if c > 1]
    assert crowded, "no two processes were ever inside together"
    assert not [e for e in result.events if e["event"] == "op"]  # nothing guarded it
    shown = [v for v in result.manifest["invariants"] if v["status"] == "expected"]
    assert [v["phenomenon"] for v in shown] == ["race"]
    assert f"{len(crowded)} of 12 entries" in shown[0]["detail"]
    assert result.manifest["metrics"]["crowded_entries"] == len(crowded)


@pytest.mark.timeout(60)
def test_the_race_undeclared_fails_and_a_lock_removes_it(out: Path) -> None:
    result = run(out, "mutex-none", "expect=[]")
    assert result.code == 1
    assert statuses(result.manifest)["one process in the critical section at a time"] == "fail"
    result = run(out, "mutex-none", "expect=[]", "params.lock=lock")
    assert result.code == 0
    assert max(inside_counts(result.events)) == 1


@pytest.mark.timeout(60)
def test_a_plain_lock_re_entered_deadlocks_on_itself(out: Path) -> None:
    result = run(out, "mutex-rlock", "params.lock=lock", 'expect=["deadlock"]')
    assert result.code == 0
    (deadlock,) = [e for e in result.events if e["event"] == "deadlock"]
    # The process inside waits for the lock it holds itself; everybody else waits for it.
    (holder,) = [e["actor"] for e in result.events if e["event"] == "enter"]
    waits = {w["actor"]: w for w in deadlock["waits"]}
    assert waits[holder]["held_by"] == [holder]
    assert {w["prim"] for w in waits.values()} == {"guard"}
    assert result.manifest["status"] == "ok"


def _op(actor: str, op: str, phase: str, ts: float) -> dict[str, Any]:
    return {"event": "op", "prim": "r", "kind": "rlock", "actor": actor, "op": op,
            "phase": phase, "ts": ts, "seq": 0}  # fmt: skip


def _verdicts(events: list[dict[str, Any]]) -> list[str]:
    # The owner checks (one owner at a time; released by its owner), not the leak check.
    found = kind_verdicts("r", {"kind": "rlock"}, events)
    return [v.status for v in found if "no unit lost" not in v.name]


def test_rlock_checks_catch_two_owners_and_a_foreign_release() -> None:
    nested = [_op("a", "acquire", "ok", 1), _op("a", "acquire", "ok", 2),
              _op("a", "release", "invoke", 3), _op("a", "release", "ok", 3.1),
              _op("a", "release", "invoke", 4), _op("a", "release", "ok", 4.1)]  # fmt: skip
    assert _verdicts(nested) == ["pass", "pass"]
    # b gets in while a is still one level deep, and b's release succeeds on a's lock.
    broken = [*nested[:4], _op("b", "acquire", "ok", 3.5), _op("b", "release", "invoke", 3.6),
              _op("b", "release", "ok", 3.7), _op("c", "release", "invoke", 3.8),
              _op("c", "release", "ok", 3.9)]  # fmt: skip
    assert _verdicts(broken) == ["fail", "fail"]
    # A release by a non-owner that the lock refused is correct behaviour.
    refused = [_op("a", "acquire", "ok", 1), _op("b", "release", "invoke", 2),
               _op("b", "release", "fail", 2.1), _op("a", "release", "invoke", 3),
               _op("a", "release", "ok", 3.1)]  # fmt: skip
    assert _verdicts(refused) == ["pass", "pass"]
    assert _verdicts([]) == ["skip", "skip"]
