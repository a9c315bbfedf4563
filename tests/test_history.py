"""One history model: every consumer agrees on who held what, and when.

The same synthetic histories go to the checks, to the live history the coordinator keeps, to
the Chrome export (the timeline a student looks at) and to the board the player and the live
view draw. None of them tracks holders on its own, so none of them can disagree.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from sim import kinds
from sim._replay import load_run
from sim.analysis import analyse
from sim.coordinator import LiveCounters, _parse
from sim.errors import ScenarioError
from sim.export.chrome import export_chrome
from sim.history import History, Hold, Operation, Subscriber, line_of
from sim.views import Board

ROOT = Path(__file__).resolve().parent.parent


def _op(
    ts: float, actor: str, prim: str, kind: str, op: str, phase: str, **more: Any
) -> dict[str, Any]:
    return {"ts": ts, "actor": actor, "pid": 1, "event": "op", "prim": prim, "kind": kind,
            "op": op, "phase": phase, **more}  # fmt: skip


def _with_seq(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seqs: dict[str, int] = {}
    out = []
    for e in events:
        seq = seqs.get(e["actor"], 0)
        seqs[e["actor"]] = seq + 1
        out.append({**e, "seq": seq})
    return out


# a acquires the rlock; b tries to release it (refused: not the owner); a releases at t=5.
RLOCK = [
    _op(1.0, "a", "r", "rlock", "acquire", "invoke"),
    _op(1.1, "a", "r", "rlock", "acquire", "ok"),
    _op(2.0, "b", "r", "rlock", "release", "invoke"),
    _op(2.1, "b", "r", "rlock", "release", "fail", error="cannot release un-acquired lock"),
    _op(5.0, "a", "r", "rlock", "release", "invoke"),
    _op(5.1, "a", "r", "rlock", "release", "ok"),
]
# A bounded semaphore's holder releases and the release raises: the unit was never given back.
FAILED_RELEASE = [
    _op(1.0, "a", "s", "bounded_semaphore", "acquire", "invoke"),
    _op(1.1, "a", "s", "bounded_semaphore", "acquire", "ok"),
    _op(2.0, "a", "s", "bounded_semaphore", "release", "invoke"),
    _op(2.1, "a", "s", "bounded_semaphore", "release", "fail", error="released too many times"),
    _op(4.0, "a", "s", "bounded_semaphore", "release", "invoke"),
    _op(4.1, "a", "s", "bounded_semaphore", "release", "ok"),
]
# b holds the condition's lock; a calls wait() without it (it raises at once).
RAISED_WAIT = [
    _op(1.0, "b", "c", "condition", "acquire", "invoke"),
    _op(1.1, "b", "c", "condition", "acquire", "ok"),
    _op(2.0, "a", "c", "condition", "wait", "invoke"),
    _op(2.1, "a", "c", "condition", "wait", "fail", error="AssertionError: not owned"),
    _op(3.0, "b", "c", "condition", "release", "invoke"),
    _op(3.1, "b", "c", "condition", "release", "ok"),
]
# One item put, got twice.
GOT_TWICE = [
    _op(1.0, "p", "q", "queue", "put", "invoke", item=7),
    _op(1.1, "p", "q", "queue", "put", "ok", item=7),
    _op(2.0, "c", "q", "queue", "get", "invoke"),
    _op(2.1, "c", "q", "queue", "get", "ok", item=7),
    _op(3.0, "d", "q", "queue", "get", "invoke"),
    _op(3.1, "d", "q", "queue", "get", "ok", item=7),
]
CASES = {
    "rlock": (RLOCK, {"r": {"kind": "rlock"}}, [("a", "r", 1.1, 5.0)]),
    "failed release": (
        FAILED_RELEASE,
        {"s": {"kind": "bounded_semaphore", "value": 1}},
        # The hold ends at the release's invoke, and begins again when the release raised.
        [("a", "s", 1.1, 2.0), ("a", "s", 2.1, 4.0)],
    ),
    "raised wait": (RAISED_WAIT, {"c": {"kind": "condition"}}, [("b", "c", 1.1, 3.0)]),
    "got twice": (GOT_TWICE, {"q": {"kind": "queue", "maxsize": 0}}, []),
}


class _Holds(Subscriber):
    def __init__(self) -> None:
        self.holds: list[Hold] = []

    def on_hold(self, hold: Hold) -> None:
        self.holds.append(hold)


def _log(folder: Path, events: list[dict[str, Any]], primitives: dict[str, Any]) -> Path:
    actors = sorted({e["actor"] for e in events})
    start = {"ts": 0.0, "actor": "engine", "pid": 1, "seq": 0, "event": "run_start",
             "primitives": primitives, "actor_names": actors}  # fmt: skip
    folder.mkdir()
    with open(folder / "events.jsonl", "w", encoding="utf-8") as fh:
        for e in [start, *_with_seq(events)]:
            fh.write(json.dumps(e) + "\n")
    return folder


@pytest.mark.parametrize("case", sorted(CASES))
def test_checks_live_history_timeline_and_board_agree_on_holds(case: str, tmp_path: Path) -> None:
    events, primitives, expected = CASES[case]
    folder = _log(tmp_path / "run", events, primitives)

    # 1. The analysis: holds as facts, and the kind checks over the same pass.
    holds = _Holds()
    report = analyse(
        folder / "events.jsonl",
        primitives=primitives,
        actors=sorted({e["actor"] for e in events}),
        subscribers=[holds],
    )
    got = [(h.actor, h.prim, h.start, h.end) for h in holds.holds if h.cut != "log"]
    assert got == expected

    # 2. The live history, fed the raw lines through the coordinator's own parser, one actor's
    # line at a time: after every line it names the same holders the replay knew then.
    live = LiveCounters(History(primitives))
    replayed = History(primitives)
    for e in _with_seq(events):
        raw = (json.dumps(e) + "\n").encode()
        lines: list[Any] = []
        _parse(raw, e["actor"], 1 << 16, lines)
        live.history.feed(lines)
        replayed.feed([line_of(e)])
        for prim in primitives:
            assert live.history.holders(prim) == replayed.holders(prim), (case, e)

    # 3. The timeline: the Chrome trace's hold spans are exactly these holds.
    loaded = load_run(folder)
    export_chrome(loaded, tmp_path / "trace.json")
    trace = json.loads((tmp_path / "trace.json").read_text(encoding="utf-8"))
    names = {e["tid"]: e["args"]["name"] for e in trace["traceEvents"]
             if e.get("ph") == "M" and e.get("name") == "thread_name"}  # fmt: skip
    spans = sorted(
        (names[e["tid"]].split(" holds")[0], e["name"].split()[1], e["ts"] / 1e6,
         round((e["ts"] + e["dur"]) / 1e6, 6))
        for e in trace["traceEvents"] if e.get("cat") == "hold"
    )  # fmt: skip
    assert spans == [(a, p, s, e) for a, p, s, e in expected]

    # 4. The board (player and live view): between the holds' start and end, the holder is
    # shown; after the last release, nobody.
    history = History(primitives, track_states=True)
    board = history.subscribe(Board())
    assert isinstance(board, Board)
    for line in (line_of(e) for e in _with_seq(events)):
        history.feed([line])
        for actor, prim, start, end in expected:
            inside = start <= line.ts < end
            text = next(r.text for r in board.rows() if r.name == prim)
            if inside and prim != "s":
                assert f"held by {actor}" in text, (case, line.ts, text)
    for prim in primitives:
        assert history.holders(prim) == []

    # The checks: what each case is about, said in words.
    verdicts = {v.name: v for v in report.verdicts}
    if case == "rlock":
        assert verdicts["r: one owner at a time"].status == "pass"
        released = verdicts["r: released only by its owner"]
        assert released.status == "pass"
        assert "1 by others refused by the lock" in released.detail
    elif case == "raised wait":
        assert verdicts["c: one holder of the lock at a time"].status == "pass"
        assert verdicts["c: wait and notify only while holding the lock"].status == "fail"
    elif case == "got twice":
        phantom = verdicts["q: every get returns an item put, once"]
        assert phantom.status == "fail"
        assert re.search(r"d got 7 at 3\.1\d* s: never put, or already got", phantom.detail)
    elif case == "failed release":
        assert verdicts["s: at most 1 holders"].status == "pass"


def test_each_queue_s_ledger_is_built_once_per_replay(tmp_path: Path) -> None:
    from sim.kinds import queue
    from tests.fixtures.record import RUNS, replayed, unpack

    before = queue.ledgers_built
    replayed(unpack(RUNS / "queue_workers-joinable", tmp_path))
    # One queue (jobs): one ledger, although five checks and the analysis read it.
    assert queue.ledgers_built - before == 1


def test_no_check_keeps_its_own_problem_cap_and_scenarios_use_only_the_public_api() -> None:
    sources = [*ROOT.glob("sim/**/*.py"), *ROOT.glob("scenarios/*.py")]
    assert sources
    for path in sources:
        text = path.read_text(encoding="utf-8")
        assert "_SHOW" not in text, path
        assert "if len(self._problems)" not in text, path
    for path in ROOT.glob("scenarios/*.py"):
        text = path.read_text(encoding="utf-8")
        private = re.findall(r"^\s*(?:from|import) (sim(?:\.\w+)*\._\w+)", text, re.MULTILINE)
        assert not private, (path, private)


def test_every_kind_is_known_to_the_registry_and_describes_itself() -> None:
    for name, kind in kinds.all_kinds().items():
        assert kind.name == name
        assert kind.display.series, name  # every kind can be drawn
        if kind.spec is not None:
            assert kind.spec.kind == name
            assert kind.wrap is not None


@pytest.mark.timeout(60)
def test_a_kind_added_through_the_registry_alone_is_logged_checked_drawn_and_exported(
    tmp_path: Path,
) -> None:
    # tests/toykind.py registers a "token" kind; nothing in sim names it. A real run (real
    # processes, through the CLI) logs its operations, and replay, exports, the board and the
    # plot all know what they mean.
    from tests.conftest import only_run_dir, sim
    from tests.toykind import TOKEN

    config = tmp_path / "toy.toml"
    config.write_text('scenario = "tests.scenario_toy"\n[clock]\nspeedup = 6000\n')
    result = sim("run", str(config), "--out", str(tmp_path / "logs"), "--quiet", timeout=50)
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(tmp_path / "logs")
    manifest = json.loads((run_dir / "run.json").read_text())
    verdicts = {v["name"]: v for v in manifest["invariants"]}
    assert verdicts["token: one holder of the token"]["status"] == "pass"
    assert verdicts["token: one holder of the token"]["detail"] == "taken 9 times, never by two"

    # The kind is registered by the scenario's module, which replay imports only when named.
    result = sim("replay", str(run_dir), "--check", "--scenario", "tests.scenario_toy",
                 "--plot", str(tmp_path / "toy.svg"),
                 "--export", "chrome", str(tmp_path / "t.json"),
                 "--export", "csv", str(tmp_path / "ops.csv"), timeout=50)  # fmt: skip
    assert result.returncode == 0, result.stderr
    trace = json.loads((tmp_path / "t.json").read_text())["traceEvents"]
    assert sum(e.get("name") == "holds token" for e in trace) == 9
    assert any(e.get("ph") == "C" and e.get("name") == "token" for e in trace)
    csv_text = (tmp_path / "ops.csv").read_text()
    assert csv_text.count(",token,token,take,") == 9
    assert TOKEN.display.title in (tmp_path / "toy.svg").read_text()

    history = History(manifest["primitives"], track_states=True)
    board = history.subscribe(Board())
    assert isinstance(board, Board)
    history.feed_file(run_dir / "events.jsonl")
    (row,) = board.rows()
    assert row.text == "token with nobody, passed 9 times"


# Two cars share a pool of one unit: b waits for it from 1.5 until a releases it at 3.0.
POOL = [
    _op(1.0, "a", "s", "semaphore", "acquire", "invoke"),
    _op(1.1, "a", "s", "semaphore", "acquire", "ok"),
    _op(1.5, "b", "s", "semaphore", "acquire", "invoke"),
    _op(3.0, "a", "s", "semaphore", "release", "invoke"),
    _op(3.1, "a", "s", "semaphore", "release", "ok"),
    _op(3.2, "b", "s", "semaphore", "acquire", "ok"),
]


def test_a_followed_gauge_series_calls_back_at_each_of_its_changes_and_no_other() -> None:
    history = History({"s": {"kind": "semaphore", "value": 1}})
    held: list[tuple[float, float]] = []
    history.follow("s", "held", lambda ts, value: held.append((ts, value)))
    # A primitive the log names later (not declared) is followed from its first line on.
    later: list[tuple[float, float]] = []
    history.follow("t", "held", lambda ts, value: later.append((ts, value)))
    other = [{**e, "prim": "t", "ts": e["ts"] + 10} for e in POOL[:2]]
    history.feed([line_of(e) for e in _with_seq([*POOL, *other])])
    assert held == [(1.1, 1), (3.0, 0), (3.2, 1)]  # "waiting" changed too: not called for it
    assert later == [(11.1, 1)]


class _Ops(Subscriber):
    ops = frozenset({"acquire"})

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def on_invoke(self, op: Any) -> None:
        self.seen.append(("invoke", op.actor, op.name))

    def on_op(self, op: Any) -> None:
        self.seen.append((op.outcome, op.actor, op.name))


def test_a_subscriber_that_declares_its_operations_is_called_for_those_alone() -> None:
    history = History({"s": {"kind": "semaphore", "value": 1}})
    only = history.subscribe(_Ops())
    every = history.subscribe(_Holds())  # no ops declared: it sees every hold as before
    # c's acquire never returns: it is handed on as pending at the end, to the same filter.
    history.feed([line_of(e) for e in _with_seq([*POOL, _op(4.0, "c", "s", "semaphore",
                                                           "acquire", "invoke")])])  # fmt: skip
    history.finish()
    assert isinstance(only, _Ops)
    assert isinstance(every, _Holds)
    assert only.seen == [("invoke", "a", "acquire"), ("ok", "a", "acquire"),
                         ("invoke", "b", "acquire"), ("ok", "b", "acquire"),
                         ("invoke", "c", "acquire"), ("pending", "c", "acquire")]  # fmt: skip
    assert [(h.actor, h.start, h.end) for h in every.holds] == [("a", 1.1, 3.0), ("b", 3.2, 4.0)]


def test_the_live_view_s_guard_routes_a_check_by_the_operations_it_declares() -> None:
    from sim.views.watch import _Guarded

    history = History({"s": {"kind": "semaphore", "value": 1}})
    inner = _Ops()
    history.subscribe(_Guarded(inner))
    history.feed([line_of(e) for e in _with_seq(POOL)])
    assert {name for _, _, name in inner.seen} == {"acquire"}


def test_a_subscriber_s_ops_must_be_a_set() -> None:
    class Listed(Subscriber):
        ops = ("acquire",)  # type: ignore[assignment]

    with pytest.raises(ScenarioError, match=r"Listed\.ops must be a set"):
        History().subscribe(Listed())


def test_operations_and_holds_are_equal_only_to_themselves() -> None:
    # Subscribers key dicts and sets by them: two operations of the same lines are two.
    line = line_of(POOL[0] | {"seq": 0})
    first, second = Operation(line, True), Operation(line, True)
    assert first != second
    assert len({first, second}) == 2
    assert first == first
    assert Hold("a", "s", 1.0) != Hold("a", "s", 1.0)


def test_lines_read_in_blocks_keep_their_numbers_and_findings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sim.history import lines

    monkeypatch.setattr(lines, "_BLOCK", 200)  # two lines or so per block
    events = [json.dumps(e) for e in _with_seq(POOL)]
    events.insert(3, "not json")
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(events) + "\n" + events[0][:-1], encoding="utf-8")  # torn end
    findings: list[lines.Finding] = []
    chunks = list(lines.read_lines(path, findings))
    assert len(chunks) >= 3
    got = [line.number for chunk in chunks for line in chunk]
    assert got == [1, 2, 3, 5, 6, 7]
    assert [(f.line, f.problem.split(":")[0]) for f in findings] == [
        (4, "not JSON"),
        (8, "last line is torn (no newline)"),
    ]


class _Seen(Subscriber):
    """Every fact and line it is handed, in order, as plain values."""

    def __init__(self, events: frozenset[str] | None) -> None:
        self.events = events
        self.seen: list[tuple[Any, ...]] = []

    def on_line(self, line: Any) -> None:
        self.seen.append(("line", line.actor, line.seq))

    def on_op(self, op: Operation) -> None:
        self.seen.append(("op", op.actor, op.prim, op.invoke.seq, op.done and op.done.seq))


def _random_blocks(seed: int) -> list[tuple[str, list[Any]]]:
    # Blocks of one actor's lines as a coordinator receives them: mostly domain events in seq
    # order, with now and then what feed_run must leave to feed (a gap, a repeated seq, time
    # going back, a lifecycle line, a line somebody reads, an operation, an engine line).
    import random

    rng = random.Random(seed)
    seqs: dict[str, int] = {}
    clock = {"a": 0.0, "b": 0.0, "c": 0.0, "engine": 0.0}
    blocks = []
    for _ in range(300):
        actor = rng.choice(["a", "b", "c", "a", "b", "c", "engine"])
        # Another actor's block may start before the newest time seen: its first lines are late.
        clock[actor] = max(clock.values()) - rng.choice([0.0, 0.0, 0.05, 0.3])
        block = []
        for _ in range(rng.randint(1, 12)):
            clock[actor] += rng.choice([0.0, 0.001, 0.01])
            seq = seqs.get(actor, 0)
            odd = rng.random()
            if odd < 0.01:
                seq += 2  # a gap
            elif odd < 0.02:
                seq = max(seq - 1, 0)  # a repeat
            seqs[actor] = seq + 1
            fields: dict[str, Any] = {"ts": clock[actor], "actor": actor, "pid": 1, "seq": seq}
            if rng.random() < 0.02:
                fields["ts"] -= 0.02  # time goes back inside the block
            pick = rng.random()
            if pick < 0.02:
                fields |= {"event": "actor_start"}
            elif pick < 0.03:
                fields |= {"event": "read_me"}
            elif pick < 0.05:
                phase = rng.choice(["invoke", "ok"])
                fields |= _op(fields["ts"], actor, "s", "semaphore", "acquire", phase)
            else:
                fields |= {"event": rng.choice(["tick", "tock"]), "i": seq}
            block.append(line_of(fields))
        blocks.append((actor, block))
    return blocks


@pytest.mark.parametrize("setup", ["plain", "reader", "every-line", "states", "alarms"])
@pytest.mark.parametrize("seed", range(4))
def test_a_block_taken_in_one_go_leaves_the_history_as_feeding_it_line_by_line(
    setup: str, seed: int
) -> None:
    # The coordinator offers each good block to feed_run first: whatever it takes must change
    # the history exactly as feed would have, and whatever it refuses it must leave untouched.
    histories = []
    for _ in range(2):
        h = History({"s": {"kind": "semaphore", "initial": 2}}, actors=["a", "b", "c"],
                    track_states=setup == "states")  # fmt: skip
        seen = _Seen(None if setup == "every-line" else frozenset({"read_me"}))
        if setup != "plain":
            h.subscribe(seen)
        rung: list[float] = []
        if setup == "alarms":
            for ts in (0.05, 0.5, 1.0, 3.0):
                h.at(ts, rung.append)
        histories.append((h, seen, rung))
    (one_go, seen_one_go, rung_one_go), (each, seen_each, rung_each) = histories
    taken = 0
    for actor, block in _random_blocks(seed):
        before = (one_go.lines, one_go.now, one_go.late_lines, dict(one_go.next_seq))
        if one_go.feed_run(actor, block):
            taken += 1
        else:
            assert before == (one_go.lines, one_go.now, one_go.late_lines, one_go.next_seq)
            one_go.feed(block)
        each.feed(block)

        def state(h: History) -> tuple[Any, ...]:
            gaps = [(line.actor, line.seq, due) for line, due in h.gaps]
            return (h.lines, h.ops, h.now, h.actor_now, h.next_seq, h.gap_count, gaps,
                    h.late_lines, h.late_s, h.orphans, h.started, h.ended, h.malformed_count,
                    h.states())  # fmt: skip

        assert state(one_go) == state(each)
    assert seen_one_go.seen == seen_each.seen
    assert rung_one_go == rung_each
    assert bool(seen_each.seen) == (setup != "plain")  # lines and operations somebody reads
    if setup in ("plain", "reader", "alarms"):
        assert taken > 50  # most blocks went in one go
    else:
        assert taken == 0  # every line is somebody's business


def test_asking_for_a_primitive_next_to_a_declared_one_is_a_typo() -> None:
    # history.waits("teller", ...) for a run whose primitive is "tellers" would give empty
    # statistics without a word; a name the run may make, or far from every declared one (a
    # lock only some configs declare), is still fine.
    history = History({"tellers": {"kind": "semaphore", "value": 2},
                       "counter": {"kind": "value"}})  # fmt: skip
    for ask in (lambda: history.waits("teller", "acquire"),
                lambda: history.level("teller", "held")):  # fmt: skip
        with pytest.raises(ScenarioError, match="no primitive named 'teller' \\(did you mean "
                           "'tellers'\\?\\)"):  # fmt: skip
            ask()
    history.waits("tellers", "acquire")
    history.waits("counter.lock", "acquire")
    history.waits("mutex", "acquire")


def test_a_fault_and_a_death_move_the_actors_time_and_a_late_line_does_not_take_it_back() -> None:
    lines = [line_of(e) for e in _with_seq([
        {"ts": 0.5, "actor": "a", "pid": 1, "event": "actor_start"},
        {"ts": 0.6, "actor": "b", "pid": 2, "event": "actor_start"},
        {"ts": 1.0, "actor": "a", "pid": 1, "event": "arrive"},
        {"ts": 2.0, "actor": "engine", "pid": 9, "event": "fault", "action": "kill",
         "target": "a"},
        {"ts": 3.0, "actor": "engine", "pid": 9, "event": "exit", "target": "a", "code": -9},
        # Late (behind the newest time already fed): still b's, but not the run's end.
        {"ts": 2.5, "actor": "b", "pid": 2, "event": "arrive"},
        {"ts": 4.0, "actor": "engine", "pid": 9, "event": "run_end"},
    ])]  # fmt: skip
    history = History(actors=["a", "b"])
    history.feed(lines)
    assert history.ended["a"] == "died"
    assert history.actor_now == 3.0
    assert history.now == 4.0
