"""H2O: hydrogen and oxygen processes bond in molecules of exactly 2 H + 1 O.

The run uses the real CLI (real processes, the coordinator socket); the invariants are
recomputed here from the events, independently of sim's own checks.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from .conftest import alive, events_of, manifest_of, only_run_dir, sim, socket_files

MOLECULES = 8


@pytest.mark.timeout(60)
def test_atoms_bond_two_hydrogens_to_one_oxygen(out: Path) -> None:
    result = sim("run", "h2o", "-s", f"params.molecules={MOLECULES}", "-s", "clock.speedup=3000",
                 "--out", str(out), timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(out)
    manifest = manifest_of(run_dir)
    for record in manifest["actors"].values():
        assert not alive(record["pid"])
    assert not socket_files(out)
    events = sorted(events_of(run_dir), key=lambda e: (e["ts"], e["actor"], e["seq"]))

    # The bond events, three at a time, are the molecules: 2 H + 1 O each.
    bonds = [e["actor"] for e in events if e["event"] == "bond"]
    assert len(bonds) == 3 * MOLECULES
    assert Counter(bonds).most_common(1)[0][1] == 1  # every atom bonded once
    for i in range(0, len(bonds), 3):
        assert sorted(a.split("-")[0] for a in bonds[i : i + 3]) == ["hydrogen"] * 2 + ["oxygen"]
    # The three atoms of a molecule pass the barrier together: the returns from each
    # generation's waits come after all three waits began, with indices 0, 1, 2.
    waits = [e for e in events if e["event"] == "op" and e["prim"] == "barrier"]
    for i in range(0, len(bonds), 3):
        members = set(bonds[i : i + 3])
        mine = [e for e in waits if e["actor"] in members]
        invoked = [e["ts"] for e in mine if e["phase"] == "invoke"]
        returned = [e for e in mine if e["phase"] == "ok"]
        assert len(invoked) == len(returned) == 3
        assert max(invoked) < min(e["ts"] for e in returned)
        assert sorted(e["index"] for e in returned) == [0, 1, 2]
    # One atom per molecule completed it and let the other two through the queues.
    molecules = sum(e["event"] == "molecule" for e in events)
    assert molecules == MOLECULES
    verdicts = {v["name"]: v["status"] for v in manifest["invariants"]}
    assert verdicts["every molecule is 2 H + 1 O"] == "pass"
    assert verdicts["barrier: generations of 3"] == "pass"
    assert set(verdicts.values()) == {"pass"}
    assert manifest["metrics"]["molecules"] == MOLECULES
