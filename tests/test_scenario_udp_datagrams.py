"""UDP datagrams: real sockets; boundaries kept, and loss and reordering counted exactly."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from .conftest import Finished, finished

QUICK = [
    "-s", "params.senders=3",
    "-s", "params.datagrams=25",
    "-s", "clock.speedup=3000",
    "-s", "params.quiet=5",   # 0.1 wall s at this speed
]  # fmt: skip
LOSSY = "udp_datagrams-lossy"


def run(out: Path, config: str, *overrides: str) -> Finished:
    """Run ``config`` quickly with ``-s`` ``overrides``; it may pass or fail, not crash."""
    result = finished(out, config, *overrides, args=QUICK)
    assert result.code in (0, 1), result.stderr
    return result


def history(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Sent, dropped and arrived datagrams, computed here from the events alone."""
    ordered = sorted(events, key=lambda e: (e["ts"], e["actor"], e["seq"]))
    port_of = {e["port"]: e["actor"] for e in ordered if e["event"] == "bound"}
    sent = [e["item"] for e in ordered if e["event"] == "op" and e["op"] == "sendto"
            and e["phase"] == "ok"]  # fmt: skip
    arrived = [(e["item"], e["sender"]) for e in ordered if e["event"] == "op"
               and e["op"] == "recvfrom" and e["phase"] == "ok"]  # fmt: skip
    dropped = {(e["actor"], e["n"]) for e in ordered if e["event"] == "drop"}
    numbers: dict[str, list[int]] = defaultdict(list)
    for text, _ in arrived:
        name, number, _pad = text.split(" ")
        numbers[name].append(int(number[1:]))
    late = 0
    for seen in numbers.values():
        late += sum(1 for i, n in enumerate(seen) if n < max(seen[:i], default=-1))
    return {"port_of": port_of, "sent": sent, "arrived": arrived, "dropped": dropped,
            "numbers": numbers, "late": late}  # fmt: skip


def check_clean_exit(result: Finished) -> dict[str, Any]:
    """Every actor exited with 0 (``finished`` saw none alive and no socket file); the manifest."""
    for record in result.manifest["actors"].values():
        assert record["exitcode"] == 0
    return result.manifest


@pytest.mark.timeout(60)
def test_every_datagram_arrives_whole_and_in_order_without_loss(out: Path) -> None:
    result = run(out, "udp_datagrams")
    assert result.code == 0
    h = history(result.events)
    # Message boundaries: each recvfrom returned exactly one datagram that was sent, whole,
    # and recvfrom named the port of the sender that sent it.
    assert Counter(text for text, _ in h["arrived"]) == Counter(h["sent"])
    for text, port in h["arrived"]:
        assert h["port_of"][port] == text.split(" ")[0]
    assert len({len(text) for text, _ in h["arrived"]}) > 1  # sizes differ
    # Nothing lost, nothing out of order on loopback without injected faults.
    assert {s: sorted(n) for s, n in h["numbers"].items()} == {
        f"sender-{i:03d}": list(range(25)) for i in range(3)
    }
    assert h["late"] == 0
    manifest = check_clean_exit(result)
    verdicts = {v["name"]: v["status"] for v in manifest["invariants"]}
    assert verdicts["each datagram arrives whole, from its sender"] == "pass"
    assert verdicts["no datagram lost"] == "pass"
    assert verdicts["datagrams arrive in the order sent"] == "pass"
    assert "fail" not in verdicts.values()
    assert manifest["metrics"]["received"] == 75
    assert manifest["metrics"]["lost"] == 0


@pytest.mark.timeout(60)
def test_injected_loss_and_reordering_are_counted_and_expected(out: Path) -> None:
    result = run(out, LOSSY)
    assert result.code == 0
    events = result.events
    h = history(events)
    # The datagrams that never arrived are exactly those the senders dropped: the receiver
    # gave up on them instead of hanging.
    missing = {(s, n) for s in (f"sender-{i:03d}" for i in range(3)) for n in range(25)
               if n not in h["numbers"][s]}  # fmt: skip
    assert missing == h["dropped"]
    assert missing
    assert h["late"] > 0
    # Boundaries are still kept: whatever arrived, arrived whole.
    assert Counter(text for text, _ in h["arrived"]) == Counter(h["sent"])
    (done,) = [e for e in events if e["event"] == "receiver_done"]
    assert done["received"] == 75 - len(missing)
    manifest = check_clean_exit(result)
    assert manifest["status"] == "ok"
    shown = {v["phenomenon"]: v["detail"] for v in manifest["invariants"]
             if v["status"] == "expected"}  # fmt: skip
    assert set(shown) == {"datagram_loss", "datagram_reordering"}
    assert shown["datagram_loss"].startswith(f"lost {len(missing)} of 75 datagrams")
    assert "UDP keeps no order" in shown["datagram_reordering"]
    assert manifest["metrics"]["lost"] == len(missing)
    assert manifest["metrics"]["out_of_order"] == h["late"]

    # The same seed drops the same datagrams.
    again = run(out, LOSSY)
    assert again.code == 0
    assert history(again.events)["dropped"] == h["dropped"]


@pytest.mark.timeout(60)
def test_undeclared_loss_fails_the_run(out: Path) -> None:
    result = run(out, LOSSY, "expect=[]")
    assert result.code == 1
    manifest = check_clean_exit(result)
    failed = {v["phenomenon"] for v in manifest["invariants"] if v["status"] == "fail"}
    assert failed == {"datagram_loss", "datagram_reordering"}


@pytest.mark.timeout(60)
def test_declared_loss_that_does_not_appear_fails_the_run(out: Path) -> None:
    result = run(out, LOSSY, "params.loss=0", "params.reorder=0")
    assert result.code == 1
    manifest = check_clean_exit(result)
    failed = [v["detail"] for v in manifest["invariants"] if v["status"] == "fail"]
    assert len(failed) == 2
    assert all(d.startswith("expected datagram_") for d in failed)
