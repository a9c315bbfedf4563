"""Queue workers: every item consumed once, FIFO per producer, task_done/join, from the log."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from .conftest import alive, events_of, kind_verdicts, manifest_of, only_run_dir, sim, socket_files

QUICK = ["-s", "params.items=12", "-s", "clock.speedup=3000"]


def ordered(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(events, key=lambda e: (e["ts"], e["actor"], e["seq"]))


def queue_ops(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in ordered(events) if e["event"] == "op" and e["prim"] == "jobs"]


def transfers(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each item's put and the get that returned it, matched by value (puts in invoke order)."""
    waiting: dict[str, list[dict[str, Any]]] = defaultdict(list)
    asked: dict[str, float] = {}
    putting: dict[str, dict[str, Any]] = {}
    found = []
    for e in queue_ops(events):
        if e["op"] == "put" and e["phase"] == "invoke":
            t = {"item": e["item"], "producer": e["actor"], "put": e["ts"]}
            waiting[json.dumps(e["item"], sort_keys=True)].append(t)
            putting[e["actor"]] = t
            found.append(t)
        elif e["op"] == "put" and e["phase"] == "ok":
            putting.pop(e["actor"])["put_ok"] = e["ts"]
        elif e["op"] == "get" and e["phase"] == "invoke":
            asked[e["actor"]] = e["ts"]
        elif e["op"] == "get" and e["phase"] == "ok":
            candidates = waiting[json.dumps(e["item"], sort_keys=True)]
            assert candidates, f"{e['actor']} got {e['item']}, which nobody put"
            t = candidates.pop(0)
            t.update(consumer=e["actor"], asked=asked.pop(e["actor"]), got=e["ts"])
    return found


def assert_clean_end(run_dir: Path, out: Path) -> None:
    manifest = manifest_of(run_dir)
    for record in manifest["actors"].values():
        assert record["exitcode"] == 0
        assert not alive(record["pid"])
    assert not socket_files(out)


@pytest.mark.timeout(60)
def test_every_item_is_consumed_once_and_fifo_per_producer(out: Path) -> None:
    result = sim("run", "queue_workers", *QUICK, "--seed", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(out)
    events = events_of(run_dir)
    found = transfers(events)
    items = [t for t in found if "end" not in t["item"]]
    # 3 producers x 12 items, plus one end marker per consumer from each producer.
    assert len(items) == 36
    assert len(found) - len(items) == 3 * 2
    assert all("got" in t for t in found), "an item stayed in the queue"
    assert Counter((t["item"]["producer"], t["item"]["n"]) for t in items) == Counter(
        (p, n) for p in range(3) for n in range(12)
    )
    # FIFO per producer: no later item got before an earlier one's get was even invoked, and
    # each consumer saw each producer's items in put order.
    by_producer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in items:
        by_producer[t["producer"]].append(t)
    for mine in by_producer.values():
        assert [t["item"]["n"] for t in mine] == list(range(12))  # put order
        for i, earlier in enumerate(mine):
            for later in mine[i + 1 :]:
                assert not later["got"] < earlier["asked"]
                if later["consumer"] == earlier["consumer"]:
                    assert later["got"] > earlier["got"]
    # Both consumers worked, and each handled what it got.
    handled = [e for e in events if e["event"] == "handled"]
    assert Counter(e["actor"] for e in handled) == Counter(t["consumer"] for t in items)
    assert len({e["actor"] for e in handled}) == 2
    # Each consumer stopped after exactly as many end markers as there are producers.
    stops = {e["actor"]: e["ends"] for e in events if e["event"] == "stop"}
    assert stops == {"consumer-000": 3, "consumer-001": 3}

    manifest = manifest_of(run_dir)
    verdicts = {v["name"]: v["status"] for v in manifest["invariants"]}
    assert verdicts["jobs: every get returns an item put, once"] == "pass"
    assert verdicts["jobs: every item put was got"] == "pass"
    assert verdicts["jobs: FIFO per producer"] == "pass"
    assert verdicts["every item handled exactly once"] == "pass"
    assert verdicts["one consumer: each producer's items handled in put order"] == "skip"
    assert "fail" not in verdicts.values()
    metrics = manifest["metrics"]
    assert metrics["items"] == 36
    # Queue length, recomputed: an item is in the queue from its put ok to its get ok.
    steps = sorted([(t["put_ok"], +1) for t in found if t["put_ok"] < t["got"]]
                   + [(t["got"], -1) for t in found if t["put_ok"] < t["got"]])  # fmt: skip
    level = most = 0
    for _, step in steps:
        level += step
        most = max(most, level)
    assert metrics["queue_len_max"] == most
    assert most > 1  # producers outpace the consumers: the queue does fill
    assert_clean_end(run_dir, out)


@pytest.mark.timeout(60)
def test_one_consumer_gets_each_producers_items_strictly_in_order(out: Path) -> None:
    result = sim("run", "queue_workers", *QUICK, "-s", "params.consumers=1",
                 "-s", "params.maxsize=4", "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(out)
    events = events_of(run_dir)
    gets = [e["item"] for e in queue_ops(events) if e["op"] == "get" and e["phase"] == "ok"]
    for producer in range(3):
        mine = [i["n"] for i in gets if i["producer"] == producer and "n" in i]
        assert mine == list(range(12))
    handled = [(e["producer"], e["n"]) for e in ordered(events) if e["event"] == "handled"]
    assert handled == [(i["producer"], i["n"]) for i in gets if "n" in i]
    # A bounded queue: puts wait while it is full. Lower bound on the queue's content at each
    # put ok: puts returned minus gets invoked; never above maxsize.
    puts = gets_asked = 0
    for e in queue_ops(events):
        if e["op"] == "put" and e["phase"] == "ok":
            puts += 1
            assert puts - gets_asked <= 4
        elif e["op"] == "get" and e["phase"] == "invoke":
            gets_asked += 1
    verdicts = {v["name"]: v["status"] for v in manifest_of(run_dir)["invariants"]}
    assert verdicts["one consumer: each producer's items handled in put order"] == "pass"
    assert verdicts["jobs: at most 4 items in the queue"] == "pass"
    assert manifest_of(run_dir)["metrics"]["overtaken"] == 0
    assert_clean_end(run_dir, out)


@pytest.mark.timeout(60)
def test_joinable_join_returns_after_every_task_done(out: Path) -> None:
    result = sim("run", "queue_workers-joinable", *QUICK, "--out", str(out))
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(out)
    events = events_of(run_dir)
    ops = queue_ops(events)
    gets = [e for e in ops if e["op"] == "get" and e["phase"] == "ok"]
    done = [e for e in ops if e["op"] == "task_done" and e["phase"] == "invoke"]
    assert len(done) == len(gets) == 36 + 6
    joins = 0
    for e in ops:
        if e["op"] != "join" or e["phase"] != "ok":
            continue
        joins += 1
        invoked = next(j["ts"] for j in ops if j["op"] == "join" and j["phase"] == "invoke"
                       and j["actor"] == e["actor"])  # fmt: skip
        puts_before = sum(1 for p in ops if p["op"] == "put" and p["phase"] == "ok"
                          and p["ts"] < invoked)  # fmt: skip
        done_before = sum(1 for d in done if d["ts"] < e["ts"])
        assert done_before >= puts_before >= 12
    assert joins == 3
    # Every producer logged all_done after its join, before its end markers.
    for producer in ("producer-000", "producer-001", "producer-002"):
        mine = [e for e in ordered(events) if e["actor"] == producer]
        kinds = [e["event"] if e["event"] != "op" else e["op"] for e in mine]
        assert kinds.index("join") < kinds.index("all_done") < len(kinds) - kinds[::-1].index("put")
    verdicts = {v["name"]: v["status"] for v in manifest_of(run_dir)["invariants"]}
    assert verdicts["jobs: join returned only after every item put was done"] == "pass"
    assert "fail" not in verdicts.values()
    assert_clean_end(run_dir, out)


def _op(ts: float, actor: str, op: str, phase: str, **fields: Any) -> dict[str, Any]:
    return {"ts": ts, "actor": actor, "seq": 0, "event": "op", "prim": "q", "op": op,
            "phase": phase, **fields}  # fmt: skip


def _verdicts(kind: str, history: list[dict[str, Any]]) -> dict[str, str]:
    verdicts = kind_verdicts("q", {"kind": kind, "maxsize": 2}, history)
    return {v.name: v.status for v in verdicts}


def put(ts: float, actor: str, item: Any) -> list[dict[str, Any]]:
    return [
        _op(ts, actor, "put", "invoke", item=item),
        _op(ts + 0.01, actor, "put", "ok", item=item),
    ]


def get(ts: float, actor: str, item: Any) -> list[dict[str, Any]]:
    return [_op(ts, actor, "get", "invoke"), _op(ts + 0.01, actor, "get", "ok", item=item)]


def test_queue_checks_catch_planted_faults() -> None:
    good = [*put(1, "p", 1), *put(2, "p", 2), *get(3, "c", 1), *get(4, "c", 2)]
    assert set(_verdicts("queue", good).values()) == {"pass"}
    # Item 2 got before item 1 was even asked for: FIFO per producer broken.
    swapped = [*put(1, "p", 1), *put(2, "p", 2), *get(3, "c", 2), *get(4, "d", 1)]
    assert _verdicts("queue", swapped)["q: FIFO per producer"] == "fail"
    # Two gets that overlap may log their ok lines in either order: no violation.
    overlap = [*put(1, "p", 1), *put(2, "p", 2), _op(3, "c", "get", "invoke"),
               _op(3.1, "d", "get", "invoke"), _op(3.2, "d", "get", "ok", item=2),
               _op(3.3, "c", "get", "ok", item=1)]  # fmt: skip
    assert _verdicts("queue", overlap)["q: FIFO per producer"] == "pass"
    # Got twice, and got without a put.
    twice = [*put(1, "p", 1), *get(2, "c", 1), *get(3, "d", 1)]
    assert _verdicts("queue", twice)["q: every get returns an item put, once"] == "fail"
    # Left in the queue.
    left = [*put(1, "p", 1), *put(2, "p", 2), *get(3, "c", 1)]
    assert _verdicts("queue", left)["q: every item put was got"] == "fail"
    # More than maxsize (2) put while nobody got anything.
    full = [*put(1, "p", 1), *put(2, "p", 2), *put(3, "p", 3)]
    assert _verdicts("queue", full)["q: at most 2 items in the queue"] == "fail"
    # join returned although only one of two items was marked done.
    early = [*put(1, "p", 1), *put(2, "p", 2), *get(3, "c", 1), *get(4, "c", 2),
             _op(5, "c", "task_done", "invoke"), _op(5.1, "c", "task_done", "ok"),
             _op(6, "p", "join", "invoke"), _op(7, "p", "join", "ok")]  # fmt: skip
    verdicts = _verdicts("joinable_queue", early)
    assert verdicts["q: join returned only after every item put was done"] == "fail"
    # No gets at all: the checks have nothing to look at and say so.
    assert _verdicts("queue", [])["q: FIFO per producer"] == "skip"
