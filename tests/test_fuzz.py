"""Fuzzing the two readers of untrusted input: the config loader and the log reader.

The config loader (``load_config``) gets mutated versions of every bundled config (text-level
damage: flipped, inserted and deleted bytes, cut files; value-level damage: keys set to values
of other types, unknown keys, tables turned into values) together with random ``-s``
overrides. The log reader (``sim replay --check``, in-process, as the CLI runs it) gets
mutated versions of the kept real run logs (tests/fixtures/runs): lines dropped, duplicated,
swapped and moved, files cut at any byte, fields of every line set to values of other types,
hostile lines (nested thousands deep, unhashable names, not UTF-8, not objects), lines of
another run, and damaged or missing manifests.

The only acceptable outcomes are a result or a SimError (the CLI's exit codes 0, 1, 2), never
another exception. Each test runs 1,000 examples (``FUZZ_EXAMPLES`` changes that); they are
marked ``fuzz``, deselected by default and run by CI in a step of their own
(``python -m pytest -m fuzz``).

Scenario names stay among valid and plainly invalid names here: what a name may import is the
business of the scenario loader and its own tests.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import string
import tempfile
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sim import cli
from sim._toml import dumps as toml_dumps
from sim._toml import value as toml_value
from sim.config import load_config
from sim.errors import ConfigError

pytestmark = pytest.mark.fuzz

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.toml"))
RUNS = sorted(p for p in (ROOT / "tests" / "fixtures" / "runs").iterdir() if p.is_dir())
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1000"))
# Lines of a fixture log an example keeps at most (its beginning): a replay of a whole long log
# per example would spend the time on reading, not on the damage.
MAX_LINES = 400

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # no example database written into the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Names a scenario field may get: those of the bundled configs, and ones that plainly name
# nothing.
BUNDLED = sorted({tomllib.loads(p.read_text("utf-8"))["scenario"] for p in CONFIGS})
SCENARIOS = [
    *BUNDLED,
    "",
    "nope",
    "carpark ",
    "a b",
    "x-y",
    "CARPARK",
    "carpark.toml",
    "0",
    "\u00e9",
    "scenarios/carpark",
]


# -- values ------------------------------------------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12) | st.sampled_from(
    # Strings that mean something to a terminal, to rich's markup or to a format string.
    ["[/]", "[bold red", "\x1b[31m", "%s%n", "{0}", "\r\n", "\u2028", "../..", "\x00"]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=8,
)
# A TOML document has no null.
toml_values = st.recursive(
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | text,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(string.ascii_letters + "_", min_size=1, max_size=8), inner, max_size=4
        )
    ),
    max_leaves=8,
)


def _dotted(data: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        keys.append(prefix + key)
        if isinstance(value, dict):
            keys.extend(_dotted(value, f"{prefix}{key}."))
    return keys


# -- the config loader -------------------------------------------------------------------------


@cache
def _seed(index: int) -> tuple[str, dict[str, Any]]:
    source = CONFIGS[index].read_text(encoding="utf-8")
    return source, tomllib.loads(source)


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, last = dotted.split(".")
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[last] = value


def _get(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _like(value: Any) -> st.SearchStrategy[Any]:
    """Mostly a value of the same type as ``value`` (to reach range checks and a scenario's
    own validation), sometimes any value."""
    same: st.SearchStrategy[Any]
    if isinstance(value, bool):
        same = st.booleans()
    elif isinstance(value, int):
        same = st.integers(-10, 10**6) | st.integers(-(2**63), 2**63 - 1)
    elif isinstance(value, float):
        same = st.floats(-1e6, 1e6) | st.floats(allow_nan=True, allow_infinity=True)
    elif isinstance(value, str):
        same = (
            st.sampled_from(
                [
                    "exponential",
                    "uniform",
                    "fixed",
                    "none",
                    "fork",
                    "spawn",
                    "forkserver",
                    "wall",
                    "virtual",
                    "value",
                    "explicit",
                    "",
                ]
            )
            | text
        )
    elif isinstance(value, list):
        same = st.lists(
            st.sampled_from(["deadlock", "lost_updates", "starvation"]) | text, max_size=3
        )
    else:
        same = toml_values
    return st.one_of(same, same, same, toml_values)


def _delete(data: dict[str, Any], dotted: str) -> None:
    node: Any = data
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(last, None)


@st.composite
def config_files(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """A mutated bundled config (bytes) and a list of -s overrides."""
    source, data = _seed(draw(st.integers(0, len(CONFIGS) - 1)))
    data = json.loads(json.dumps(data))  # a private copy
    keys = _dotted(data)
    for _ in range(draw(st.integers(0, 4))):
        how = draw(st.sampled_from(["set", "new", "delete", "scenario", "table"]))
        key = draw(st.sampled_from(keys)) if keys else "params"
        if how == "set":
            _set(data, key, draw(_like(_get(data, key))))
        elif how == "new":
            name = draw(st.text(string.ascii_letters + "_.", min_size=1, max_size=10))
            _set(data, f"{key.rpartition('.')[0]}.{name}".strip("."), draw(toml_values))
        elif how == "delete":
            _delete(data, key)
        elif how == "scenario":
            data["scenario"] = draw(st.sampled_from(SCENARIOS))
        else:
            _set(data, key, draw(st.dictionaries(text, toml_values, max_size=3)))
    if isinstance(data.get("scenario"), str) and data["scenario"] not in SCENARIOS:
        data["scenario"] = draw(st.sampled_from(SCENARIOS))
    try:
        body = toml_dumps(data).encode("utf-8")
    except (TypeError, ValueError):
        body = source.encode("utf-8")
    if draw(st.integers(0, 3)) == 0:
        body = draw(_damaged(body))
    overrides = []
    for _ in range(draw(st.integers(0, 3))):
        key = draw(
            st.sampled_from(
                [
                    *keys,
                    "params.x",
                    "engine",
                    "clock.speedup",
                    "seed",
                    "a..b",
                    ".",
                    "",
                    "expect",
                    "scenario",
                ]
            )
        )
        if key == "scenario":
            value = draw(st.sampled_from(SCENARIOS))
        else:
            value = draw(st.one_of(_like(_get(data, key)).map(toml_value), text))
        forms = [f"{key}={value}", f"{key}", f"={value}", f"{key} = {value}"]
        overrides.append(draw(st.sampled_from(forms[:1] * 6 + forms[1:])))
    return body, overrides


@st.composite
def _damaged(draw: st.DrawFn, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if how == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif how == "insert":
            data[at:at] = draw(
                st.sampled_from(
                    [
                        b"[",
                        b"]",
                        b"=",
                        b'"',
                        b"\n",
                        b"\x00",
                        b"\xff",
                        b"{",
                        b"[[x]]\n",
                        b"'''",
                        b"#",
                    ]
                )
            )
        elif how == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        else:
            del data[at:]
    return bytes(data)


@pytest.mark.timeout(900)
@FUZZ
@given(case=config_files(), seed=st.none() | st.integers(0, 2**64))
def test_the_config_loader_raises_only_config_errors(
    case: tuple[bytes, list[str]], seed: int | None
) -> None:
    body, overrides = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzzed.toml"
        path.write_bytes(body)
        try:
            # As the command line calls it: the overrides are its -s options.
            config = load_config(path, overrides, seed=seed, via="-s")
        except ConfigError as exc:
            message = str(exc)
            event(f"config error: {exc.reason.split(':')[0][:30]}")
            # One line that names where the problem is: the file or the -s option.
            assert message.startswith((str(path), "-s")), message
            assert "\n" not in message, message
        else:
            event("valid config")
            assert config.scenario in SCENARIOS


# -- the log reader ----------------------------------------------------------------------------


@cache
def _fixture(index: int) -> tuple[list[bytes], bytes]:
    run = RUNS[index]
    with gzip.open(run / "events.jsonl.gz", "rb") as fh:
        lines = fh.read().splitlines(keepends=True)
    return lines[:MAX_LINES], (run / "run.json").read_bytes()


CONTRACT = ["ts", "actor", "pid", "seq", "event", "step"]
OP_FIELDS = [
    "prim",
    "kind",
    "op",
    "phase",
    "timeout",
    "item",
    "value",
    "index",
    "n",
    "end",
    "peer",
    "error",
    "target",
    "status",
    "code",
    "config",
    "primitives",
    "actor_names",
]

HOSTILE = [
    b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"\n",
    b"[" * 100_000 + b"\n",
    b'{"ts":1.0,"actor":"x","pid":1,"seq":0,"event":"op","prim":' + b"[" * 5000 + b"\n",
    b'{"ts":1.0,"actor":"x","pid":1,"seq":0,"event":"op","prim":{}}\n',
    b'{"ts":1.0,"actor":"x","pid":1,"seq":0,"event":"op","prim":[],"kind":{},"op":[],"phase":{}}\n',
    b'{"ts":1.0,"actor":"x","pid":1,"seq":0,"event":"exit","target":{}}\n',
    b'{"ts":1.0,"actor":"x","pid":1,"seq":0,"event":"actor_end","status":[]}\n',
    b'{"ts":1e999,"actor":"x","pid":1,"seq":0,"event":"tick"}\n',
    b'{"ts":-1e999,"actor":"x","pid":1,"seq":99999999999999999999999,"event":"tick"}\n',
    b'{"ts":true,"actor":"x","pid":1,"seq":0,"event":"tick"}\n',
    b'{"ts":1.0,"actor":{},"pid":1,"seq":0,"event":"tick"}\n',
    b"\xff\xfe\x00garbage\n",
    b"[1,2,3]\n",
    b'"just a string"\n',
    b"null\n",
    b"\n",
    b"{}\n",
    b'{"ts":1.0,"actor":"x","pid":1,"seq":0,"event":"op","prim":"spaces","kind":"semaphore",'
    b'"op":"acquire","phase":"invoke","timeout":"soon"}\n',
    b'{"ts":1.0,"actor":"x","pid":1,"seq":0,"event":"run_start","config":[],"primitives":7}\n',
    b"x" * 70_000 + b"\n",
]


def _as_json(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


@st.composite
def run_dirs(draw: st.DrawFn) -> tuple[list[bytes], bytes | None]:
    """The lines of a mutated fixture log, and its (mutated) run.json or None."""
    lines, manifest_bytes = _fixture(draw(st.integers(0, len(RUNS) - 1)))
    lines = list(lines[: draw(st.integers(0, len(lines)))])
    manifest: bytes | None = manifest_bytes
    for _ in range(draw(st.integers(1, 6))):
        how = draw(
            st.sampled_from(
                [
                    "drop",
                    "dup",
                    "swap",
                    "move",
                    "field",
                    "unfield",
                    "hostile",
                    "foreign",
                    "bytes",
                    "manifest",
                    "reverse",
                ]
            )
        )
        n = len(lines)
        i = draw(st.integers(0, max(0, n - 1)))
        j = draw(st.integers(0, max(0, n - 1)))
        if how == "drop" and lines:
            del lines[i]
        elif how == "dup" and lines:
            lines.insert(j, lines[i])
        elif how == "swap" and lines:
            lines[i], lines[j] = lines[j], lines[i]
        elif how == "move" and lines:
            block = lines[i : i + draw(st.integers(1, 50))]
            del lines[i : i + len(block)]
            at = min(j, len(lines))
            lines[at:at] = block
        elif how == "reverse":
            lines.reverse()
        elif how in ("field", "unfield") and lines:
            event = _as_json(lines[i])
            if event is not None:
                key = draw(st.sampled_from([*CONTRACT, *OP_FIELDS, *event]))
                if how == "field":
                    event[key] = draw(json_values)
                else:
                    event.pop(key, None)
                lines[i] = json.dumps(event).encode() + b"\n"
        elif how == "hostile":
            lines.insert(j, draw(st.sampled_from(HOSTILE)))
        elif how == "foreign":
            other, _ = _fixture(draw(st.integers(0, len(RUNS) - 1)))
            if other:
                lines.insert(j, other[draw(st.integers(0, len(other) - 1))])
        elif how == "bytes" and lines:
            raw = bytearray(lines[i])
            for _ in range(draw(st.integers(1, 3))):
                raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
            lines[i] = bytes(raw)
        elif how == "manifest":
            manifest = draw(_manifest(manifest_bytes))
    return lines, manifest


@st.composite
def _manifest(draw: st.DrawFn, original: bytes) -> bytes | None:
    how = draw(st.sampled_from(["missing", "garbage", "not-object", "field", "cut"]))
    if how == "missing":
        return None
    if how == "garbage":
        return draw(st.binary(max_size=40))
    if how == "not-object":
        return json.dumps(draw(json_values)).encode()
    if how == "cut":
        return original[: draw(st.integers(0, len(original)))]
    data = json.loads(original)
    key = draw(st.sampled_from([*data, "schema", "status", "config", "primitives", "actors"]))
    data[key] = draw(json_values)
    if key == "config" and isinstance(data[key], dict):
        data[key]["scenario"] = draw(st.sampled_from(SCENARIOS))
    return json.dumps(data).encode()


def _replay(run_dir: Path) -> int:
    sink = io.StringIO()
    with contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
        return cli.main(["replay", str(run_dir), "--check", "--json"])


@pytest.mark.timeout(900)
@FUZZ
@given(case=run_dirs(), cut=st.none() | st.integers(0, 200_000))
def test_replay_reports_damaged_logs_and_never_raises(
    case: tuple[list[bytes], bytes | None], cut: int | None
) -> None:
    lines, manifest = case
    body = b"".join(lines)
    if cut is not None:
        body = body[:cut]  # a file cut at any byte (a torn last line)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        (run_dir / "events.jsonl").write_bytes(body)
        if manifest is not None:
            (run_dir / "run.json").write_bytes(manifest)
        # Any exception but a SimError (which the CLI turns into exit code 1 or 2) fails here;
        # 130: a manifest or stopping line that says the run was interrupted.
        code = _replay(run_dir)
        event(f"exit code {code}")
        assert code in (0, 1, 2, 130)
