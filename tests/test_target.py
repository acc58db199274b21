"""The embedded target counts connections, requests and closers exactly, over real sockets."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time

import psutil
import pytest

from keepalive_lab.config import TargetMode
from keepalive_lab.target import TargetProcess


def get(conn: http.client.HTTPConnection, path: str = "/", headers: dict | None = None) -> http.client.HTTPResponse:
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    resp.read()
    return resp


def settle(t: TargetProcess, open_connections: int = 0) -> dict:
    deadline = time.monotonic() + 3
    stats = t.stats()
    while stats["open_connections"] != open_connections and time.monotonic() < deadline:
        time.sleep(0.02)
        stats = t.stats()
    return stats


def test_keepalive_ten_requests_one_connection():
    with TargetProcess("keepalive") as t:
        conn = http.client.HTTPConnection("127.0.0.1", t.port)
        for _ in range(10):
            assert get(conn).status == 200
        assert t.stats()["connections_accepted"] == 1
        conn.close()
        stats = settle(t)
    assert stats["requests"] == 10
    assert stats["closed_by"] == {"client": 1, "server": 0, "client_reset": 0}
    assert stats["requests_per_connection"] == {"10": 1}


def test_close_mode_closes_after_every_response():
    with TargetProcess("close") as t:
        for _ in range(5):
            conn = http.client.HTTPConnection("127.0.0.1", t.port)
            resp = get(conn)
            assert resp.getheader("Connection") == "close"
            conn.close()
        stats = settle(t)
    assert stats["connections_accepted"] == 5
    assert stats["closed_by"]["server"] == 5


def test_http10_answers_as_http10_and_closes():
    with TargetProcess("http10") as t:
        with socket.create_connection(("127.0.0.1", t.port)) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):  # the server closes, so recv reaches EOF
                data += chunk
        stats = settle(t)
    assert data.startswith(b"HTTP/1.0 200 OK\r\n")
    assert data.endswith(b"Hello world")
    assert stats["closed_by"]["server"] == 1


def test_close_after_three_requests():
    with TargetProcess("close-after:3") as t:
        conn = http.client.HTTPConnection("127.0.0.1", t.port)
        headers = [get(conn).getheader("Connection") for _ in range(3)]
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", t.port)
        get(conn)
        conn.close()
        stats = settle(t)
    assert headers == [None, None, "close"]
    assert stats["connections_accepted"] == 2
    assert stats["requests_per_connection"] == {"1": 1, "3": 1}


def test_idle_timeout_closes_idle_connections():
    with TargetProcess("idle-timeout:0.2") as t:
        with socket.create_connection(("127.0.0.1", t.port)) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(5)
            first = s.recv(4096)
            t0 = time.monotonic()
            assert s.recv(4096) == b""  # EOF: the server closed the idle connection
            waited = time.monotonic() - t0
        stats = settle(t)
    assert first.startswith(b"HTTP/1.1 200 OK")
    assert 0.1 < waited < 3
    assert stats["closed_by"]["server"] == 1


def test_stats_request_and_its_connection_are_not_counted():
    with TargetProcess("keepalive") as t:
        for _ in range(3):
            t.stats()
        conn = http.client.HTTPConnection("127.0.0.1", t.port)
        conn.request("GET", "/_stats")
        on_target_port = json.loads(conn.getresponse().read())
        get(conn, "/")  # a counted request on the same connection: now the connection counts
        conn.close()
        stats = settle(t)
    assert on_target_port["connections_accepted"] == 0 and on_target_port["requests"] == 0
    assert stats["connections_accepted"] == 1
    assert stats["requests"] == 1


def test_delay_and_body_size(tmp_path):
    out = tmp_path / "stats.json"
    with TargetProcess("keepalive", delay_ms=100, body_bytes=5000, stats_out=out) as t:
        conn = http.client.HTTPConnection("127.0.0.1", t.port)
        t0 = time.monotonic()
        conn.request("GET", "/")
        body = conn.getresponse().read()
        elapsed = time.monotonic() - t0
        conn.close()
    final = json.loads(out.read_text())
    assert len(body) == 5000
    assert elapsed >= 0.09
    assert final["requests"] == 1 and final["delay_ms"] == 100 and final["body_bytes"] == 5000


def test_binds_loopback_only():
    with TargetProcess("keepalive") as t:
        control_port = int(t.control_url.rsplit(":", 1)[1].split("/")[0])
        listeners = {
            c.laddr.port: c.laddr.ip
            for c in psutil.Process(t.proc.pid).net_connections("tcp")
            if c.status == psutil.CONN_LISTEN
        }
    assert listeners == {t.port: "127.0.0.1", control_port: "127.0.0.1"}


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--mode", "close-after:x"], "'close-after:x' is not a target mode"),
        (["--mode", "close-after:0"], "'close-after:0' is not a target mode"),
        (["--mode", "idle-timeout:-1"], "'idle-timeout:-1' is not a target mode"),
        (["--port", "abc"], "'abc' is not a whole number"),
        (["--delay-ms", "-5"], "'-5' is not a whole number"),
    ],
)
def test_bad_arguments_one_line_exit_2(args, needle):
    proc = subprocess.run([sys.executable, "-m", "keepalive_lab.target", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert needle in proc.stderr


def test_parse_mode_round_trips():
    for text in ("keepalive", "close", "http10", "close-after:3", "idle-timeout:2.5"):
        assert str(TargetMode.parse(text)) == text
