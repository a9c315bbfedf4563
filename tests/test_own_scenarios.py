"""Scenarios of one's own: `sim new`, files by path, installed entry points, and which code sim
imports (a scenario name never goes straight to importlib; replay imports only what the user
names)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim import replay as replay_run
from tests.conftest import ROOT, manifest_of, only_run_dir, sim

ZEN = "Beautiful is better than ugly"


def _sim_env(*args: str, cwd: Path, pythonpath: Path | None = None,
             timeout: float = 90) -> subprocess.CompletedProcess[str]:  # fmt: skip
    env = {**os.environ, "COLUMNS": "200"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-m", "sim", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env, check=False)  # fmt: skip


@pytest.mark.timeout(90)
def test_sim_new_writes_a_scenario_and_a_config_that_run_and_pass(tmp_path: Path) -> None:
    made = sim("new", "printer", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.stdout.split() == ["printer.py", "printer.toml"]
    for check in (["check"], ["format", "--check"]):
        command = [sys.executable, "-m", "ruff", *check, "--no-cache", "printer.py"]
        linted = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, check=False)
        assert linted.returncode == 0, linted.stdout + linted.stderr
    ran = sim("run", "printer.toml", "--out", "logs", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    manifest = manifest_of(only_run_dir(tmp_path / "logs"))
    verdicts = {v["name"]: v["status"] for v in manifest["invariants"]}
    assert verdicts["one worker at the resource at a time"] == "pass"
    assert manifest["metrics"]["jobs_done"] == 12
    # The race the template's comment promises, declared and shown.
    race = sim("run", "printer.toml", "-s", "params.locked=false", "-s", 'expect=["overlap"]',
               "--out", "race", cwd=tmp_path)  # fmt: skip
    assert race.returncode == 0, race.stderr
    assert "As this config expects, the run shows overlap" in race.stderr
    again = sim("new", "printer", cwd=tmp_path)
    assert again.returncode == 2
    assert "already there (--force overwrites)" in again.stderr
    assert sim("new", "printer", "--force", cwd=tmp_path).returncode == 0
    # A name that would shadow a module of Python's (or sim itself) for `python -m sim` run
    # in that folder: refused, nothing written.
    for taken in ("queue", "random", "sim"):
        refused = sim("new", taken, cwd=tmp_path)
        assert refused.returncode == 2, refused.stderr
        assert f"would hide the module '{taken}'" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert not (tmp_path / f"{taken}.py").exists()
    # A bundled config's name: `run carpark.toml` in that folder ran the template instead.
    shadow = sim("new", "carpark", cwd=tmp_path)
    assert shadow.returncode == 2, shadow.stderr
    assert "carpark.toml would hide the bundled config 'carpark'" in shadow.stderr
    assert not (tmp_path / "carpark.toml").exists()
    assert not (tmp_path / "carpark.py").exists()
    bad = sim("new", "2-printers", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: NAME: '2-printers' is not a Python identifier")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_a_scenario_file_beside_its_config_runs_under_every_start_method(
    tmp_path: Path, method: str
) -> None:
    # A scenario file named like a module of Python's own: sim imports it under a name of
    # its own (see _files), so it shadows nothing for a run started elsewhere.
    lab = tmp_path / "lab"
    lab.mkdir()
    assert sim("new", "lab_queue", "--dir", str(lab)).returncode == 0
    (lab / "lab_queue.py").rename(lab / "queue.py")
    config = (lab / "lab_queue.toml").read_text(encoding="utf-8")
    (lab / "queue.toml").write_text(config.replace('"lab_queue.py"', '"queue.py"'),
                                    encoding="utf-8")  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ran = sim("run", str(lab / "queue.toml"), "-s", f"engine.start_method={method}",
              "--out", "logs", "--quiet", cwd=elsewhere)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    manifest = manifest_of(only_run_dir(elsewhere / "logs"))
    assert manifest["provenance"]["scenario"]["form"] == "file"
    assert manifest["provenance"]["scenario"]["path"] == str(lab / "queue.py")
    assert manifest["metrics"]["jobs_done"] == 12


def _distribution(site: Path) -> None:
    """An installed distribution, as pip lays one out: a package and its dist-info, whose
    entry_points.txt registers a scenario under sim.scenarios."""
    package = site / "sim_demo_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""Scenarios for sim, installed."""\n')
    assert sim("new", "demo_printer", "--dir", str(package)).returncode == 0
    (package / "demo_printer.toml").unlink()
    info = site / "sim_demo_scenarios-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: sim-demo-scenarios\nVersion: 0.3\n"
    )
    (info / "entry_points.txt").write_text(
        "[sim.scenarios]\ndemo_printer = sim_demo_pkg.demo_printer:scenario\n"
    )
    (info / "RECORD").write_text("")


@pytest.mark.timeout(120)
def test_an_installed_entry_point_scenario_is_listed_and_runs(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _distribution(site)
    listed = _sim_env("list", cwd=tmp_path, pythonpath=site)
    assert listed.returncode == 0, listed.stderr
    (line,) = [line for line in listed.stdout.splitlines() if " demo_printer " in line]
    assert line.split()[:5] == ["scenario", "demo_printer", "installed:", "sim-demo-scenarios",
                                "0.3"]  # fmt: skip
    assert line.endswith("Workers take turns with one shared resource, guarded by a Lock")
    config = tmp_path / "demo.toml"
    config.write_text('scenario = "demo_printer"\n[clock]\nspeedup = 3000\n')
    for method in ("fork", "spawn"):
        ran = _sim_env("run", str(config), "-s", f"engine.start_method={method}", "--out",
                       str(tmp_path / method), "--quiet", cwd=tmp_path,
                       pythonpath=site)  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        run_dir = only_run_dir(tmp_path / method)
        manifest = manifest_of(run_dir)
        assert manifest["provenance"]["scenario"] | {"path": None} == {
            "name": "demo_printer", "form": "installed", "module": "sim_demo_pkg.demo_printer",
            "entry_point": "sim_demo_pkg.demo_printer:scenario",
            "distribution": "sim-demo-scenarios", "version": "0.3", "path": None,
            "git": manifest["provenance"]["scenario"]["git"],
        }  # fmt: skip
        assert manifest["metrics"]["jobs_done"] == 12
    # An installed scenario is the user's own choice of code: replay reads it with its checks.
    replayed = _sim_env("replay", str(run_dir), "--check", "--json", cwd=tmp_path,
                        pythonpath=site)  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    assert "one worker at the resource at a time" in replayed.stdout


@pytest.mark.timeout(60)
def test_a_scenario_not_found_lists_the_names_and_the_other_forms(tmp_path: Path) -> None:
    config = tmp_path / "mine.toml"
    config.write_text('scenario = "carpak"\n')
    result = sim("run", str(config), "--out", str(tmp_path / "logs"))
    assert result.returncode == 2
    message = result.stderr.strip()
    assert message.startswith(f"error: {config}: scenario: no scenario named 'carpak' (did you "
                              "mean 'carpark'?). Known scenarios, bundled: barrier, ")  # fmt: skip
    assert "carpark, h2o, mutex" in message
    assert 'a file (scenario = "printer.py", relative to the config)' in message
    assert 'a dotted module (scenario = "mypkg.printer")' in message
    assert "'sim.scenarios'" in message
    # The case: printer.py beside the config, named without its suffix.
    (tmp_path / "printer.py").write_text("scenario = None\n")
    config.write_text('scenario = "printer"\n')
    result = sim("run", str(config), "--out", str(tmp_path / "logs"))
    assert result.returncode == 2
    assert f'the file {tmp_path / "printer.py"} is there: to use it, write scenario = ' \
           '"printer.py"' in result.stderr  # fmt: skip
    assert not (tmp_path / "logs").exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("..", "'..' is not a scenario name"),
        ('"a..b"', "'a..b' is not a scenario name"),
        ('""', "'' is not a scenario name"),
        ("5", "scenario: expected str, got int"),
        ("nosuchpkg.x", "no module 'nosuchpkg.x' importable from here"),
        # `os` is found but is a plain module: its `path` exists only once it runs.
        ("os.path", "no module file 'os.path': 'os' is a module, not a package"),
        ("json.decoder", "does not define `scenario = Scenario(...)` at module level: not "
         "imported"),
        ("sim.cli", "sim's own modules are not scenarios"),
        ("tests", "no scenario named 'tests'"),
        ("nope.py", "no scenario file"),
        ('"../../../etc/passwd"', "a scenario file is Python source ending in .py"),
    ],
)  # fmt: skip
def test_an_invalid_or_foreign_scenario_name_exits_2_without_importing_it(
    tmp_path: Path, value: str, says: str
) -> None:
    result = sim("run", "carpark", "-s", f"scenario={value}", "--out", str(tmp_path / "logs"),
                 cwd=ROOT)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert ZEN not in result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: carpark.toml: scenario: ")
    assert says in line
    assert line.endswith("(set with -s)")


def _marked(folder: Path, marker: Path) -> None:
    """A scenario (the `sim new` template) that notes every import of itself in ``marker``."""
    assert sim("new", "noted", "--dir", str(folder)).returncode == 0
    source = folder / "noted.py"
    text = source.read_text()
    note = f"\nwith open({str(marker)!r}, 'a') as _fh:\n    _fh.write('imported\\n')\n"
    source.write_text(text + note)


@pytest.mark.timeout(120)
def test_replay_never_imports_a_file_or_module_named_only_by_the_log(tmp_path: Path) -> None:
    marker = tmp_path / "imports.txt"
    _marked(tmp_path, marker)
    ran = sim("run", str(tmp_path / "noted.toml"), "--out", str(tmp_path / "logs"), "--quiet")
    assert ran.returncode == 0, ran.stderr
    assert marker.read_text().count("imported") >= 1
    run_dir = only_run_dir(tmp_path / "logs")
    marker.unlink()

    result = sim("replay", str(run_dir), "--check", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()  # the file the log names was not imported
    assert "the file 'noted.py' is named only by the log, so it was not imported" in result.stderr
    assert "only the generic checks ran (to run them: replay RUN --scenario noted.py)" in \
        result.stderr  # fmt: skip
    assert "every actor ended cleanly" in result.stdout
    assert "one worker at the resource at a time" not in result.stdout
    # A Python caller is told its own way to name the scenario.
    said = [f.problem for f in replay_run(run_dir).findings if "generic checks" in f.problem]
    assert said
    assert said[0].endswith("(to run them: sim.replay(..., scenario='noted.py'))")
    assert not marker.exists()

    asked = sim("replay", str(run_dir), "--check", "--json", "--scenario", "noted.py",
                cwd=tmp_path)  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    assert marker.read_text().count("imported") == 1
    assert "one worker at the resource at a time" in asked.stdout

    # A log whose manifest and run_start were edited to name a dotted module: not imported.
    marker.unlink()
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "noted.py").rename(tmp_path / "pkg" / "noted.py")
    for name in ("run.json", "events.jsonl"):
        path = run_dir / name
        path.write_text(path.read_text().replace('"noted.py"', '"pkg.noted"'))
    result = sim("replay", str(run_dir), "--check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "the module 'pkg.noted' is named only by the log" in result.stderr
    assert not marker.exists()


@pytest.mark.timeout(90)
def test_a_run_prints_the_findings_its_replay_prints(tmp_path: Path) -> None:
    # A scenario that logs sim's own reserved event name: the lines are findings, and the
    # run's summary lists each of them as replay does (it showed only the first as a reason).
    assert sim("new", "printer", cwd=tmp_path).returncode == 0
    source = tmp_path / "printer.py"
    text = source.read_text(encoding="utf-8")
    start = 'ctx.log.info("start", job=job)'
    assert start in text
    source.write_text(text.replace(start, f'{start}\n        ctx.log.info("op", job=job)'),
                      encoding="utf-8")  # fmt: skip
    ran = sim("run", "printer.toml", "--out", "logs", cwd=tmp_path)
    assert ran.returncode == 1, ran.stderr
    run_dir = only_run_dir(tmp_path / "logs")
    replayed = sim(
        "replay",
        str(run_dir.relative_to(tmp_path)),
        "--scenario",
        "printer.py",
        "--check",
        cwd=tmp_path,
    )
    assert replayed.returncode == 1, replayed.stderr

    def errors(stderr: str) -> list[str]:
        return [line for line in stderr.splitlines() if line.startswith("error: ")]

    found = errors(ran.stderr)
    assert len(found) == 4  # three lines named, then the count of the rest
    assert "an op line whose prim, kind, op or phase is not a name" in found[0]
    assert found == errors(replayed.stderr)


@pytest.mark.timeout(120)
def test_a_failed_run_of_a_file_scenario_replayed_without_it_stays_failed(tmp_path: Path) -> None:
    # The log names printer.py, which replay does not import unasked: only the generic checks
    # ran, they passed, and `replay --check` said "ok" and exited 0 for a run that failed.
    assert sim("new", "printer", cwd=tmp_path).returncode == 0
    failed = sim("run", "printer.toml", "-s", "params.locked=false", "--out", "logs",
                 cwd=tmp_path)  # fmt: skip
    assert failed.returncode == 1, failed.stderr
    (run_dir,) = (tmp_path / "logs").iterdir()
    replayed = sim("replay", str(run_dir), "--check", cwd=tmp_path)
    assert replayed.returncode == 1, replayed.stderr
    assert "failed: as recorded: the scenario's own checks did not run here" in replayed.stderr
    # A run that passed still replays ok without its scenario: the generic checks decide.
    assert sim("run", "printer.toml", "--out", "ok", cwd=tmp_path).returncode == 0
    (passed,) = (tmp_path / "ok").iterdir()
    assert sim("replay", str(passed), "--check", cwd=tmp_path).returncode == 0
