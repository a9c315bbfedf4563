"""run.json says what produced a run: the TOML text as read, the overrides, Python and every
dependency's version, the host, and the git commit and dirty flag of the scenario's source."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import manifest_of, only_run_dir, sim


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-C", str(repo), *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


@pytest.mark.timeout(120)
def test_run_json_records_the_text_overrides_versions_host_and_commit(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    assert sim("new", "printer", "--dir", str(repo)).returncode == 0
    config = repo / "printer.toml"
    # Exactly as read: comments, odd spacing and Windows line ends survive.
    text = config.read_text().replace("\n", "\r\n") + "# the end  \r\n"
    config.write_bytes(text.encode())
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "a printer")
    commit = _git(repo, "rev-parse", "HEAD")

    ran = sim("run", str(config), "-s", "params.jobs=2", "--out", str(tmp_path / "clean"),
              "--quiet")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    run_dir = only_run_dir(tmp_path / "clean")
    manifest = manifest_of(run_dir)
    assert manifest["config_text"] == text
    assert (run_dir / "config.toml").read_bytes() == config.read_bytes()
    assert manifest["overrides"] == ["params.jobs=2"]
    found = manifest["provenance"]
    assert found["host"] == socket.gethostname()
    assert found["python"] == {"version": platform.python_version(),
                               "implementation": platform.python_implementation(),
                               "executable": sys.executable}  # fmt: skip
    packages = found["packages"]
    for name in ("anyio", "structlog", "msgspec", "rich", "matplotlib", "numpy", "pandas",
                 "markdown-it-py", "python-dateutil"):  # fmt: skip
        assert packages[name] == importlib.metadata.version(name), name
    assert "pytest" not in packages  # a test tool, not something a run depends on
    scenario = found["scenario"]
    assert scenario["form"] == "file"
    assert scenario["path"] == str(repo / "printer.py")
    assert scenario["git"] == {"root": str(repo), "commit": commit, "dirty": False,
                               "tree_dirty": False}  # fmt: skip

    with open(repo / "printer.py", "a", encoding="utf-8") as fh:
        fh.write("# changed after the commit\n")
    ran = sim("run", str(config), "--out", str(tmp_path / "dirty"), "--quiet")
    assert ran.returncode == 0, ran.stderr
    manifest = manifest_of(only_run_dir(tmp_path / "dirty"))
    assert manifest["overrides"] == []
    assert manifest["provenance"]["scenario"]["git"] == {
        "root": str(repo), "commit": commit, "dirty": True, "tree_dirty": True}  # fmt: skip


@pytest.mark.timeout(60)
def test_a_scenario_outside_a_repository_has_no_git_state(tmp_path: Path) -> None:
    assert sim("new", "alone", "--dir", str(tmp_path)).returncode == 0
    ran = sim("run", str(tmp_path / "alone.toml"), "--out", str(tmp_path / "logs"), "--quiet")
    assert ran.returncode == 0, ran.stderr
    scenario = manifest_of(only_run_dir(tmp_path / "logs"))["provenance"]["scenario"]
    assert scenario["git"] is None
    assert scenario["name"] == "alone.py"


def test_within_same_source_git_is_asked_once_per_path(tmp_path: Path) -> None:
    from sim._provenance import git_state, same_source

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True,
                       timeout=30)  # fmt: skip

    git("init", "-q")
    git("config", "user.email", "sim@example.org")
    git("config", "user.name", "sim")
    source = tmp_path / "mine.py"
    source.write_text("x = 1\n")
    git("add", "mine.py")
    git("commit", "-q", "-m", "one")
    with same_source():
        first = git_state(source)
        source.write_text("x = 2\n")  # dirty now, but explore's runs all share the first answer
        assert git_state(source) == first
    assert first is not None
    assert first["dirty"] is False
    # Outside the block every run asks again.
    again = git_state(source)
    assert again is not None
    assert again["dirty"] is True


@pytest.mark.timeout(60)
def test_asking_git_leaves_the_index_alone(tmp_path: Path) -> None:
    # git status rewrites a stale index under .git/index.lock; a run killed with its process
    # group (Ctrl-C of a sweep, a test's SIGKILL) could kill it there and leave the lock, and
    # the user's next commit fails. Provenance asks without taking that lock at all.
    from sim._provenance import git_state

    _git(tmp_path, "init", "-q")
    source = tmp_path / "mine.py"
    source.write_text("x = 1\n")
    _git(tmp_path, "add", "mine.py")
    _git(tmp_path, "commit", "-q", "-m", "one")
    index = tmp_path / ".git" / "index"
    # Same content, new times: the index's record of the file is stale, and a plain status
    # would write it anew.
    later = source.stat().st_mtime_ns + 5_000_000_000
    os.utime(source, ns=(later, later))
    before = index.read_bytes(), index.stat().st_mtime_ns
    state = git_state(source)
    assert state is not None
    assert state["dirty"] is False
    assert (index.read_bytes(), index.stat().st_mtime_ns) == before
    # (The check can fail: a plain status does rewrite it.)
    _git(tmp_path, "status", "--porcelain")
    assert index.read_bytes() != before[0]
