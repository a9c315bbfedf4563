"""The shared counter: lost updates without a lock around the whole read-then-write, none with.

Every test runs the real CLI (real processes, shared memory, the coordinator socket) and
recomputes the invariants from the events itself, independently of sim's own checks.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from sim import Verdict

from .conftest import Finished, finished, kind_verdicts

P, N = 3, 20

# Three processes, 20 increments each, a 0.1-minute window between read and write (5 ms).
QUICK = [
    "-s", f"params.processes={P}",
    "-s", f"params.increments={N}",
    "-s", "params.work=0.1",
    "-s", "clock.speedup=1200",
]  # fmt: skip


def shm_segments() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("psm_*")}


def mapped_anywhere(segment: str) -> bool:
    """True if any process on the host still maps ``/dev/shm/<segment>`` (a run in progress)."""
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            if f"/dev/shm/{segment}" in maps.read_text(encoding="ascii", errors="replace"):
                return True
        except OSError:
            pass
    return False


def run(out: Path, config: str, *overrides: str) -> Finished:
    """Run ``config`` quickly with ``overrides`` into a fresh folder under ``out``."""
    before = shm_segments()
    result = finished(out, config, *overrides, args=(*QUICK, "--seed", "3"), timeout=60)
    # Nothing outlives the run: processes and socket files (checked by `finished`), and
    # shared-memory segments.
    leaked = [s for s in shm_segments() - before if not mapped_anywhere(s)]
    assert not leaked
    return result


def ops(events: list[dict[str, Any]], prim: str) -> list[dict[str, Any]]:
    return sorted(
        (e for e in events if e["event"] == "op" and e["prim"] == prim),
        key=lambda e: (e["ts"], e["actor"], e["seq"]),
    )


def final_values(events: list[dict[str, Any]]) -> dict[Any, int]:
    """What the auditor read, per slot, after the last barrier."""
    return {e.get("index"): e["value"] for e in ops(events, "counter")
            if e["actor"] == "auditor" and e["op"] == "read" and e["phase"] == "ok"}  # fmt: skip


def cycles(events: list[dict[str, Any]]) -> list[tuple[Any, str, float, int, float]]:
    """Each worker's read followed by its write of a slot: (slot, actor, read ts, value read,
    write ts)."""
    found = []
    last_read: dict[tuple[Any, str], tuple[float, int]] = {}
    for e in ops(events, "counter"):
        key = (e.get("index"), e["actor"])
        if e["op"] == "read" and e["phase"] == "ok":
            last_read[key] = (e["ts"], e["value"])
        elif e["op"] == "write" and e["phase"] == "invoke" and key in last_read:
            read_ts, seen = last_read.pop(key)
            assert e["value"] == seen + 1  # every write is an increment of what was read
            found.append((key[0], key[1], read_ts, seen, e["ts"]))
    return found


def collisions(events: list[dict[str, Any]]) -> int:
    """Pairs of cycles of two workers that read the same value, each before the other wrote."""
    cs = cycles(events)
    return sum(
        1
        for i, (slot, a, a_read, a_seen, a_write) in enumerate(cs)
        for slot_b, b, b_read, b_seen, b_write in cs[i + 1 :]
        if slot == slot_b and a != b and a_seen == b_seen and a_read < b_write and b_read < a_write
    )


def held_intervals(events: list[dict[str, Any]], lock: str) -> list[tuple[float, float, str]]:
    """[acquire ok, release invoke] per holder of ``lock``."""
    taken: dict[str, float] = {}
    spans = []
    for e in ops(events, lock):
        if e["op"] == "acquire" and e["phase"] == "ok":
            taken[e["actor"]] = e["ts"]
        elif e["op"] == "release" and e["phase"] == "invoke":
            spans.append((taken.pop(e["actor"]), e["ts"], e["actor"]))
    return sorted(spans)


def verdicts(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in manifest["invariants"]}


# (config, overrides, slots): every store, with no lock and with a lock around each access.
DEMOS = [
    ("shared_counter.toml", (), 1),
    ("shared_counter-value-lock.toml", (), 1),
    ("shared_counter-array.toml", (), 3),
    ("shared_counter-array.toml", ("params.lock=value",), 3),
    ("shared_counter-shm.toml", (), 1),
    ("shared_counter-shm.toml", ("params.lock=value",), 1),
]
FIXES = [
    ("shared_counter-locked.toml", "counter.lock", 1),
    ("shared_counter-array.toml", "counter.lock", 3),
    ("shared_counter-shm-locked.toml", "mutex", 1),
]


@pytest.mark.parametrize(("config", "overrides", "slots"), DEMOS)
@pytest.mark.timeout(60)
def test_demo_loses_updates_and_says_so(
    out: Path, config: str, overrides: tuple[str, ...], slots: int
) -> None:
    result = run(out, config, *overrides)
    assert result.code == 0, result.stderr
    events = result.events
    expected = P * N * slots
    final = final_values(events)
    assert len(final) == slots
    lost = expected - sum(final.values())
    # Lost updates, and the log shows why: two workers read the same value before either wrote.
    assert lost > 0
    pairs = collisions(events)
    assert pairs > 0
    assert len(cycles(events)) == expected  # every increment was a read, then a write

    manifest = result.manifest
    metrics = manifest["metrics"]
    assert metrics["expected"] == expected
    assert metrics["final"] == sum(final.values())
    assert metrics["lost_updates"] == lost
    assert metrics["collisions"] == pairs
    v = verdicts(manifest)
    scenario_check = v["no lost updates (final value = processes x increments)"]
    assert scenario_check["status"] == "expected"
    assert scenario_check["detail"].startswith(f"lost {100 * lost / expected:.0f} % of updates")
    # The kind check finds the same number from the op events alone.
    kind_check = v["counter: no lost updates"]
    assert kind_check["status"] == "expected"
    assert kind_check["detail"].startswith(
        f"lost {100 * lost / expected:.0f} % of updates ({lost} of {expected} increments)"
    )
    assert {x["status"] for x in v.values()} <= {"pass", "expected", "skip"}
    assert "As this config expects, the run shows lost_updates" in result.stderr


@pytest.mark.parametrize(("config", "overrides", "slots"), DEMOS)
@pytest.mark.timeout(60)
def test_lost_updates_fail_a_run_that_does_not_expect_them(
    out: Path, config: str, overrides: tuple[str, ...], slots: int
) -> None:
    result = run(out, config, *overrides, "expect=[]")
    assert result.code == 1
    assert result.manifest["status"] == "failed"
    failed = {n for n, x in verdicts(result.manifest).items() if x["status"] == "fail"}
    assert failed == {"no lost updates (final value = processes x increments)",
                      "counter: no lost updates"}  # fmt: skip


@pytest.mark.parametrize(("config", "lock", "slots"), FIXES)
@pytest.mark.timeout(60)
def test_one_lock_around_read_and_write_loses_nothing(
    out: Path, config: str, lock: str, slots: int
) -> None:
    result = run(out, config, "params.lock=explicit", "expect=[]")
    assert result.code == 0, result.stderr
    events = result.events
    final = final_values(events)
    assert final == dict.fromkeys(final, P * N)
    assert len(final) == slots
    assert collisions(events) == 0

    # Mutual exclusion, from the log: held intervals never overlap, and every read and write of
    # a worker lies inside one of its own.
    spans = held_intervals(events, lock)
    assert len(spans) == P * N * slots
    for (_, end, _), (start, _, _) in pairwise(spans):
        assert end <= start
    for e in ops(events, "counter"):
        if e["actor"] != "auditor":
            assert any(a == e["actor"] and s <= e["ts"] <= t for s, t, a in spans)

    v = verdicts(result.manifest)
    assert v["no lost updates (final value = processes x increments)"]["status"] == "pass"
    assert v["counter: no lost updates"]["status"] == "pass"
    owner = (
        f"{lock}: one owner at a time" if lock == "counter.lock" else f"{lock}: at most 1 holders"
    )
    assert v[owner]["status"] == "pass"
    assert {x["status"] for x in v.values()} == {"pass"}
    assert result.manifest["metrics"]["lost_updates"] == 0


@pytest.mark.timeout(60)
def test_the_fix_applied_to_a_demo_that_expects_lost_updates_fails(out: Path) -> None:
    # The demo's phenomenon did not appear: a config that promises it must say so.
    result = run(out, "shared_counter.toml", "params.lock=explicit")
    assert result.code == 1
    detail = verdicts(result.manifest)["counter: no lost updates"]["detail"]
    assert detail.startswith("expected lost_updates, but it did not appear")


def test_kind_checks_catch_a_stale_write_and_a_shared_lock() -> None:
    # A hand-written history: a and b both read 5; a writes 6, then b writes 6 over it; c reads
    # the final 6.
    def op(ts: float, actor: str, op: str, phase: str, **kw: Any) -> dict[str, Any]:
        return {"ts": ts, "actor": actor, "seq": 0, "event": "op", "prim": "v", "op": op,
                "phase": phase, **kw}  # fmt: skip

    history = [
        op(0.1, "a", "read", "ok", value=5),
        op(0.2, "b", "read", "ok", value=5),
        op(0.3, "a", "write", "invoke", value=6),
        op(0.31, "a", "write", "ok", value=6),
        op(0.4, "b", "write", "invoke", value=6),
        op(0.41, "b", "write", "ok", value=6),
        op(0.45, "c", "read", "invoke"),
        op(0.46, "c", "read", "ok", value=6),
        {**op(0.5, "a", "acquire", "ok"), "prim": "v.lock", "kind": "rlock"},
        {**op(0.6, "b", "acquire", "ok"), "prim": "v.lock", "kind": "rlock"},
    ]
    lost, owner = kind_verdicts("v", {"kind": "value", "lock": True}, history)
    assert isinstance(lost, Verdict)
    assert lost.status == "fail"
    assert lost.phenomenon == "lost_updates"
    assert lost.detail.startswith("lost 50 % of updates (1 of 2 increments)")
    assert "1 times two processes read the same value" in lost.detail
    assert "1 writes replaced a value their process had not read" in lost.detail
    assert owner.status == "fail"
    assert "b acquired v.lock at 0.600000 s while a still owned it" in owner.detail
    # Nothing to look at is a skip, never a pass.
    assert all(v.status == "skip" for v in kind_verdicts("w", {"kind": "array", "lock": True}, []))


@pytest.mark.timeout(120)
def test_a_virtual_run_counts_its_lost_updates_exactly_on_the_value_itself(tmp_path: Path) -> None:
    # With every worker reading before any writes (the fifo schedule), the counter's own check
    # passed ("each wrote over the value it had read") while 300 of 400 increments were lost:
    # no write replaced a value other than the one its process read, and lines of one virtual
    # time were compared by time alone, so the final read never came "after" the last write.
    import sim as api

    settings = {"clock.mode": "virtual", "engine.schedule": "fifo"}
    run = api.run("shared_counter", set=settings, seed=1, out=tmp_path / "a")
    (own,) = [v for v in run.verdicts if v.name == "counter: no lost updates"]
    assert own.status == "expected"  # printed "shown": the phenomenon the config declares
    assert own.detail.startswith("lost 75 % of updates (300 of 400 increments); ")
    # Not declared, it fails the run; a random schedule counts exactly too.
    bare = api.run("shared_counter", set={**settings, "expect": []}, seed=1, out=tmp_path / "b")
    assert not bare.ok
    assert [v.status for v in bare.verdicts if v.name == own.name] == ["fail"]
    shuffled = api.run("shared_counter", set={"clock.mode": "virtual"}, seed=1,
                       out=tmp_path / "c")  # fmt: skip
    (counted,) = [v for v in shuffled.verdicts if v.name == own.name]
    lost = shuffled.metrics["lost_updates"]
    assert counted.detail.startswith(f"lost {100 * lost / 400:.0f} % of updates ({lost} of 400 ")


@pytest.mark.timeout(120)
def test_a_virtual_run_whose_lines_share_one_time_still_counts_its_collisions(
    tmp_path: Path,
) -> None:
    # With no work between read and write every line of the run has ts 0.0: two workers that
    # read the same value before either wrote were counted 0 times (compared by time alone),
    # beside 11 lost increments. Each lost increment takes a pair of such cycles.
    import sim as api

    settings = {"clock.mode": "virtual", "params.increments": 5, "params.work": 0}
    run = api.run("shared_counter", set=settings, seed=2, out=tmp_path)
    lost, collisions = run.metrics["lost_updates"], run.metrics["collisions"]
    assert lost > 0
    assert collisions >= lost
    (own,) = [v for v in run.verdicts if v.name == "counter: no lost updates"]
    assert f"; {collisions} times two processes read the same value" in own.detail
