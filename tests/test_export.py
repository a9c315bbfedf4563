"""Exports: the Chrome trace is valid Trace Event JSON, the CSV has one row per operation.

Both are checked on real runs (the real CLI in a subprocess) and on a small hand-made log whose
every span, flow and counter value is known in advance.
"""

from __future__ import annotations

import csv as _csv
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from sim._replay import LoadedRun, load_run
from sim.export.chrome import export_chrome
from sim.export.csv import COLUMNS, export_csv

from .conftest import events_of, finished

_PHASES = frozenset("BEXiIsftCMbenR")


def _ns(us: float) -> int:
    # Perfetto reads µs and stores integer ns: compare spans as it does.
    return round(us * 1000)


def validate_trace(data: Any) -> dict[str, int]:
    """Check ``data`` against the Trace Event format as Perfetto reads it; count what it has.

    Required fields per phase, balanced B/E, well-formed X spans nested on every (pid, tid)
    track, flows paired s→f and bound inside a span on their track, numeric counters, and a
    name for every thread that has spans.
    """
    assert isinstance(data, dict), "the JSON Object Format has a top-level object"
    events = data["traceEvents"]
    assert isinstance(events, list)
    spans: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    stacks: dict[tuple[int, int], list[str]] = defaultdict(list)
    flows: dict[tuple[str, str, Any], dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: {"s": [], "f": []}
    )
    named: set[tuple[int, int]] = set()
    counts: Counter[str] = Counter()
    for event in events:
        ph = event.get("ph")
        assert ph in _PHASES, event
        assert isinstance(event.get("name"), str), event
        assert isinstance(event.get("pid"), int), event
        counts[ph] += 1
        if ph == "M":
            if event["name"] == "thread_name":
                named.add((event["pid"], event["tid"]))
            assert isinstance(event.get("args"), dict), event
            continue
        assert isinstance(event.get("tid"), int), event
        assert isinstance(event.get("ts"), (int, float)), f"no ts: {event}"
        assert event["ts"] >= 0, f"ts before the trace began: {event}"
        track = (event["pid"], event["tid"])
        if ph == "X":
            dur = event.get("dur")
            assert isinstance(dur, (int, float)), f"X needs a dur: {event}"
            assert dur >= 0, f"X with a negative dur: {event}"
            start = _ns(event["ts"])
            spans[track].append((start, start + _ns(event["dur"])))
        elif ph == "B":
            stacks[track].append(event["name"])
        elif ph == "E":
            assert stacks[track], f"E without B on {track}: {event}"
            stacks[track].pop()
        elif ph == "C":
            args = event.get("args")
            assert isinstance(args, dict), f"counter without args: {event}"
            assert args, f"counter without values: {event}"
            for value in args.values():
                numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
                assert numeric, f"counter args must be numbers: {event}"
        elif ph in "sf":
            assert "id" in event, event
            flows[(event.get("cat", ""), event["name"], event["id"])][ph].append(event)
        elif ph in "iI":
            assert event.get("s", "t") in ("g", "p", "t"), event
    assert not any(stacks.values()), "B without E"
    for track, items in spans.items():
        assert track in named, f"spans on unnamed track {track}"
        items.sort(key=lambda s: (s[0], -s[1]))
        open_: list[tuple[int, int]] = []
        for start, end in items:
            while open_ and open_[-1][1] <= start:
                open_.pop()
            assert not open_ or end <= open_[-1][1], (
                f"{track}: span {start}..{end} overlaps {open_[-1]} without nesting"
            )
            open_.append((start, end))
    for key, ends in flows.items():
        assert (len(ends["s"]), len(ends["f"])) == (1, 1), f"flow {key} not paired: {ends}"
        out, into = ends["s"][0], ends["f"][0]
        assert into.get("bp") == "e", into
        assert out["ts"] <= into["ts"], key
        for side in (out, into):
            at = _ns(side["ts"])
            inside = spans[(side["pid"], side["tid"])]
            assert any(s < at < e for s, e in inside), f"flow {key} end outside any span: {side}"
    counts["flows"] = len(flows)
    for _cat, name, _id in flows:
        counts[f"flows:{name}"] += 1
    counts["tracks"] = len(spans)
    return dict(counts)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(_csv.DictReader(fh))


def invokes(run_dir: Path) -> list[dict[str, Any]]:
    return [e for e in events_of(run_dir) if e["event"] == "op" and e["phase"] == "invoke"]


def run(out: Path, config: str, *settings: str) -> LoadedRun:
    """Run ``config`` with ``-s`` ``settings``, which must succeed, and load the run back."""
    result = finished(out, config, *settings, args=("--quiet",))
    assert result.code == 0, result.stderr
    return load_run(result.run_dir)


# -- a hand-made log: every number known --------------------------------------------------------


def _line(ts: float, actor: str, seq: int, event: str, **fields: Any) -> dict[str, Any]:
    return {"ts": ts, "actor": actor, "pid": 10, "seq": seq, "event": event, **fields}


def _op(ts: float, actor: str, seq: int, prim: str, kind: str, op: str, phase: str,
        **fields: Any) -> dict[str, Any]:  # fmt: skip
    return _line(ts, actor, seq, "op", prim=prim, kind=kind, op=op, phase=phase, **fields)


def small_log(folder: Path) -> Path:
    """Two cars and one space; a producer and a consumer on a queue.

    car-a holds the space 1.0..3.0; car-b waits 2.0..3.1 and holds 3.1..4.0 (its acquire was
    unblocked by car-a's release); item 7 is put at 1.5 and got at 1.6.
    """
    lines = [
        _line(0.0, "engine", 0, "run_start", scenario="carpark",
              primitives={"spaces": {"kind": "semaphore", "value": 1},
                          "jobs": {"kind": "queue", "maxsize": 0}},
              actor_names=["car-a", "car-b", "prod", "cons"]),
        _line(0.1, "car-a", 0, "actor_start", role="car"),
        _op(1.0, "car-a", 1, "spaces", "semaphore", "acquire", "invoke"),
        _op(1.0001, "car-a", 2, "spaces", "semaphore", "acquire", "ok"),
        _line(1.0002, "car-a", 3, "park", visit=0, kind="compact"),
        _op(2.0, "car-b", 0, "spaces", "semaphore", "acquire", "invoke"),
        _op(1.5, "prod", 0, "jobs", "queue", "put", "invoke", item=7),
        _op(1.5001, "prod", 1, "jobs", "queue", "put", "ok", item=7),
        _op(1.2, "cons", 0, "jobs", "queue", "get", "invoke"),
        _op(1.6, "cons", 1, "jobs", "queue", "get", "ok", item=7),
        _op(3.0, "car-a", 4, "spaces", "semaphore", "release", "invoke"),
        _op(3.0001, "car-a", 5, "spaces", "semaphore", "release", "ok"),
        _op(3.1, "car-b", 1, "spaces", "semaphore", "acquire", "ok"),
        _op(4.0, "car-b", 2, "spaces", "semaphore", "release", "invoke"),
        _op(4.0001, "car-b", 3, "spaces", "semaphore", "release", "ok"),
        _op(4.5, "cons", 2, "jobs", "queue", "get", "invoke"),
    ]  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "events.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def test_chrome_spans_flows_and_counters_of_a_known_log(tmp_path: Path) -> None:
    loaded = load_run(small_log(tmp_path / "run"))
    written = export_chrome(loaded, tmp_path / "trace.json")
    data = json.loads((tmp_path / "trace.json").read_text(encoding="utf-8"))
    assert written == len(data["traceEvents"])
    counts = validate_trace(data)
    assert counts["flows"] == 2  # item 7 put -> got; car-a's release -> car-b's acquire
    events = data["traceEvents"]
    threads = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    spans: dict[tuple[str, str], list[tuple[float, float, str]]] = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            spans[(threads[e["tid"]], e["name"])].append((e["ts"], e["dur"], e["cat"]))
    assert spans[("car-b", "acquire spaces")] == [(2_000_000.0, 1_100_000.0, "wait")]
    assert spans[("car-b holds", "holds spaces")] == [(3_100_000.0, 900_000.0, "hold")]
    assert spans[("car-a holds", "holds spaces")] == [(1_000_100.0, 1_999_900.0, "hold")]
    # The consumer's second get never returned: its span is cut where the log ends.
    assert spans[("cons", "get jobs")] == [(1_200_000.0, 400_000.0, "wait"),
                                           (4_500_000.0, 1.0, "wait")]  # fmt: skip
    pending = [e for e in events if e["ph"] == "X" and e["args"].get("outcome") == "never returned"]
    assert [threads[e["tid"]] for e in pending] == ["cons"]
    arrows = sorted((e["name"], threads[e["tid"]]) for e in events if e["ph"] in "sf")
    assert arrows == [("message", "cons"), ("message", "prod"),
                      ("release → acquire", "car-a"), ("release → acquire", "car-b")]  # fmt: skip

    def series(prim: str, name: str) -> list[float]:
        values = [e["args"][name] for e in events if e["ph"] == "C" and e["name"] == prim]
        return [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]

    assert series("spaces", "held") == [0, 1, 0, 1, 0]
    # "waiting" counts every acquire in flight: car-a's for 0.1 ms, car-b's for 1.1 s.
    assert series("spaces", "waiting") == [0, 1, 0, 1, 0]
    assert series("jobs", "length") == [0, 1, 0]
    parks = [e for e in events if e["ph"] == "i" and e["name"] == "park"]
    assert [threads[e["tid"]] for e in parks] == ["car-a"]
    # A domain event's own fields stay, even one named like an op field.
    assert parks[0]["args"] == {"visit": 0, "kind": "compact"}


def test_csv_rows_of_a_known_log(tmp_path: Path) -> None:
    loaded = load_run(small_log(tmp_path / "run"))
    rows = export_csv(loaded, tmp_path / "ops.csv")
    table = read_rows(tmp_path / "ops.csv")
    assert rows == len(table) == 7
    assert list(table[0]) == list(COLUMNS)
    by = {(r["actor"], r["op"], r["invoke_ts"]): r for r in table}
    wait = by[("car-b", "acquire", "2.0")]
    assert (wait["end_ts"], wait["outcome"]) == ("3.1", "ok")
    assert float(wait["wait_s"]) == pytest.approx(1.1)
    assert by[("cons", "get", "1.2")]["item"] == "7"
    never = by[("cons", "get", "4.5")]
    assert (never["outcome"], never["end_ts"], never["wait_s"]) == ("pending", "", "")


# -- real runs -------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_chrome_export_of_a_car_park_run_is_valid(tmp_path: Path) -> None:
    loaded = run(
        tmp_path / "logs",
        "carpark.toml",
        "params.cars=30",
        "params.capacity=8",
        "params.visits=2",
        "clock.speedup=12000",
    )
    trace = tmp_path / "trace.json"
    written = export_chrome(loaded, trace)
    data = json.loads(trace.read_text(encoding="utf-8"))
    assert written == len(data["traceEvents"])
    counts = validate_trace(data)
    ops = invokes(loaded.run_dir or tmp_path)
    spans = [e for e in data["traceEvents"] if e["ph"] == "X"]
    acquires = sum(1 for e in ops if e["op"] == "acquire")
    # One span per operation, one per hold (every acquire of a finished run is released).
    assert len(spans) == len(ops) + acquires
    assert counts["C"] > 2 * acquires  # held and waiting change with every acquire/release
    held = [e["args"]["held"] for e in data["traceEvents"] if e["ph"] == "C"]
    assert max(held) == 8  # 30 cars, 8 spaces: the car park fills up
    # Every car that waited was let in by some release: the trace shows who.
    assert counts["flows"] > 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "config", ["philosophers-naive", "queue_workers", "pipe-pingpong", "tcp_echo"]
)
def test_chrome_export_of_other_scenarios_is_valid(tmp_path: Path, config: str) -> None:
    extra = ["params.port=0"] if config == "tcp_echo" else []
    loaded = run(tmp_path / "logs", config, *extra)
    trace = tmp_path / "trace.json"
    export_chrome(loaded, trace)
    data = json.loads(trace.read_text(encoding="utf-8"))
    counts = validate_trace(data)
    if config == "philosophers-naive":
        assert counts["flows"] == 0  # deadlocked: nobody ever released a fork
    else:
        # Every item got, every message received, is an arrow from its sender. (Other arrows
        # may join them: a wait on an Event that began before its set is a "set → wait".)
        received = sum(
            1 for e in events_of(loaded.run_dir or tmp_path)
            if e["event"] == "op" and e["op"] in ("get", "recv") and e["phase"] == "ok"
        )  # fmt: skip
        assert counts["flows:message"] == received > 0
    if config == "tcp_echo":
        # The server serves each client in a thread: overlapping operations, so more rows.
        names = {e["args"]["name"] for e in data["traceEvents"] if e["name"] == "thread_name"}
        assert {"server", "server ·2"} <= names


def test_chrome_export_of_a_deadlock_shows_the_waits_that_never_ended(tmp_path: Path) -> None:
    lines = [
        _line(0.0, "engine", 0, "run_start", primitives={"f0": {"kind": "lock"},
                                                         "f1": {"kind": "lock"}}),
        _op(0.1, "p0", 0, "f0", "lock", "acquire", "invoke"),
        _op(0.11, "p0", 1, "f0", "lock", "acquire", "ok"),
        _op(0.12, "p1", 0, "f1", "lock", "acquire", "invoke"),
        _op(0.13, "p1", 1, "f1", "lock", "acquire", "ok"),
        _op(0.2, "p0", 2, "f1", "lock", "acquire", "invoke"),
        _op(0.21, "p1", 2, "f0", "lock", "acquire", "invoke"),
        _line(1.2, "engine", 1, "deadlock", explanation="p0 waits for p1, p1 for p0"),
        _line(1.3, "p0", 3, "actor_end", status="terminated"),
        _line(1.3, "p1", 3, "actor_end", status="terminated"),
    ]  # fmt: skip
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    export_chrome(load_run(folder), tmp_path / "trace.json")
    data = json.loads((tmp_path / "trace.json").read_text(encoding="utf-8"))
    validate_trace(data)
    never = [e for e in data["traceEvents"] if e["ph"] == "X"
             and e["args"].get("outcome") == "never returned"]  # fmt: skip
    assert sorted(e["name"] for e in never) == ["acquire f0", "acquire f1"]
    assert all(e["ts"] + e["dur"] == pytest.approx(1_300_000.0) for e in never)
    marks = [e for e in data["traceEvents"] if e["ph"] == "i" and e["name"] == "deadlock"]
    assert [m["s"] for m in marks] == ["g"]


@pytest.mark.timeout(120)
def test_csv_has_one_row_per_operation_and_wait_is_completion_minus_invoke(tmp_path: Path) -> None:
    loaded = run(
        tmp_path / "logs",
        "carpark.toml",
        "params.cars=25",
        "params.capacity=6",
        "params.visits=2",
        "clock.speedup=12000",
        "params.patience=20",
    )
    path = tmp_path / "ops.csv"
    rows = export_csv(loaded, path)
    table = read_rows(path)
    ops = invokes(loaded.run_dir or tmp_path)
    assert rows == len(table) == len(ops)
    assert Counter((r["actor"], r["op"]) for r in table) == Counter(
        (e["actor"], e["op"]) for e in ops
    )
    speedup = loaded.config.clock.speedup if loaded.config else 0.0
    for row in table:
        assert row["outcome"] in ("ok", "timeout", "fail")
        wait = float(row["end_ts"]) - float(row["invoke_ts"])
        assert float(row["wait_s"]) == wait >= 0
        assert float(row["wait_sim_min"]) == pytest.approx(wait * speedup / 60)
    assert {r["op"] for r in table} == {"acquire", "release"}


@pytest.mark.timeout(120)
def test_csv_of_a_deadlocked_run_keeps_the_waits_that_never_returned(tmp_path: Path) -> None:
    loaded = run(tmp_path / "logs", "philosophers-naive")
    table = read_rows(tmp_path / "ops.csv") if export_csv(loaded, tmp_path / "ops.csv") else []
    assert len(table) == len(invokes(loaded.run_dir or tmp_path))
    pending = [r for r in table if r["outcome"] == "pending"]
    assert len(pending) == 5  # every philosopher waits for its second fork
    assert all(r["end_ts"] == r["wait_s"] == "" for r in pending)


@pytest.mark.timeout(120)
def test_csv_items_of_a_queue_run(tmp_path: Path) -> None:
    loaded = run(tmp_path / "logs", "queue_workers")
    export_csv(loaded, tmp_path / "ops.csv")
    table = read_rows(tmp_path / "ops.csv")
    puts = Counter(r["item"] for r in table if r["op"] == "put")
    gets = Counter(r["item"] for r in table if r["op"] == "get" and r["outcome"] == "ok")
    assert puts == gets
    assert all(json.loads(item) for item in puts)  # items are JSON, ready for pandas to parse


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ({"ph": "X", "name": "a", "pid": 1, "tid": 5, "ts": 0}, "needs a dur"),
        ({"ph": "X", "name": "a", "pid": 1, "tid": 5, "ts": 5, "dur": 20}, "without nesting"),
        ({"ph": "C", "name": "c", "pid": 1, "tid": 0, "ts": 1, "args": {"n": "x"}}, "numbers"),
        ({"ph": "s", "name": "m", "cat": "flow", "id": 9, "pid": 1, "tid": 5, "ts": 2}, "paired"),
        ({"ph": "E", "name": "a", "pid": 1, "tid": 5, "ts": 2}, "E without B"),
        ({"ph": "X", "name": "a", "pid": 1, "tid": 6, "ts": 0, "dur": 1}, "unnamed track"),
    ],
)
def test_the_trace_validator_rejects_what_perfetto_would_drop(bad: dict[str, Any],
                                                              problem: str) -> None:  # fmt: skip
    good = [
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 5, "args": {"name": "t"}},
        {"ph": "X", "name": "outer", "pid": 1, "tid": 5, "ts": 0, "dur": 10},
    ]
    validate_trace({"traceEvents": good})
    with pytest.raises(AssertionError, match=problem):
        validate_trace({"traceEvents": [*good, bad]})


def test_a_semaphore_that_starts_at_zero_passes_signals_and_nobody_holds_it(
    tmp_path: Path,
) -> None:
    lines = [
        _line(0.0, "engine", 0, "run_start",
              primitives={"customers": {"kind": "semaphore", "value": 0}}),
        _op(0.1, "barber", 0, "customers", "semaphore", "acquire", "invoke"),
        _op(0.5, "cust", 0, "customers", "semaphore", "release", "invoke"),
        _op(0.5001, "cust", 1, "customers", "semaphore", "release", "ok"),
        _op(0.5002, "barber", 1, "customers", "semaphore", "acquire", "ok"),
        _op(0.7, "cust", 2, "customers", "semaphore", "release", "invoke"),
        _op(0.7001, "cust", 3, "customers", "semaphore", "release", "ok"),
    ]  # fmt: skip
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    export_chrome(load_run(folder), tmp_path / "trace.json")
    data = json.loads((tmp_path / "trace.json").read_text(encoding="utf-8"))
    counts = validate_trace(data)
    events = data["traceEvents"]
    assert not [e for e in events if e.get("cat") == "hold"]
    assert counts["flows"] == 1  # the first release let the barber go
    signals = [e["args"]["signals"] for e in events if e["ph"] == "C"]
    assert [v for i, v in enumerate(signals) if i == 0 or signals[i - 1] != v] == [0, 1, 0, 1]


def test_exports_of_a_damaged_log_keep_what_can_be_read(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    small_log(folder)
    path = folder / "events.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    del lines[2]  # car-a's acquire invoke is lost: its ok has nothing to pair with
    lines.insert(5, "this is not JSON\n")
    path.write_text("".join(lines) + '{"ts": 9.0, "actor": "car-a"', encoding="utf-8")  # torn
    loaded = load_run(folder)
    rows = export_csv(loaded, tmp_path / "ops.csv")
    assert rows == 7  # the one whose invoke was lost is still there, and says so
    with open(tmp_path / "ops.csv", newline="", encoding="utf-8") as fh:
        lost = [row for row in _csv.DictReader(fh) if "missing from the log" in row["detail"]]
    assert [(row["actor"], row["op"], row["wait_s"]) for row in lost] == [
        ("car-a", "acquire", "0.0")
    ]
    validate_trace(json.loads(_exported(loaded, tmp_path).read_text(encoding="utf-8")))


def _exported(loaded: LoadedRun, folder: Path) -> Path:
    export_chrome(loaded, folder / "trace.json")
    return folder / "trace.json"
