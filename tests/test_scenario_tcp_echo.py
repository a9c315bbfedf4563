"""TCP echo: real sockets on loopback; every line comes back identically, in order."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from scenarios.tcp_echo import EchoedInOrder, EveryConnectionAccepted
from sim.history import History, line_of

from .conftest import alive, events_of, manifest_of, only_run_dir, sim, socket_files

# Port 0: the OS picks a free port, so tests running in parallel never collide.
QUICK = [
    "-s", "params.port=0",
    "-s", "params.clients=3",
    "-s", "params.lines=8",
    "-s", "params.think.mean=0.2",
    "-s", "clock.speedup=3000",
]  # fmt: skip


def ops(events: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    """The op events whose fields equal ``match``, in time order."""
    found = [e for e in events if e["event"] == "op" and all(e.get(k) == v
             for k, v in match.items())]  # fmt: skip
    return sorted(found, key=lambda e: (e["ts"], e["actor"], e["seq"]))


@pytest.mark.parametrize("pipeline", [1, 4])
@pytest.mark.timeout(60)
def test_every_line_is_echoed_identically_and_in_order(out: Path, pipeline: int) -> None:
    result = sim("run", "tcp_echo", *QUICK, "-s", f"params.pipeline={pipeline}",
                 "--seed", "3", "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(out)
    events = events_of(run_dir)
    clients = [f"client-{i:03d}" for i in range(3)]

    # Set-up: the server listened on port 0, got a real port, published it in the Value
    # "port" and then set "ready"; every client waited for "ready" and read that port.
    (listen,) = ops(events, op="listen", phase="ok")
    port = listen["port"]
    assert ops(events, op="listen", phase="invoke")[0]["port"] == 0
    assert port > 0
    (write,) = ops(events, prim="port", op="write", phase="ok")
    assert write["value"] == port
    (ready,) = ops(events, prim="ready", op="set", phase="invoke")
    assert write["ts"] < ready["ts"]
    reads = ops(events, prim="port", op="read", phase="ok")
    assert sorted(e["actor"] for e in reads) == clients
    assert {e["value"] for e in reads} == {port}
    for wait in ops(events, prim="ready", op="wait", phase="ok"):
        assert wait["ts"] > ready["ts"]

    # Each client's connection (its local address) was accepted by the server.
    local = {e["actor"]: e["local"] for e in ops(events, op="connect", phase="ok")}
    accepted = [e["peer"] for e in ops(events, actor="server", op="accept", phase="ok")]
    assert sorted(local) == clients
    assert sorted(accepted) == sorted(local.values())

    # Framing: every line came back whole, identically, in order, on every hop.
    def items(actor: str, op: str, peer: str | None = None) -> list[str]:
        match = {"actor": actor, "op": op, "phase": "ok", "prim": "echo"}
        if peer is not None:
            match["peer"] = peer
        return [e["item"] for e in ops(events, **match)]

    for c in clients:
        sent = items(c, "send")
        assert sent == [f"{c} says hello #{i}" for i in range(8)]
        assert items("server", "recv", local[c]) == sent
        assert items("server", "send", local[c]) == sent
        assert items(c, "recv") == sent
        # With a pipeline, a client sends a whole batch before it reads the echoes.
        mine = [e["op"] for e in ops(events, actor=c, phase="ok") if e["op"] in ("send", "recv")]
        assert mine[:pipeline] == ["send"] * pipeline

    # The server ended after the last client had closed its connection. (A client's close
    # "ok" may be logged after the server has already seen the EOF, so compare the invoke.)
    closes = ops(events, op="close", phase="invoke")
    last_client_close = max(e["ts"] for e in closes if e["actor"] in clients)
    (served,) = [e for e in events if e["event"] == "all_served"]
    assert served["connections"] == 3
    assert served["ts"] > last_client_close
    gone = [e for e in events if e["event"] == "client_gone"]
    assert sorted(e["echoed"] for e in gone) == [8, 8, 8]

    # Round-trip times measured independently: send invoke to the matching recv ok.
    rtts: list[float] = []
    for c in clients:
        pending = [e["ts"] for e in ops(events, actor=c, op="send", phase="invoke")]
        got = [e["ts"] for e in ops(events, actor=c, op="recv", phase="ok")]
        rtts += [(g - s) * 1000 for s, g in zip(pending, got, strict=True)]
    assert all(r > 0 for r in rtts)

    manifest = manifest_of(run_dir)
    assert manifest["status"] == "ok"
    verdicts = {v["name"]: v["status"] for v in manifest["invariants"]}
    assert verdicts["every line echoed identically, in order"] == "pass"
    assert verdicts["every client's connection accepted"] == "pass"
    assert "fail" not in verdicts.values()
    metrics = manifest["metrics"]
    assert metrics["connections"] == 3
    assert metrics["echoed"] == 24
    assert metrics["rtt_max"] == pytest.approx(max(rtts))
    assert metrics["rtt_mean"] == pytest.approx(sum(rtts) / len(rtts))
    for record in manifest["actors"].values():
        assert not alive(record["pid"])
    assert not socket_files(out)


@pytest.mark.timeout(60)
def test_a_port_already_in_use_fails_the_run(out: Path) -> None:
    # Somebody else listens on the port: the server cannot bind, crashes with the OS's error,
    # and the run fails instead of hanging (the clients, waiting for "ready", are stopped).
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = sim("run", "tcp_echo", *QUICK, "-s", f"params.port={port}",
                     "--out", str(out), timeout=50)  # fmt: skip
    assert result.returncode == 1, result.stderr
    run_dir = only_run_dir(out)
    manifest = manifest_of(run_dir)
    assert manifest["status"] != "ok"
    (end,) = [e for e in events_of(run_dir) if e["event"] == "actor_end" and e["actor"] == "server"]
    assert end["status"] == "crashed"
    assert "Address already in use" in end["error"]
    for record in manifest["actors"].values():
        assert not alive(record["pid"])


def _op(actor: str, op: str, seq: int, **fields: Any) -> dict[str, Any]:
    return {"ts": seq / 1000, "actor": actor, "seq": seq, "event": "op", "prim": "echo",
            "kind": "tcp", "op": op, "phase": "ok", **fields}  # fmt: skip


def test_the_checks_catch_a_changed_echo_and_an_unaccepted_client() -> None:
    # The checks on hand-made events: TCP on loopback never breaks its promises, so a
    # broken history can only be written down.
    history = [
        _op("client-000", "connect", 1, local="127.0.0.1:5000"),
        _op("server", "accept", 2, peer="127.0.0.1:5000"),
        _op("client-000", "send", 3, item="a"),
        _op("server", "recv", 4, peer="127.0.0.1:5000", item="a"),
        _op("server", "send", 5, peer="127.0.0.1:5000", item="A"),
        _op("client-000", "recv", 6, item="A"),
        _op("client-001", "connect", 7, local="127.0.0.1:5001"),
    ]
    echo = EchoedInOrder(["client-000"], lines=1)
    accepted = EveryConnectionAccepted(["client-000", "client-001"])
    replayed = History()
    replayed.subscribe(echo)
    replayed.subscribe(accepted)
    replayed.feed([line_of(e) for e in history])
    replayed.finish()
    assert echo.verdict().status == "fail"
    assert "server wrote: line 0: 'a' became 'A'" in echo.verdict().detail
    assert accepted.verdict().status == "fail"
    assert "client-001: 127.0.0.1:5001 never accepted" in accepted.verdict().detail
