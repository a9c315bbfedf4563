"""The command line: exit codes, one-line errors, nothing created for a bad config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import sim

BAD = {
    "syntax": ('scenario = "carpark"\n[params\ncapacity = 1\n', "line 2, column"),
    "unknown key": ('scenario = "carpark"\n[params]\ncapcity = 1\n', "params.capcity"),
    "wrong type": ('scenario = "carpark"\n[params]\ncapacity = "lots"\n', "params.capacity"),
    "capacity 0": ('scenario = "carpark"\n[params]\ncapacity = 0\n', "params.capacity"),
    "cars -1": ('scenario = "carpark"\n[params]\ncars = -1\n', "params.cars"),
}


@pytest.mark.parametrize("case", list(BAD))
@pytest.mark.timeout(30)
def test_bad_config_exits_2_with_one_line_and_no_run_dir(
    tmp_path: Path, out: Path, case: str
) -> None:
    text, key = BAD[case]
    config = tmp_path / "bad.toml"
    config.write_text(text, encoding="utf-8")
    for command in (["run", str(config), "--out", str(out)], ["check", str(config)]):
        result = sim(*command, timeout=30)
        assert result.returncode == 2, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert str(config) in lines[0]
        assert key in lines[0]
        assert "Traceback" not in result.stderr
        assert result.stdout == ""
    assert list(out.iterdir()) == []


@pytest.mark.timeout(30)
def test_bad_override_exits_2(out: Path) -> None:
    result = sim("run", "carpark.toml", "-s", "params.cars=-1", "--out", str(out))
    assert result.returncode == 2
    assert "params.cars" in result.stderr
    assert "-s" in result.stderr
    assert list(out.iterdir()) == []


@pytest.mark.timeout(30)
def test_list_shows_scenarios_and_configs() -> None:
    result = sim("list")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == ["scenario", "carpark"] for line in lines)
    assert any(line.split()[:2] == ["config", "carpark.toml"] for line in lines)


@pytest.mark.timeout(30)
def test_check_validates_without_running(out: Path) -> None:
    result = sim("check", "configs/carpark.toml", cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr
    assert '"capacity":130' in result.stdout
    assert "ok" in result.stderr


@pytest.mark.timeout(30)
def test_usage_error_exits_2() -> None:
    assert sim("run").returncode == 2
    assert sim("frobnicate").returncode == 2


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("logs")
    made = sim("run", "carpark", "-s", "clock.mode=virtual", "-s", "params.cars=20", "-s",
               "params.capacity=5", "--seed", "1", "--out", str(out), "--quiet")  # fmt: skip
    assert made.returncode == 0, made.stderr
    return Path(made.stdout.strip())


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("args", "read"),
    [
        (["list"], 0),  # the reading end closed before sim writes anything
        (["list"], 1),  # `sim list | head -1`
        (["replay", "RUN", "--speed", "10"], 2),  # the timeline, as docs/replay.md pipes it
        (["replay", "RUN", "--export", "csv", "/dev/stdout"], 1),
        (["replay", "RUN", "--check", "--speed", "10"], 2),
        (["replay", "FAILED", "--check", "--speed", "10"], 2),  # still exits 1
    ],
)
def test_a_reader_that_went_away_is_no_failure(args: list[str], read: int, small_run: Path) -> None:
    # rich's console exited 1 on a broken pipe (and sim's own handler returned 1): a failed
    # run, by the README's exit codes. The reader has read what it wanted; sim exits with what
    # the command came to, and stops (a timeline played on to nobody would take the run's time).
    failed = small_run.parent / "failed"
    if "FAILED" in args and not failed.exists():
        # The same log with one of its lines gone: seq contiguous fails, so --check exits 1.
        failed.mkdir()
        lines = (small_run / "events.jsonl").read_bytes().splitlines(keepends=True)
        (failed / "events.jsonl").write_bytes(b"".join(lines[:40] + lines[41:]))
    argv = [{"RUN": str(small_run), "FAILED": str(failed)}.get(a, a) for a in args]
    proc = subprocess.Popen([sys.executable, "-m", "sim", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    assert proc.stderr is not None
    for _ in range(read):
        assert proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=30)
    proc.stderr.close()
    assert "Traceback" not in stderr, stderr
    assert "BrokenPipeError" not in stderr
    assert "Broken pipe" not in stderr
    assert proc.returncode == (1 if "FAILED" in args else 0), stderr
    if "--speed" in args:
        # Played to a reader that went away, the verdicts still reach stderr.
        assert ("failed:" if "FAILED" in args else "ok ") in stderr
