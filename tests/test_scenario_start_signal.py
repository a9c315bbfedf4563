"""Start signal: nobody starts before set(); the false start appears and goes with the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import alive, events_of, kind_verdicts, manifest_of, only_run_dir, sim, socket_files

QUICK = ["-s", "params.runners=6", "-s", "params.race.mean=1", "-s", "clock.speedup=600"]


def ordered(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(events, key=lambda e: (e["ts"], e["actor"], e["seq"]))


def first_set(events: list[dict[str, Any]]) -> float:
    return float(min(e["ts"] for e in events if e["event"] == "op" and e["prim"] == "gun"
               and e["op"] == "set" and e["phase"] == "invoke"))  # fmt: skip


def assert_clean_end(run_dir: Path, out: Path) -> None:
    for record in manifest_of(run_dir)["actors"].values():
        assert record["exitcode"] == 0
        assert not alive(record["pid"])
    assert not socket_files(out)


@pytest.mark.timeout(60)
def test_nobody_starts_before_the_signal(out: Path) -> None:
    result = sim("run", "start_signal", *QUICK, "--out", str(out))
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(out)
    events = events_of(run_dir)
    fired = first_set(events)
    waits = [e for e in events if e["event"] == "op" and e["prim"] == "gun" and e["op"] == "wait"]
    returned = [e for e in waits if e["phase"] == "ok"]
    assert len(returned) == 6
    # The Event's invariant, measured against set *invoke*: a wait may return between the
    # setter's invoke and ok lines, never before the invoke.
    assert all(e["ts"] > fired for e in returned)
    starts = [e for e in events if e["event"] == "start"]
    assert len(starts) == 6
    assert all(e["ts"] > fired for e in starts)
    # Wake-up latency: from the set invoke to each wait ok, for those waiting at the shot.
    invoked = {e["actor"]: e["ts"] for e in waits if e["phase"] == "invoke"}
    woken = [e for e in returned if invoked[e["actor"]] < fired]
    assert woken  # arrive <= 4 min, delay 5 min: normally all six
    latencies = sorted((e["ts"] - fired) * 1000 for e in woken)
    metrics = manifest_of(run_dir)["metrics"]
    assert metrics["woken"] == len(woken)
    assert metrics["late"] == 6 - len(woken)
    assert metrics["false_starts"] == 0
    assert metrics["wake_latency_max"] == pytest.approx(latencies[-1])
    assert metrics["wake_spread"] == pytest.approx(latencies[-1] - latencies[0])
    verdicts = {v["name"]: v["status"] for v in manifest_of(run_dir)["invariants"]}
    assert verdicts["gun: no wait returned before a set"] == "pass"
    assert verdicts["nobody started before the signal"] == "pass"
    assert verdicts["every runner finished"] == "pass"
    assert "fail" not in verdicts.values()
    assert_clean_end(run_dir, out)


@pytest.mark.timeout(60)
def test_false_start_appears_when_expected(out: Path) -> None:
    result = sim("run", "start_signal-false-start", "--out", str(out))
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(out)
    events = events_of(run_dir)
    fired = first_set(events)
    early = [e for e in events if e["event"] == "start" and e["ts"] < fired]
    assert len(early) == 8
    # Each early start follows a wait that timed out: the Event itself broke no promise.
    for start in early:
        mine = [
            e for e in ordered(events) if e["actor"] == start["actor"] and e["ts"] < start["ts"]
        ]
        assert mine[-1]["op"] == "wait"
        assert mine[-1]["phase"] == "timeout"
    assert not [e for e in events if e.get("prim") == "gun" and e.get("phase") == "ok"
                and e["op"] == "wait"]  # fmt: skip
    manifest = manifest_of(run_dir)
    shown = [v for v in manifest["invariants"] if v["status"] == "expected"]
    assert [v["phenomenon"] for v in shown] == ["false_start"]
    assert "8 of 8 runners started before the signal" in shown[0]["detail"]
    assert manifest["metrics"]["false_starts"] == 8
    assert "As this config expects, the run shows false_start" in result.stderr
    assert_clean_end(run_dir, out)


@pytest.mark.timeout(60)
def test_the_same_false_start_undeclared_fails(out: Path) -> None:
    result = sim("run", "start_signal-false-start", *QUICK, "-s", "expect=[]", "--out", str(out))
    assert result.returncode == 1, result.stderr
    manifest = manifest_of(only_run_dir(out))
    assert manifest["status"] == "failed"
    failed = [v["name"] for v in manifest["invariants"] if v["status"] == "fail"]
    assert failed == ["nobody started before the signal"]


@pytest.mark.timeout(60)
def test_checking_what_wait_returned_fixes_the_false_start(out: Path) -> None:
    result = sim("run", "start_signal-false-start", *QUICK, "-s", "params.on_timeout=wait_again",
                 "-s", "expect=[]", "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(out)
    events = events_of(run_dir)
    fired = first_set(events)
    assert all(e["ts"] > fired for e in events if e["event"] == "start")
    # They did time out, and waited again.
    assert [e for e in events if e["event"] == "still_waiting"]
    verdicts = {v["name"]: v["status"] for v in manifest_of(run_dir)["invariants"]}
    assert verdicts["nobody started before the signal"] == "pass"
    assert verdicts["gun: no wait returned before a set"] == "pass"


def _op(ts: float, actor: str, op: str, phase: str) -> dict[str, Any]:
    return {"ts": ts, "actor": actor, "seq": 0, "event": "op", "prim": "e", "op": op,
            "phase": phase}  # fmt: skip


def _status(history: list[dict[str, Any]]) -> str:
    (verdict,) = kind_verdicts("e", {"kind": "event"}, history)
    return verdict.status


def test_event_check_measures_against_set_invoke() -> None:
    wait = [_op(1, "r", "wait", "invoke")]
    # Returned between the set's invoke and its ok: allowed.
    assert _status([*wait, _op(2, "s", "set", "invoke"), _op(2.1, "r", "wait", "ok"),
                    _op(2.2, "s", "set", "ok")]) == "pass"  # fmt: skip
    # Returned before any set: a violation.
    assert _status([*wait, _op(2, "r", "wait", "ok"), _op(3, "s", "set", "invoke"),
                    _op(3.1, "s", "set", "ok")]) == "fail"  # fmt: skip
    # After set and a completed clear, a new wait may not return before the next set.
    cleared = [_op(1, "s", "set", "invoke"), _op(1.1, "s", "set", "ok"),
               _op(2, "s", "clear", "invoke"), _op(2.1, "s", "clear", "ok")]  # fmt: skip
    assert _status([*cleared, _op(3, "r", "wait", "invoke"), _op(3.5, "r", "wait", "ok")]) == "fail"
    assert _status([*cleared, _op(3, "r", "wait", "invoke"), _op(4, "s", "set", "invoke"),
                    _op(4.1, "r", "wait", "ok")]) == "pass"  # fmt: skip
    # Timed-out waits are no returns; nothing returned: skip.
    assert _status([*wait, _op(2, "r", "wait", "timeout")]) == "skip"
