"""The barrier: no worker starts phase k+1 before all finished phase k; without a barrier the
fast ones run ahead. Also the barrier's own invariants (generations) on planted histories.

The runs use the real CLI (real processes, the coordinator socket); the invariants are
recomputed here from the events, independently of sim's own checks.
"""

from __future__ import annotations

from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from .conftest import finished, kind_verdicts

WORKERS, PHASES = 4, 4
QUICK = ["-s", f"params.phases={PHASES}", "-s", "clock.speedup=4800"]


run = partial(finished, args=QUICK, timeout=60)  # a quick run of a config


def early_starts(events: list[dict[str, Any]]) -> int:
    """Phase starts (k >= 1) logged before the last ``phase_end`` of phase k-1."""
    last_end: dict[int, float] = defaultdict(float)
    for e in events:
        if e["event"] == "phase_end":
            last_end[e["k"]] = max(last_end[e["k"]], e["ts"])
    return sum(e["event"] == "phase_start" and e["k"] > 0 and e["ts"] < last_end[e["k"] - 1]
               for e in events)  # fmt: skip


@pytest.mark.timeout(60)
def test_workers_move_through_the_phases_in_lockstep(out: Path) -> None:
    result = run(out, "barrier")
    assert result.code == 0
    assert early_starts(result.events) == 0
    ends = [e for e in result.events if e["event"] == "phase_end"]
    assert len(ends) == WORKERS * PHASES
    # With exactly `parties` workers, the waits return generation by generation: each run of
    # four returns has the indices 0..3 once, and returns only after all four waits began.
    waits = [e for e in result.events if e["event"] == "op" and e["prim"] == "barrier"]
    oks = [e for e in waits if e["phase"] == "ok"]
    assert len(oks) == WORKERS * PHASES
    for g in range(PHASES):
        generation = oks[g * WORKERS : (g + 1) * WORKERS]
        assert sorted(e["index"] for e in generation) == list(range(WORKERS))
        began = [e["ts"] for e in waits if e["phase"] == "invoke"][g * WORKERS : (g + 1) * WORKERS]
        assert max(began) < min(e["ts"] for e in generation)
    # Exactly one worker (the one given index 0) reports each phase done.
    done = [e["k"] for e in result.events if e["event"] == "phase_done"]
    assert done == list(range(PHASES))
    verdicts = {v["name"]: v["status"] for v in result.manifest["invariants"]}
    assert verdicts["barrier: generations of 4"] == "pass"
    assert set(verdicts.values()) == {"pass"}
    assert result.manifest["metrics"]["phases_done"] == PHASES


@pytest.mark.timeout(60)
def test_without_a_barrier_fast_workers_run_ahead(out: Path) -> None:
    result = run(out, "barrier-none")
    assert result.code == 0
    early = early_starts(result.events)
    assert early > 0
    shown = [v for v in result.manifest["invariants"] if v["status"] == "expected"]
    assert [v["phenomenon"] for v in shown] == ["phases_overlap"]
    assert shown[0]["detail"].startswith(f"{early} of {WORKERS * PHASES} phase starts")
    result = run(out, "barrier-none", "expect=[]")
    assert result.code == 1
    assert result.manifest["status"] == "failed"


def _wait(actor: str, phase: str, ts: float, index: int | None = None) -> dict[str, Any]:
    event = {"event": "op", "prim": "b", "kind": "barrier", "op": "wait", "phase": phase,
             "actor": actor, "ts": ts, "seq": 0}  # fmt: skip
    if index is not None:
        event["index"] = index
    return event


def _verdict(events: list[dict[str, Any]], parties: int = 3) -> tuple[str, str]:
    found = kind_verdicts("b", {"kind": "barrier", "parties": parties}, events)
    (verdict,) = [v for v in found if v.name.startswith("b: generations")]
    return verdict.status, verdict.detail


def test_generations_allow_a_straggler_that_logs_late() -> None:
    # Generation 1: a, b, c. c has left the barrier but logs its return only after the next
    # generation (d, e, f) has passed: a log can show that, the barrier is still correct.
    events = [_wait("a", "invoke", 1), _wait("b", "invoke", 2), _wait("c", "invoke", 3),
              _wait("a", "ok", 4, 0), _wait("b", "ok", 4.1, 1),
              _wait("d", "invoke", 5), _wait("e", "invoke", 6), _wait("f", "invoke", 7),
              _wait("f", "ok", 8, 2), _wait("d", "ok", 8.1, 0), _wait("e", "ok", 8.2, 1),
              _wait("c", "ok", 9, 2)]  # fmt: skip
    status, detail = _verdict(events)
    assert status == "pass", detail
    assert detail.startswith("2 generations of 3")


def test_generations_catch_an_early_pass_and_a_short_generation() -> None:
    # b returns when only two waits have begun.
    early = [_wait("a", "invoke", 1), _wait("b", "invoke", 2), _wait("b", "ok", 3, 0),
             _wait("c", "invoke", 4), _wait("a", "ok", 5, 1), _wait("c", "ok", 6, 2)]  # fmt: skip
    status, detail = _verdict(early)
    assert status == "fail"
    assert "b passed at 3.000000 s when only 2 waits had begun" in detail
    # Index 0 twice among three returns: no grouping into generations explains that.
    short = [_wait(a, "invoke", t) for a, t in zip("abc", (1, 2, 3), strict=True)]
    short += [_wait("a", "ok", 4, 0), _wait("b", "ok", 4.1, 1), _wait("c", "ok", 4.2, 0)]
    status, detail = _verdict(short)
    assert status == "fail"
    assert "has 2 returns instead of 3" in detail
    assert _verdict([]) == ("skip", "no wait on b returned")
