"""Replay: the same metrics and verdicts from the log alone, and planted faults found."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sim._replay import load_run, replay

from .conftest import manifest_of, only_run_dir, sim

CAPACITY = 130


def header(capacity: int = CAPACITY, cars: int = 2) -> dict[str, Any]:
    """The engine's first line, as a real run writes it (the config replay rebuilds from)."""
    names = [f"car-{i:03d}" for i in range(cars)]
    return {
        "ts": 0.0, "actor": "engine", "pid": 1, "seq": 0, "event": "run_start",
        "scenario": "carpark",
        "config": {"scenario": "carpark", "params": {"capacity": capacity, "cars": cars,
                                                     "visits": 1}},
        "primitives": {"spaces": {"kind": "semaphore", "value": capacity}},
        "actor_names": names,
    }  # fmt: skip


class Log:
    """A hand-made events file: per-actor seq is filled in unless given."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.seq: dict[str, int] = {"engine": 1}  # the header is the engine's seq 0
        self.ts = 0.0

    def add(self, actor: str, event: str, **fields: Any) -> None:
        self.ts += 0.001
        seq = fields.pop("seq", self.seq.get(actor, 0))
        self.seq[actor] = seq + 1
        self.lines.append({"ts": self.ts, "actor": actor, "pid": 100, "seq": seq,
                           "event": event, **fields})  # fmt: skip

    def op(self, actor: str, op: str, phase: str, prim: str = "spaces") -> None:
        self.add(actor, "op", prim=prim, kind="semaphore", op=op, phase=phase)

    def write(self, folder: Path, head: dict[str, Any], tail: bytes = b"") -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "events.jsonl"
        body = [json.dumps(head)] + [json.dumps(line) for line in self.lines]
        path.write_bytes(("\n".join(body) + "\n").encode() + tail)
        return path


def visit(log: Log, car: str) -> None:
    log.add(car, "actor_start")
    log.add(car, "arrive", visit=0)
    log.op(car, "acquire", "invoke")
    log.op(car, "acquire", "ok")
    log.add(car, "park", visit=0)


def leave(log: Log, car: str) -> None:
    log.add(car, "leave", visit=0)
    log.op(car, "release", "invoke")
    log.op(car, "release", "ok")
    log.add(car, "actor_end", status="ok")
    log.add("engine", "exit", target=car, code=0)


def verdicts(path: Path) -> dict[str, Any]:
    report, _ = replay(load_run(path))
    return {v.name: v for v in report.verdicts}


def test_a_clean_hand_made_log_passes(tmp_path: Path) -> None:
    log = Log()
    for car in ("car-000", "car-001"):
        visit(log, car)
    for car in ("car-000", "car-001"):
        leave(log, car)
    found = verdicts(log.write(tmp_path / "run", header()))
    assert {v.status for v in found.values()} == {"pass"}, found


def test_131_holders_of_130_spaces_is_found(tmp_path: Path) -> None:
    log = Log()
    cars = [f"car-{i:03d}" for i in range(CAPACITY + 1)]
    for car in cars:
        visit(log, car)
    found = verdicts(log.write(tmp_path / "run", header(cars=len(cars))))
    bound = found["spaces: at most 130 holders"]
    assert bound.status == "fail"
    assert "131 holders" in bound.detail
    assert "car-130" in bound.detail


def test_a_gap_in_seq_is_found(tmp_path: Path) -> None:
    log = Log()
    log.add("car-000", "actor_start")
    log.add("car-000", "arrive", visit=0)
    log.add("car-000", "give_up", visit=0, seq=5)  # seq 2, 3 and 4 are lost
    found = verdicts(log.write(tmp_path / "run", header(cars=1)))
    gap = found["seq contiguous"]
    assert gap.status == "fail"
    assert "car-000: seq 5" in gap.detail
    assert "where 2 was due" in gap.detail


def test_a_torn_last_line_and_a_broken_line_are_findings_with_line_numbers(
    tmp_path: Path,
) -> None:
    log = Log()
    visit(log, "car-000")
    path = log.write(tmp_path / "run", header(cars=1), tail=b'{"ts": 9.0, "actor": "car-0')
    text = path.read_bytes().split(b"\n")
    text.insert(3, b"this is not json")
    path.write_bytes(b"\n".join(text))
    report, _ = replay(load_run(path))
    problems = {(f.line, f.severity): f.problem for f in report.findings}
    assert (4, "error") in problems
    assert "not JSON" in problems[(4, "error")]
    torn = [f for f in report.findings if "torn" in f.problem]
    assert torn
    assert torn[0].line == len(text)
    assert not report.ok


def test_a_gap_left_by_an_unreadable_line_is_put_down_to_the_damaged_file(
    tmp_path: Path,
) -> None:
    log = Log()
    visit(log, "car-000")
    path = log.write(tmp_path / "run", header(cars=1))
    text = path.read_bytes().split(b"\n")
    text[3] = b"this is not json"  # a line of car-000's, gone: its seq has a gap
    path.write_bytes(b"\n".join(text))
    report, _ = replay(load_run(path))
    assert report.verdicts[0].name == "seq contiguous"
    assert report.verdicts[0].status == "fail"
    # It said "invariant violated: seq contiguous: car-000: seq 3 ...", as if the run had lost
    # a line: the file is what is damaged.
    assert report.reason.startswith("the log is damaged: events.jsonl line 4: not JSON")
    assert report.reason.endswith("(so seq contiguous fails)")


def test_a_line_really_lost_is_not_put_down_to_a_torn_last_line(tmp_path: Path) -> None:
    # A torn last line is what a killed run leaves; it cannot explain a gap in the middle.
    log = Log()
    log.add("car-000", "actor_start")
    log.add("car-000", "arrive", visit=0, seq=3)  # seq 1 and 2 are lost
    path = log.write(tmp_path / "run", header(cars=1), tail=b'{"ts": 9.0, "actor": "car-0')
    report, _ = replay(load_run(path))
    assert any("torn" in f.problem for f in report.findings)
    assert report.reason.startswith("invariant violated: seq contiguous: car-000: seq 3")


def test_a_missing_manifest_and_a_newer_schema_are_warnings(tmp_path: Path) -> None:
    log = Log()
    visit(log, "car-000")
    path = log.write(tmp_path / "run", header(cars=1))
    loaded = load_run(path.parent)
    assert any("no run.json" in f.problem and f.severity == "warning" for f in loaded.findings)
    assert loaded.config is not None
    assert loaded.config.params.capacity == CAPACITY
    (path.parent / "run.json").write_text(json.dumps({"schema": 99}), encoding="utf-8")
    loaded = load_run(path.parent)
    assert any("schema 99" in f.problem for f in loaded.findings)


@pytest.mark.timeout(120)
def test_replay_recomputes_exactly_what_the_run_stored(out: Path) -> None:
    result = sim("run", "carpark.toml", "-s", "params.cars=30", "-s", "params.capacity=10",
                 "-s", "params.visits=2", "-s", "params.patience=5", "-s", "clock.speedup=12000",
                 "--out", str(out), "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(out)
    replayed = sim("replay", str(run_dir), "--check", "--json")
    assert replayed.returncode == 0, replayed.stderr
    stored = manifest_of(run_dir)
    again = json.loads(replayed.stdout)
    assert again["metrics"] == stored["metrics"]
    assert again["invariants"] == stored["invariants"]
    # The summary the run printed and the replay's agree line by line on the metrics.
    assert "visits parked" in replayed.stderr


@pytest.mark.timeout(60)
def test_replay_check_exits_1_on_a_violation_and_2_on_a_missing_run(tmp_path: Path) -> None:
    log = Log()
    for i in range(CAPACITY + 1):
        visit(log, f"car-{i:03d}")
    path = log.write(tmp_path / "run", header(cars=CAPACITY + 1))
    result = sim("replay", str(path.parent), "--check")
    assert result.returncode == 1
    assert "FAIL" in result.stderr
    assert sim("replay", str(path.parent)).returncode == 0  # without --check it only reports
    missing = sim("replay", str(tmp_path / "nothing"))
    assert missing.returncode == 2
    assert "no such run directory" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.timeout(120)
def test_replay_cli_writes_every_output_even_without_a_manifest(out: Path, tmp_path: Path) -> None:
    result = sim("run", "philosophers-naive", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(out)
    (run_dir / "run.json").unlink()  # the log alone must be enough
    trace, table, picture = tmp_path / "t.json", tmp_path / "t.csv", tmp_path / "t.svg"
    replayed = sim("replay", str(run_dir / "events.jsonl"), "--check",
                   "--export", "chrome", str(trace), "--export", "csv", str(table),
                   "--plot", str(picture), "--speed", "100")  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    assert "no run.json" in replayed.stderr
    assert "shown" in replayed.stderr  # the expected deadlock, recomputed from the log
    assert json.loads(trace.read_text(encoding="utf-8"))["traceEvents"]
    lines = (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()
    invokes = sum('"phase":"invoke"' in line for line in lines)
    assert len(table.read_text(encoding="utf-8").splitlines()) == invokes + 1
    assert picture.read_text(encoding="utf-8").lstrip().startswith("<?xml")
    assert "end of the log" in replayed.stdout + replayed.stderr
    bad = sim("replay", str(run_dir), "--export", "xml", str(tmp_path / "x"))
    assert bad.returncode == 2
    assert "unknown format 'xml'" in bad.stderr


def test_a_release_without_an_acquire_is_found(tmp_path: Path) -> None:
    # A car that leaves twice gives back a space it does not hold: holders never exceed the
    # capacity in the count, yet the car park now admits one car too many.
    log = Log()
    visit(log, "car-000")
    log.op("car-000", "release", "invoke")
    log.op("car-000", "release", "ok")
    log.op("car-000", "release", "invoke")
    log.op("car-000", "release", "ok")
    found = verdicts(log.write(tmp_path / "run", header(cars=1)))
    bound = found["spaces: at most 130 holders"]
    assert bound.status == "fail"
    assert "more than was ever acquired" in bound.detail


@pytest.mark.timeout(60)
def test_a_file_that_is_not_a_log_is_refused_with_exit_2(tmp_path: Path) -> None:
    # "RUN is a run directory or its events file": a README given by mistake is bad input,
    # not a replay that passes with nothing in it.
    notes = tmp_path / "readme.txt"
    notes.write_text("hello\nthis is not a log\n", encoding="utf-8")
    result = sim("replay", str(notes))
    assert result.returncode == 2, result.stderr
    assert f"{notes}: not a run's events file" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    # A log whose first lines are damaged is still read, and its findings say where.
    log = tmp_path / "events.jsonl"
    good = json.dumps({"ts": 0.1, "actor": "a", "pid": 1, "seq": 0, "event": "tick"})
    log.write_text("not json\n" + good + "\n", encoding="utf-8")
    result = sim("replay", str(log), "--check")
    assert result.returncode == 1, result.stderr
    assert "line 1: not JSON" in result.stderr
    assert "failed: events.jsonl line 1: not JSON" in " ".join(result.stderr.split())


@pytest.mark.timeout(60)
def test_what_replay_cannot_write_is_said_before_it_reads_the_log(tmp_path: Path) -> None:
    # A bad --export or --plot target was found after the whole summary, or was a
    # FileNotFoundError traceback: now exit 2 at once, naming the option, nothing written.
    log = Log()
    visit(log, "car-000")
    leave(log, "car-000")
    run = str(log.write(tmp_path / "run", header(cars=1)).parent)
    absent = tmp_path / "absent"
    afile = tmp_path / "afile"
    afile.write_text("", encoding="utf-8")
    cases = {
        ("--export", "csv", str(absent / "t.csv")): f"--export: cannot write {absent / 't.csv'}: "
        f"the folder {absent} does not exist",
        ("--export", "chrome", str(tmp_path)): f"--export: {tmp_path} is a directory",
        ("--export", "html", str(afile / "p.html")): f"--export: cannot write {afile / 'p.html'}: "
        f"the folder {afile} is not a directory",
        ("--plot", str(absent / "p.png")): f"--plot: cannot write {absent / 'p.png'}",
        ("--plot", str(tmp_path / "p.jpg")): "--plot: the picture must be a .png or .svg file",
        ("--export", "pdf", str(tmp_path / "p.pdf")): "--export: unknown format 'pdf'",
    }
    for args, said in cases.items():
        result = sim("replay", run, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert " ".join(result.stderr.split()).startswith(f"error: {said}"), (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "run"]


@pytest.mark.timeout(60)
def test_a_scenario_the_run_does_not_fit_names_the_key(tmp_path: Path) -> None:
    # `--scenario philosophers` for a car park's run said "unknown key" and not which one.
    log = Log()
    visit(log, "car-000")
    leave(log, "car-000")
    run = str(log.write(tmp_path / "run", header(cars=1)).parent)
    result = sim("replay", run, "--scenario", "philosophers")
    assert result.returncode == 2, result.stderr
    assert " ".join(result.stderr.split()) == (
        "error: --scenario philosophers: the run's config does not fit it: "
        "params.capacity: unknown key"
    )


@pytest.mark.timeout(120)
def test_without_its_manifest_a_replay_takes_the_wall_time_from_the_log(tmp_path: Path) -> None:
    # It said "wall time 0.00 s" for a run without run.json, or with an engine killed before
    # it wrote its end; a wall-clock log counts wall seconds from the start in every line.
    import re

    from tests.fixtures.record import RUNS, unpack

    run_dir = unpack(RUNS / "carpark", tmp_path)
    (run_dir / "run.json").unlink()
    lines = (run_dir / "events.jsonl").read_bytes().splitlines()
    last = max(json.loads(line)["ts"] for line in lines)
    done = sim("replay", str(run_dir))
    assert done.returncode == 0, done.stderr
    assert re.search(rf"wall time +{last:.2f} s\n", done.stderr), done.stderr
    # A virtual run's times are its own, not wall seconds: nothing is made up for it.
    sim("run", "philosophers-naive", "-s", "clock.mode=virtual", "--seed", "3", "--quiet",
        "--out", str(tmp_path / "v"))  # fmt: skip
    virtual = only_run_dir(tmp_path / "v")
    (virtual / "run.json").unlink()
    replayed = sim("replay", str(virtual))
    assert re.search(r"wall time +-\n", replayed.stderr), replayed.stderr
