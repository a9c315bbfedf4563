"""Bounded buffer: never over- or underflows with `while`; `if` shows the underflow."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from .conftest import alive, events_of, kind_verdicts, manifest_of, only_run_dir, sim, socket_files

# Capacity 1, fixed durations. The consumers reach the buffer at once and find it empty (the
# first items come after 2 minutes, 0.15 s); the producers make 2 items per 2 minutes, the
# consumers take only 2 per 3 minutes, so the producers must find the buffer full too.
QUICK = ["-s", "params.capacity=1", "-s", "params.items=10",
         "-s", "params.produce.dist=fixed", "-s", "params.produce.mean=2",
         "-s", "params.consume.dist=fixed", "-s", "params.consume.mean=3",
         "-s", "clock.speedup=800"]  # fmt: skip


def ordered(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(events, key=lambda e: (e["ts"], e["actor"], e["seq"]))


def cond_holders(events: list[dict[str, Any]]) -> int:
    """The most actors holding the condition's lock at once: from acquire ok to release invoke,
    and from wait ok back to the next wait invoke."""
    depth: dict[str, int] = defaultdict(int)
    saved: dict[str, int] = {}
    most = 0
    for e in ordered(events):
        if e["event"] != "op" or e["prim"] != "cond":
            continue
        actor, op, phase = e["actor"], e["op"], e["phase"]
        if op == "acquire" and phase == "ok":
            depth[actor] += 1
        elif op == "release" and phase == "invoke":
            depth[actor] -= 1
        elif op == "wait" and phase == "invoke":
            assert depth[actor] > 0, f"{actor} waited without the lock"
            saved[actor], depth[actor] = depth[actor], 0
        elif op == "wait":
            depth[actor] = saved.pop(actor)
        elif op in ("notify", "notify_all") and phase == "invoke":
            assert depth[actor] > 0, f"{actor} notified without the lock"
        most = max(most, sum(1 for d in depth.values() if d > 0))
    return most


def counts(events: list[dict[str, Any]]) -> list[int]:
    return [e["value"] for e in ordered(events) if e["event"] == "op" and e["prim"] == "count"
            and e["op"] == "write" and e["phase"] == "ok"]  # fmt: skip


@pytest.mark.timeout(60)
def test_buffer_stays_in_bounds_and_waits_on_full_and_empty(out: Path) -> None:
    result = sim("run", "bounded_buffer", *QUICK, "--seed", "4", "--out", str(out))
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(out)
    events = events_of(run_dir)
    written = counts(events)
    assert len(written) == 2 * 2 * 10  # one increment per put, one decrement per take
    assert min(written) == 0
    assert max(written) == 1
    assert cond_holders(events) == 1
    # Items leave in the order they came (a FIFO ring under one lock), each exactly once.
    puts = [e["item"] for e in ordered(events) if e["event"] == "put"]
    takes = [e["item"] for e in ordered(events) if e["event"] == "take"]
    assert takes == puts
    assert sorted(puts) == sorted(1000 * (p + 1) + n for p in range(2) for n in range(10))
    # Waits on full (by producers) and on empty (by consumers) both happened.
    waits = [e for e in events if e["event"] == "op" and e["prim"] == "cond"
             and e["op"] == "wait" and e["phase"] == "invoke"]  # fmt: skip
    on_full = sum(1 for e in waits if e["actor"].startswith("producer"))
    on_empty = sum(1 for e in waits if e["actor"].startswith("consumer"))
    assert on_full > 0
    assert on_empty > 0
    manifest = manifest_of(run_dir)
    assert manifest["metrics"]["waits_full"] == on_full
    assert manifest["metrics"]["waits_empty"] == on_empty
    assert manifest["metrics"]["fill_max"] == 1
    verdicts = {v["name"]: v["status"] for v in manifest["invariants"]}
    assert verdicts["cond: one holder of the lock at a time"] == "pass"
    assert verdicts["cond: wait and notify only while holding the lock"] == "pass"
    assert verdicts["cond: every wake-up follows a notify"] == "pass"
    assert verdicts["buffer never over- or underflows (0 <= count <= 1)"] == "pass"
    assert verdicts["every item taken once, in the order put"] == "pass"
    assert "fail" not in verdicts.values()
    for record in manifest["actors"].values():
        assert record["exitcode"] == 0
        assert not alive(record["pid"])
    assert not socket_files(out)


@pytest.mark.timeout(60)
def test_if_instead_of_while_underflows_as_expected(out: Path) -> None:
    result = sim("run", "bounded_buffer-if", "--out", str(out))
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(out)
    events = events_of(run_dir)
    assert min(counts(events)) < 0
    # The lock did its job all along: the bug is in the program, not in the Condition.
    assert cond_holders(events) == 1
    empty_takes = [e for e in events if e["event"] == "take" and e["item"] == 0]
    assert empty_takes
    manifest = manifest_of(run_dir)
    shown = {v["name"]: v for v in manifest["invariants"] if v["status"] == "expected"}
    assert {v["phenomenon"] for v in shown.values()} == {"out_of_bounds"}
    bounds = shown["buffer never over- or underflows (0 <= count <= 4)"]["detail"]
    assert bounds.startswith("buffer underflow: count went to -1")
    assert "did not check the condition again" in bounds
    verdicts = {v["name"]: v["status"] for v in manifest["invariants"]}
    assert verdicts["cond: one holder of the lock at a time"] == "pass"
    assert "fail" not in verdicts.values()
    assert "As this config expects, the run shows out_of_bounds" in result.stderr
    for record in manifest["actors"].values():
        assert not alive(record["pid"])


@pytest.mark.timeout(60)
def test_the_same_underflow_undeclared_fails(out: Path) -> None:
    result = sim("run", "bounded_buffer-if", "-s", "expect=[]", "--out", str(out))
    assert result.returncode == 1, result.stderr
    manifest = manifest_of(only_run_dir(out))
    assert manifest["status"] == "failed"
    failed = {v["name"] for v in manifest["invariants"] if v["status"] == "fail"}
    assert "buffer never over- or underflows (0 <= count <= 4)" in failed


@pytest.mark.timeout(60)
def test_while_fixes_the_underflow(out: Path) -> None:
    result = sim("run", "bounded_buffer-if", "-s", "params.guard=while", "-s", "expect=[]",
                 "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = events_of(only_run_dir(out))
    assert min(counts(events)) >= 0
    assert max(counts(events)) <= 4
    assert not [e for e in events if e["event"] == "take" and e["item"] == 0]
    # The same notify_all wakes all three consumers; two find the buffer empty and go back.
    assert manifest_of(only_run_dir(out))["metrics"]["futile_wakeups"] > 0


def _op(ts: float, actor: str, op: str, phase: str) -> dict[str, Any]:
    return {"ts": ts, "actor": actor, "seq": 0, "event": "op", "prim": "c", "op": op,
            "phase": phase}  # fmt: skip


def _verdicts(history: list[dict[str, Any]]) -> dict[str, str]:
    return {v.name: v.status for v in kind_verdicts("c", {"kind": "condition"}, history)}


def test_condition_checks_catch_planted_faults() -> None:
    one, waits, wakes = (
        "c: one holder of the lock at a time",
        "c: wait and notify only while holding the lock",
        "c: every wake-up follows a notify",
    )
    # a waits (giving the lock up), b takes the lock and notifies, a is back after b released.
    good = [_op(1, "a", "acquire", "ok"), _op(2, "a", "wait", "invoke"),
            _op(3, "b", "acquire", "ok"), _op(4, "b", "notify_all", "invoke"),
            _op(4.1, "b", "notify_all", "ok"), _op(5, "b", "release", "invoke"),
            _op(6, "a", "wait", "ok"), _op(7, "a", "release", "invoke")]  # fmt: skip
    assert set(_verdicts(good).values()) == {"pass"}
    # a comes back from its wait while b still holds the lock.
    overlap = [*good[:5], _op(4.5, "a", "wait", "ok")]
    assert _verdicts(overlap)[one] == "fail"
    # b acquires while a holds it.
    both = [_op(1, "a", "acquire", "ok"), _op(2, "b", "acquire", "ok")]
    assert _verdicts(both)[one] == "fail"
    # Waiting or notifying without the lock.
    assert _verdicts([_op(1, "a", "wait", "invoke")])[waits] == "fail"
    assert _verdicts([_op(1, "a", "notify", "invoke")])[waits] == "fail"
    # Woken although nobody notified.
    lonely = [_op(1, "a", "acquire", "ok"), _op(2, "a", "wait", "invoke"),
              _op(3, "a", "wait", "ok")]  # fmt: skip
    assert _verdicts(lonely)[wakes] == "fail"
    # Re-entrant: the owner may take its RLock twice; wait gives both levels up and back.
    nested = [_op(1, "a", "acquire", "ok"), _op(2, "a", "acquire", "ok"),
              _op(3, "a", "wait", "invoke"), _op(4, "b", "acquire", "ok"),
              _op(5, "b", "notify", "invoke"), _op(6, "b", "release", "invoke"),
              _op(7, "a", "wait", "ok"), _op(8, "a", "release", "invoke"),
              _op(9, "b", "acquire", "ok")]  # fmt: skip
    assert _verdicts(nested)[one] == "fail"  # a still holds one level at 9
    assert _verdicts(nested[:-1])[one] == "pass"


def test_a_wait_that_raised_is_not_taken_for_a_hold() -> None:
    # While b holds the lock, a calls wait() without it (it raises): one holder, not two.
    lines = [
        ("b", 0, "acquire", "invoke"),
        ("b", 1, "acquire", "ok"),
        ("a", 0, "wait", "invoke"),
        ("a", 1, "wait", "fail"),
        ("b", 2, "release", "invoke"),
        ("b", 3, "release", "ok"),
    ]
    events = [
        {"ts": ts / 10, "actor": actor, "pid": 1, "seq": seq, "event": "op", "prim": "buf",
         "kind": "condition", "op": op, "phase": phase}
        for ts, (actor, seq, op, phase) in enumerate(lines)
    ]  # fmt: skip
    one, with_lock, _ = kind_verdicts("buf", {"kind": "condition"}, events)
    assert one.status == "pass", one
    assert with_lock.status == "fail"  # the wait without the lock is what is wrong
