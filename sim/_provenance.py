"""What a run's result depends on besides its config: the host, Python, every installed
dependency's version, and the git commit of the scenario's source.

Recorded in run.json (``provenance``), so that a run found months later says what produced it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._lookup import Source

__all__ = ["dependencies", "git_state", "provenance"]

# sim's own requirements when its metadata cannot be read (a checkout used without install).
_FALLBACK = ("anyio", "structlog", "msgspec", "rich", "matplotlib", "numpy", "pandas")
# Optional extras that change what a run or a sweep does when they are installed.
_OPTIONAL = ("pyarrow", "distributed")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_GIT_TIMEOUT_S = 5.0
# No optional locks: a status refreshes the index under .git/index.lock when it can, and a run
# killed with its process group (a test's, a sweep's SIGKILL) would kill it there and leave
# the lock behind, which stops the user's next commit. (The variable, not the option
# --no-optional-locks: a git older than 2.15 ignores it rather than refusing to answer.)
_NO_LOCKS = {"GIT_OPTIONAL_LOCKS": "0"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def dependencies() -> dict[str, str]:
    """Version of every installed distribution sim needs to run, directly or through another
    (its requirements, theirs, and so on), and of the optional extras that are installed."""
    # Each asked for by name: reading the metadata of every installed distribution to find
    # their names cost 111 ms a run with 183 installed, against 30 ms for the 44 needed.
    sim = _installed("sim")
    wanted = _requirements(sim, sim.metadata) if sim is not None else list(_FALLBACK)
    found: dict[str, str] = {}
    queue = [*wanted, *_OPTIONAL]
    while queue:
        name = _canonical(queue.pop())
        if name in found:
            continue
        needed = _installed(name)
        if needed is None:
            continue  # optional, or left out on this platform by a marker
        # Its metadata read once: each of .version and .requires would parse it again.
        metadata = needed.metadata
        found[name] = metadata["Version"]
        queue.extend(_requirements(needed, metadata))
    return dict(sorted(found.items()))


def _installed(name: str) -> importlib.metadata.Distribution | None:
    try:
        return importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _requirements(dist: importlib.metadata.Distribution, metadata: Any) -> list[str]:
    names = []
    listed = metadata.get_all("Requires-Dist")
    if listed is None and dist.read_text("requires.txt") is not None:
        # An egg-info install lists them there (.requires reads it, and parses the metadata
        # again: only worth it then, not for every distribution that needs nothing).
        listed = dist.requires
    for text in listed or ():
        if "extra ==" in text:
            continue  # an extra's requirement: only there when the extra was asked for
        match = _NAME.match(text)
        if match:
            names.append(match.group(1))
    return names


# Set while one source is run many times over (see :func:`same_source`): its git state, by path.
_same: dict[Path, dict[str, Any] | None] | None = None


@contextmanager
def same_source() -> Iterator[None]:
    """Within the block, ask git about each scenario source once: ``explore`` runs the same
    config hundreds of times a minute, and four git processes a run cost about as much as a
    small virtual run itself."""
    global _same
    before, _same = _same, {}
    try:
        yield
    finally:
        _same = before


def git_state(path: Path) -> dict[str, Any] | None:
    """The commit of the repository ``path`` is in, and whether ``path`` (a file or folder)
    differs from it (``dirty``: changed or untracked) and whether any tracked file of the work
    tree does (``tree_dirty``). None outside a repository or without git."""
    if _same is not None:
        if path not in _same:
            _same[path] = _git_state(path)
        return _same[path]
    return _git_state(path)


def _git_state(path: Path) -> dict[str, Any] | None:
    folder = path if path.is_dir() else path.parent
    questions = {
        "top": ("rev-parse", "--show-toplevel"),
        "commit": ("rev-parse", "HEAD"),
        "mine": ("status", "--porcelain", "--", str(path)),
        "tree": ("status", "--porcelain", "--untracked-files=no"),
    }
    # Asked all at once: one after another, the four cost 17 ms of every run's start.
    asked: dict[str, subprocess.Popen[str]] = {}
    env = os.environ | _NO_LOCKS
    try:
        for key, args in questions.items():
            command = ["git", "-C", str(folder), *args]
            asked[key] = subprocess.Popen(
                command, text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
            )
        said: dict[str, str | None] = {}
        for key, proc in asked.items():
            out, _ = proc.communicate(timeout=_GIT_TIMEOUT_S)
            said[key] = out if proc.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None
    finally:
        for proc in asked.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    top, commit, mine, tree = said["top"], said["commit"], said["mine"], said["tree"]
    if top is None or commit is None:
        return None
    return {
        "root": top.strip(),
        "commit": commit.strip(),
        "dirty": bool(mine and mine.strip()),
        "tree_dirty": bool(tree and tree.strip()),
    }


def provenance(origin: Source | None) -> dict[str, Any]:
    """Host, Python, dependencies and the scenario's source (with its git state)."""
    scenario: dict[str, Any] | None = None
    if origin is not None:
        scenario = origin.describe()
        path = origin.path
        if path is None:
            module = sys.modules.get(origin.module)
            where = getattr(module, "__file__", None)
            path = Path(where) if where else None
        if path is not None:
            scenario["path"] = str(path)
            scenario["git"] = git_state(path)
    return {
        "host": socket.gethostname(),
        "python": {
            "version": sys.version.split()[0],
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "packages": dependencies(),
        "scenario": scenario,
    }
