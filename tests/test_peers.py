"""tcp_echo and udp_datagrams against peers outside the run: real sockets, and each outside
peer is an OS process of its own (tests/outside_peers.py) that the run knows nothing of."""

from __future__ import annotations

import contextlib
import csv
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, events_of, finished, manifest_of, only_run_dir, sim

FAST = ["-s", "clock.speedup=3000", "-s", "params.think.mean=0.2"]


class Peer:
    """A process outside the run; its stdout, line by line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def line(self, timeout: float = 20) -> str:
        got = self._lines.get(timeout=timeout)
        assert got is not None, "the peer ended"
        return got

    def lines(self, timeout: float = 20) -> list[str]:
        """Every line until the peer has ended."""
        self.proc.wait(timeout)
        found = []
        while (got := self._lines.get(timeout=timeout)) is not None:
            found.append(got)
        return found


@contextlib.contextmanager
def peer(*args: str) -> Iterator[Peer]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.outside_peers", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        yield Peer(proc)
    finally:
        proc.kill()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


@contextlib.contextmanager
def running(out: Path, config: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """``sim run`` in the background (stopped by the test's end at the latest)."""
    proc = subprocess.Popen([sys.executable, "-m", "sim", "run", config, *args, "--out",
                             str(out), "--quiet"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def verdicts(manifest: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {v["name"]: (v["status"], v["detail"]) for v in manifest["invariants"]}


def ops(events: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "op" and all(e.get(k) == v
            for k, v in match.items())]  # fmt: skip


def check_ends_last(events: list[dict[str, Any]]) -> None:
    """Every actor's ``actor_end`` is its last line."""
    last: dict[str, dict[str, Any]] = {}
    for e in events:
        if (
            e["actor"] not in ("engine", "coordinator")
            and e["seq"] >= last.get(e["actor"], {"seq": -1})["seq"]
        ):
            last[e["actor"]] = e
    assert last
    assert {a: e["event"] for a, e in last.items()} == dict.fromkeys(last, "actor_end")


# -- sim's clients, a server outside the run ------------------------------------------------


@pytest.mark.timeout(60)
def test_sims_clients_check_every_echo_of_an_outside_server(out: Path) -> None:
    with peer("echo-server") as server:
        port = int(server.line().split()[1])
        result = finished(out, "tcp_echo", f"params.server=127.0.0.1:{port}",
                          "params.clients=3", "params.lines=8", args=FAST)  # fmt: skip
    assert result.code == 0, result.stderr
    events = result.events
    # No server of the run: the clients connected to the outside one and checked each echo.
    assert "server" not in result.manifest["actors"]
    assert not ops(events, op="listen")
    for c in ("client-000", "client-001", "client-002"):
        sent = [e["item"] for e in ops(events, actor=c, op="send", phase="ok")]
        got = [e["item"] for e in ops(events, actor=c, op="recv", phase="ok")]
        assert sent == got == [f"{c} says hello #{i}" for i in range(8)]
        assert {e["peer"] for e in ops(events, actor=c)} == {f"127.0.0.1:{port}"}
    shown = verdicts(result.manifest)
    assert shown["every line echoed identically, in order"] == (
        "pass",
        f"24 lines echoed by 127.0.0.1:{port} on 3 connections",
    )
    assert shown["every client's connection accepted"] == (
        "pass",
        f"3 connections accepted by 127.0.0.1:{port}",
    )
    assert result.manifest["metrics"]["outside"] == 3
    assert result.manifest["metrics"]["echoed"] == 24


@pytest.mark.parametrize("ending", ["reply", "timeout"])
@pytest.mark.timeout(60)
def test_an_outside_server_writing_slash_n_fails_the_run_quoting_the_bytes(
    out: Path, ending: str
) -> None:
    # The notes' server writes msg + "/n": a slash and an n, no newline, so no line ever ends.
    # With params.reply the clients give up after 50 simulated minutes (1 s here); without it
    # they wait on the outside server, which is no deadlock: engine.timeout ends the run.
    stop = "params.reply=50" if ending == "reply" else "engine.timeout=4"
    with peer("echo-server", "--suffix", "/n") as server:
        port = int(server.line().split()[1])
        began = time.monotonic()
        result = finished(out, "tcp_echo", f"params.server=127.0.0.1:{port}",
                          "params.clients=2", "params.lines=3", stop, args=FAST)  # fmt: skip
        took = time.monotonic() - began
    assert result.code == 1, result.stderr
    assert took < 20
    status, detail = verdicts(result.manifest)["every line echoed identically, in order"]
    assert status == "fail"
    for c in ("client-000", "client-001"):
        assert (f"{c}: line 0: 26 bytes came back with no newline: '{c} says hello #0/n' "
                "('/n' and '\\n' are two characters, not a newline)") in detail  # fmt: skip
        # What came was logged as it came, before anybody gave up.
        (partial,) = [e for e in result.events if e["event"] == "partial" and e["actor"] == c]
        assert (partial["bytes"], partial["partial"]) == (26, f"{c} says hello #0/n")
    assert not [e for e in result.events if e["event"] == "deadlock"]
    if ending == "reply":
        assert result.manifest["status"] == "failed"
        assert len(ops(result.events, op="recv", phase="timeout")) == 2
    else:
        assert result.manifest["status"] == "timeout"
        assert (
            "waiting on the outside world: client-000 in recv on echo, for the server "
            f"127.0.0.1:{port}, outside the run" in result.manifest["reason"]
        )
    check_ends_last(result.events)


@pytest.mark.timeout(60)
def test_a_slow_outside_server_is_waited_for_not_taken_for_a_deadlock(out: Path) -> None:
    # Each echo takes 1.5 wall seconds, longer than engine.stall_s (1 s).
    with peer("echo-server", "--delay", "1.5") as server:
        port = int(server.line().split()[1])
        result = finished(out, "tcp_echo", f"params.server=127.0.0.1:{port}",
                          "params.clients=1", "params.lines=2", args=FAST)  # fmt: skip
    assert result.code == 0, result.stderr
    assert not [e for e in result.events if e["event"] == "deadlock"]
    rtts = result.manifest["metrics"]
    assert rtts["echoed"] == 2
    assert rtts["rtt_p50"] > 1400


@pytest.mark.timeout(60)
def test_failing_socket_operations_log_fail_with_the_error(out: Path) -> None:
    # The outside server resets the first connection at once (the client's send, 0.2 s later,
    # fails) and the second after reading one line (the client's recv fails).
    with peer("reset-server") as server:
        port = int(server.line().split()[1])
        result = finished(out, "tcp_echo", f"params.server=127.0.0.1:{port}",
                          "params.clients=2", "params.lines=3", "params.think.dist=fixed",
                          "params.think.mean=10", args=FAST)  # fmt: skip
    assert result.code == 1, result.stderr
    failed = ops(result.events, phase="fail")
    assert {e["op"] for e in failed} == {"send", "recv"}
    for e in failed:
        assert e["error"].startswith(("ConnectionResetError", "BrokenPipeError")), e
        invoke = [i for i in ops(result.events, actor=e["actor"], op=e["op"], phase="invoke")]
        assert invoke
        assert invoke[-1]["seq"] < e["seq"]
    # A failing server is a finding about the server: the clients ended, they did not crash.
    ends = {e["actor"]: e["status"] for e in result.events if e["event"] == "actor_end"}
    assert ends == {"client-000": "ok", "client-001": "ok"}
    status, detail = verdicts(result.manifest)["every line echoed identically, in order"]
    assert status == "fail"
    assert "send failed: ConnectionResetError" in detail or "send failed: BrokenPipe" in detail
    assert "recv failed: ConnectionResetError" in detail


@pytest.mark.timeout(60)
def test_a_taken_port_logs_listen_fail_and_says_how_to_test_that_server(out: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = finished(out, "tcp_echo", f"params.port={port}", args=FAST)
    assert result.code == 1
    (fail,) = ops(result.events, op="listen", phase="fail")
    assert fail["error"] == "OSError: [Errno 98] Address already in use"
    (end,) = [e for e in result.events if e["event"] == "actor_end" and e["actor"] == "server"]
    assert end["status"] == "crashed"
    assert f"-s params.server=127.0.0.1:{port}" in end["error"]


# -- sim's server, clients outside the run ---------------------------------------------------


@pytest.mark.timeout(60)
def test_sims_server_alone_serves_outside_clients_until_its_timeout(out: Path) -> None:
    port = free_port()
    sets = ["-s", "params.clients=0", "-s", f"params.port={port}", "-s", "engine.timeout=5"]
    with (
        running(out, "tcp_echo", *sets) as run,
        peer("idle-client", str(port)) as idle,
        peer("lines-client", str(port)) as talker,
    ):
        idle_at = idle.line().split()[1]
        talker_at = talker.line().split()[1]
        echoes = talker.lines()
        _, stderr = run.communicate(timeout=30)
        # The server shut the idle connection down when the run ended.
        assert idle.lines() == ["closed"]
    assert echoes == [f"echo outside line {i}" for i in range(5)]
    assert run.returncode == 1, stderr  # the run ended on engine.timeout (documented: exit 1)
    run_dir = only_run_dir(out)
    manifest = manifest_of(run_dir)
    assert manifest["status"] == "timeout"
    events = events_of(run_dir)
    accepted = {e["peer"] for e in ops(events, actor="server", op="accept", phase="ok")}
    assert accepted == {idle_at, talker_at}
    assert [e["item"] for e in ops(events, op="recv", phase="ok", peer=talker_at)] == [
        f"outside line {i}" for i in range(5)
    ]
    assert [e["item"] for e in ops(events, op="send", phase="ok", peer=talker_at)] == [
        f"outside line {i}" for i in range(5)
    ]
    gone = {e["peer"]: (e["how"], e["echoed"]) for e in events if e["event"] == "client_gone"}
    assert gone == {talker_at: ("closed", 5), idle_at: ("cut", 0)}
    check_ends_last(events)
    assert not [e for e in events if e["event"] == "deadlock"]
    shown = verdicts(manifest)
    assert shown["every line echoed identically, in order"] == (
        "pass",
        "5 lines echoed to 2 clients from outside the run",
    )
    assert shown["every actor ended cleanly"][0] == "pass"
    assert manifest["metrics"]["outside"] == 2
    assert manifest["metrics"]["echoed"] == 5


@pytest.mark.timeout(60)
def test_sims_server_alone_for_params_serve_minutes_ends_cleanly(out: Path) -> None:
    port = free_port()
    with running(out, "tcp_echo", "-s", "params.clients=0", "-s", f"params.port={port}",
                 "-s", "params.serve=30", "-s", "clock.speedup=600") as run:  # fmt: skip
        with peer("lines-client", str(port), "--count", "3") as talker:
            talker.line()
            assert len(talker.lines()) == 3
        _, stderr = run.communicate(timeout=30)
    assert run.returncode == 0, stderr
    manifest = manifest_of(only_run_dir(out))
    assert manifest["status"] == "ok"
    assert 3 < manifest["wall_s"] < 10  # 30 minutes at 600x: 3 s


@pytest.mark.timeout(60)
def test_an_outside_client_during_a_normal_run_is_served_and_logged(out: Path) -> None:
    port = free_port()
    sets = [f"params.port={port}", "params.clients=3", "params.lines=8", "clock.speedup=3000",
            "params.think.mean=8"]  # fmt: skip
    with (
        running(out, "tcp_echo", *[a for s in sets for a in ("-s", s)]) as run,
        peer("idle-client", str(port)) as idle,
        peer("lines-client", str(port)) as talker,
    ):
        idle_at = idle.line().split()[1]
        talker_at = talker.line().split()[1]
        assert len(talker.lines()) == 5
        _, stderr = run.communicate(timeout=30)
    assert run.returncode == 0, stderr
    run_dir = only_run_dir(out)
    events = events_of(run_dir)
    accepted = {e["peer"] for e in ops(events, actor="server", op="accept", phase="ok")}
    local = {e["local"] for e in ops(events, op="connect", phase="ok")}
    assert accepted == local | {idle_at, talker_at}
    gone = {e["peer"]: e["how"] for e in events if e["event"] == "client_gone"}
    assert gone[idle_at] == "cut"
    assert gone[talker_at] == "closed"
    (served,) = [e for e in events if e["event"] == "all_served"]
    assert (served["connections"], served["outside"]) == (5, 2)
    manifest = manifest_of(run_dir)
    shown = verdicts(manifest)
    assert shown["every line echoed identically, in order"] == (
        "pass",
        "24 lines echoed on 3 connections; 5 to 2 clients from outside the run",
    )
    assert manifest["metrics"]["outside"] == 2
    check_ends_last(events)


@pytest.mark.timeout(60)
def test_a_stopped_server_ends_last_and_exports_show_nothing_pending(out: Path) -> None:
    # The reproduction: the engine stops the server while its threads serve clients.
    for seed in (1, 2, 3):
        result = finished(out, "tcp_echo", "params.port=0", "params.think.mean=5",
                          "engine.timeout=1", args=["--seed", str(seed)])  # fmt: skip
        assert result.manifest["status"] == "timeout"
        check_ends_last(result.events)
        table = result.run_dir / "ops.csv"
        trace = result.run_dir / "trace.json"
        for kind, path in (("csv", table), ("chrome", trace)):
            done = sim("replay", str(result.run_dir), "--export", kind, str(path), timeout=30)
            assert done.returncode == 0, done.stderr
        with open(table, encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        assert rows
        assert [r for r in rows if r["outcome"] == "pending"] == []
        assert "never returned" not in trace.read_text(encoding="utf-8")


# -- UDP ---------------------------------------------------------------------------------------

UDP = ["-s", "clock.speedup=3000", "-s", "params.quiet=5", "-s", "params.datagrams=25"]


@pytest.mark.timeout(60)
def test_foreign_datagrams_to_a_fixed_port_are_counted_apart(out: Path) -> None:
    port = free_port(socket.SOCK_DGRAM)
    # Forged sender names among them: counted as the sender's, they would be late or extra.
    foreign = ["hello from outside", "sender-000 #000 .", "sender-001 #024 ..", "sender-002 #999"]
    with peer("udp-sender", str(port), *foreign) as outsider:
        result = finished(out, "udp_datagrams", f"params.port={port}", "params.gap.mean=2",
                          args=UDP)  # fmt: skip
        sent = [outsider.line() for _ in foreign]
    assert result.code == 0, result.stderr
    assert [s.split(" ", 2)[2] for s in sent] == foreign
    # From the outsider's port: a run's own sender may send the very text of a forged one.
    (port_of_outsider,) = {int(s.split(" ", 2)[1]) for s in sent}
    arrived = [e["item"] for e in ops(result.events, op="recvfrom", phase="ok")
               if e["sender"] == port_of_outsider]  # fmt: skip
    assert sorted(arrived) == sorted(foreign)
    metrics = result.manifest["metrics"]
    assert (metrics["received"], metrics["foreign"], metrics["lost"]) == (75, 4, 0)
    assert metrics["out_of_order"] == 0
    assert metrics["duplicated"] == 0
    shown = verdicts(result.manifest)
    assert shown["no datagram lost"] == ("pass", "all 75 datagrams arrived")
    assert shown["datagrams arrive in the order sent"][0] == "pass"
    status, detail = shown["each datagram arrives whole, from its sender"]
    assert status == "pass"
    assert "4 foreign datagrams from outside the run, not counted" in detail


@pytest.mark.timeout(60)
def test_a_receiver_without_senders_counts_only_foreign_datagrams(out: Path) -> None:
    port = free_port(socket.SOCK_DGRAM)
    with peer("udp-sender", str(port), "one", "two", "three") as outsider:
        result = finished(out, "udp_datagrams", f"params.port={port}", "params.senders=0",
                          "params.listen=100", args=UDP)  # fmt: skip
        assert [outsider.line().split()[-1] for _ in range(3)] == ["one", "two", "three"]
    assert result.code == 0, result.stderr
    assert list(result.manifest["actors"]) == ["receiver"]
    metrics = result.manifest["metrics"]
    assert (metrics["received"], metrics["foreign"], metrics["lost"]) == (0, 3, 0)
    shown = verdicts(result.manifest)
    assert shown["no datagram lost"][0] == "skip"
    assert shown["each datagram arrives whole, from its sender"][0] == "skip"


@pytest.mark.timeout(60)
def test_senders_send_to_an_outside_target(out: Path) -> None:
    with peer("udp-receiver") as receiver:
        port = int(receiver.line().split()[1])
        result = finished(out, "udp_datagrams", f"params.target=127.0.0.1:{port}",
                          "params.senders=2", "params.datagrams=5", args=UDP[:4])  # fmt: skip
        got = sorted(receiver.line().split(" ", 1)[1] for _ in range(10))
    assert result.code == 0, result.stderr
    assert "receiver" not in result.manifest["actors"]
    sent = sorted(e["item"] for e in ops(result.events, op="sendto", phase="ok"))
    assert got == sent
    assert len(sent) == 10
    assert verdicts(result.manifest)["no datagram lost"] == (
        "skip",
        f"the receiver is outside the run (127.0.0.1:{port})",
    )


# -- the virtual clock ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "setting", "why"),
    [
        ("tcp_echo", "params.server=127.0.0.1:7777",
         "params.server: the server is outside the run"),
        ("tcp_echo", "params.clients=0",
         "params.clients: 0 clients, the clients are outside the run"),
        ("udp_datagrams", "params.senders=0",
         "params.senders: 0 senders, the datagrams come from outside the run"),
        ("udp_datagrams", "params.target=127.0.0.1:9",
         "params.target: the receiver is outside the run"),
    ],
)  # fmt: skip
@pytest.mark.timeout(30)
def test_a_config_with_an_outside_peer_is_refused_under_the_virtual_clock(
    tmp_path: Path, config: str, setting: str, why: str
) -> None:
    result = sim("run", config, "-s", setting, "-s", "clock.mode=virtual", "--out",
                 str(tmp_path), timeout=25)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {config}.toml: clock.mode: scenario {config!r} cannot run "
        f"under the virtual clock: {why} (set with -s)"
    )
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("params.server=localhost", "server = 'localhost': expected HOST:PORT"),
        ("params.server=127.0.0.1:70000", "server = '127.0.0.1:70000': expected HOST:PORT"),
        ("params.serve=5", "serve is for the server alone (clients = 0)"),
    ],
)
@pytest.mark.timeout(30)
def test_a_bad_outside_setting_is_a_config_error(setting: str, message: str) -> None:
    result = sim("check", "tcp_echo", "-s", setting, timeout=25)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
