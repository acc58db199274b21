"""A run's figures are its own, against servers nobody here wrote: a second run right after the
first, another client on the same port, servers that close (nginx keepalive_timeout 0, gunicorn's
sync worker), HTTPS, and a sidecar wrapped around a fast foreign client (ab)."""

from __future__ import annotations

import csv
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, wait_for

from keepalive_lab.peers import NginxProcess, free_port, nginx_path, wait_listening
from keepalive_lab.target import TargetProcess

requires_nginx = pytest.mark.skipif(
    nginx_path() is None, reason="nginx is not installed: `make tools` installs Debian's nginx-light as root"
)
HERE = Path(__file__).resolve().parent


def summary_row(folder: Path) -> dict:
    out = folder.parent / f"report-{folder.name}"
    proc = subprocess.run([sys.executable, "-m", "analysis", "report", str(folder), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with open(out / "summary.csv") as f:
        row = next(csv.DictReader(f))
    row["verdict_line"] = proc.stdout.splitlines()[0]
    return row


def num(row: dict, column: str) -> float:
    return float(row[column]) if row[column] != "" else float("nan")


def last_sample(folder: Path) -> dict:
    with open(folder / "sockets.csv") as f:
        return {k: v for k, v in list(csv.DictReader(f))[-1].items()}


@requires_nginx
def test_a_second_run_right_after_the_first_counts_only_its_own_sockets(run_locust):
    """Two identical runs against one nginx: the second starts among the first's 10 TIME_WAIT."""
    with NginxProcess() as nginx:
        args = ("--host", nginx.url, "--drain", "close", "--think-time", "0.02")
        first = run_locust("sequential.py", *args)
        second = run_locust("sequential.py", *args)
    for r in (first, second):
        assert r.returncode == 0, r.output
        assert r.run["client_connections"]["opened"] == 10
    one, two = summary_row(first.folder), summary_row(second.folder)
    assert num(one, "peak_client_time_wait") == 10 and num(one, "peak_ports_in_use") == 10
    assert num(two, "peak_client_time_wait") == 10 and num(two, "peak_ports_in_use") == 10  # not 20
    assert num(two, "preexisting_client_time_wait") == 10  # the first run's, reported apart
    assert num(two, "peak_host_ports_in_use") == 20
    last = last_sample(second.folder)
    assert int(last["host_client_time_wait"]) == 20 and int(last["preexisting_client_time_wait"]) == 10


def test_a_second_concurrent_run_against_the_same_target(run_locust, target):
    """The default concurrent scenario twice against one target: each run's TIME_WAIT are its connections."""
    accepted = []
    runs = []
    for _ in range(2):
        before = target.stats()["connections_accepted"]
        r = run_locust("concurrent.py", "--host", target.url)
        assert r.returncode == 0, r.output
        accepted.append(target.stats()["connections_accepted"] - before)
        runs.append(summary_row(r.folder))
    for row, n in zip(runs, accepted, strict=True):
        assert num(row, "connections_opened") == n
        assert num(row, "peak_client_time_wait") == n  # every connection ends in a client TIME_WAIT
    assert num(runs[1], "preexisting_client_time_wait") >= accepted[0]


@requires_nginx
def test_another_client_on_the_same_port_does_not_pollute_the_run(run_locust):
    """While the run makes its 10 connections, another client of this host makes 50 to the same port."""
    with NginxProcess() as nginx:
        stop = threading.Event()
        made = []

        def other_client() -> None:
            while not stop.is_set() and len(made) < 50:
                with socket.create_connection(("127.0.0.1", nginx.ports["nginx-keepalive"])) as s:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    s.recv(4096)
                made.append(1)
                time.sleep(0.01)

        thread = threading.Thread(target=other_client)
        thread.start()
        try:
            r = run_locust("sequential.py", "--host", nginx.url, "--drain", "close", "--think-time", "0.05")
        finally:
            stop.set()
            thread.join()
    assert r.returncode == 0, r.output
    row = summary_row(r.folder)
    assert len(made) > 10
    assert num(row, "peak_client_time_wait") == 10 and num(row, "peak_ports_in_use") == 10
    assert num(row, "peak_host_ports_in_use") > 10  # the other client's sockets are on the host


@requires_nginx
def test_nginx_closing_every_connection_is_no_discard_and_no_client_time_wait(run_locust):
    with NginxProcess() as nginx:
        r = run_locust("concurrent.py", "--host", nginx.url_for("nginx-close"))
    assert r.returncode == 0, r.output
    conns = r.run["client_connections"]
    assert conns["opened"] == 100 and conns["discarded"] == 0
    assert conns["closed_by_server"] == 100 and conns["closed_by_client"] == 0
    row = summary_row(r.folder)
    # A simultaneous close (the client closing as nginx does) leaves TIME_WAIT on both sides: rare.
    assert num(row, "peak_client_time_wait") <= 2 and num(row, "projected_port_use_pct") < 5
    assert "the server closes every connection" in row["verdict_line"]


@pytest.fixture
def gunicorn_url(tmp_path):
    """gunicorn's sync worker (it answers Connection: close and closes every connection)."""
    app = tmp_path / "app.py"
    app.write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '11')])\n"
        "    return [b'Hello world']\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", "1", "--worker-class", "sync", "--bind",
         f"127.0.0.1:{port}", "--chdir", str(tmp_path), "app:app"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_listening(port, 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_gunicorn_sync_worker_closes_every_connection(run_locust, gunicorn_url):
    r = run_locust("concurrent.py", "--host", gunicorn_url)
    assert r.returncode == 0, r.output
    conns = r.run["client_connections"]
    assert conns["opened"] == 100 and conns["discarded"] == 0
    assert conns["closed_by_server"] == 100
    row = summary_row(r.folder)
    # The server closes right after its response while the client, told "Connection: close", closes
    # too: the kernel's ordering decides who sent the first FIN. Most connections leave TIME_WAIT on
    # the server; one that the client closed first, or both at once, leaves one on the client.
    assert num(row, "peak_server_time_wait") >= 90
    assert num(row, "peak_client_time_wait") <= 10 and num(row, "projected_port_use_pct") < 10
    assert row["verdict_line"].startswith("20") and "the server closes every connection" in row["verdict_line"]


def test_fasthttp_over_https_counts_every_connection(run_locust):
    r = run_locust("concurrent.py", "--target-tls", "on", "--client", "fasthttp", "--pool-full", "block",
                   "--pool-scope", "user")  # fmt: skip
    assert r.returncode == 0, r.output
    assert r.run["host"].startswith("https://") and r.run["target"]["tls"] is True
    assert r.run["failures"] == 0  # no certificate check, as Locust's FastHttpUser
    assert r.run["client_connections"]["opened"] == r.accepted == 10


def test_requests_over_https_checks_the_certificate_and_counts_tls_failures_apart(run_locust):
    r = run_locust("sequential.py", "--target-tls", "on", "--think-time", "0.02")
    assert r.returncode == 1, r.output  # every request failed
    conns = r.run["client_connections"]
    assert conns["opened"] == 10  # the TCP connections were made...
    assert conns["tls_errors"] == 10 and conns["tls_errors_by_reason"] == {"CERTIFICATE_VERIFY_FAILED": 10}
    assert conns["connect_errors"] == 0 and conns["connect_errors_by_errno"] == {}  # ...not errno 1
    assert r.run["status"] == "failed" and "CERTIFICATE_VERIFY_FAILED" in r.run["status_reason"]
    row = summary_row(r.folder)
    assert num(row, "connections_opened") == 10 and row["connections_source"] == "client"
    assert num(row, "tls_errors") == 10


@pytest.mark.skipif(shutil.which("ab") is None, reason="ab is not installed: `make tools` installs apache2-utils")
def test_sidecar_samples_before_the_command_starts(tmp_path):
    """ab -k opens its 10 connections within milliseconds of starting; the baseline comes first."""
    with TargetProcess("keepalive") as target:
        for trial in range(3):
            out = tmp_path / f"s{trial}.csv"
            cmd = [sys.executable, "-m", "keepalive_lab.sidecar", "--port", str(target.port), "--out", str(out),
                   "--interval", "0.05", "--", "ab", "-k", "-q", "-n", "1000", "-c", "10",
                   target.url + "/"]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stderr
            with open(out) as f:
                rows = list(csv.DictReader(f))
            assert int(rows[0]["client_established"]) == 0  # the baseline: ab has not connected yet
            # ab closes its 10 keep-alive connections when it is done: 10 client TIME_WAIT, its own
            # (the earlier trials' are there too, as pre-existing)
            assert int(rows[-1]["client_time_wait"]) == 10, rows[-1]
            assert int(rows[-1]["preexisting_client_time_wait"]) == 10 * trial


def test_own_sockets_are_told_by_cookie(tmp_path):
    """The clients' reports reach the sidecar: a run's sockets.csv is attributed by the clients, not
    by a baseline alone (its own count equals the client's count with a busy neighbour around)."""
    with TargetProcess("keepalive") as target:
        neighbour = [socket.create_connection(("127.0.0.1", target.port)) for _ in range(5)]
        run_dir = tmp_path / "runs"
        cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "concurrent.py"), "--headless",
               "--host", target.url, "--run-dir", str(run_dir), "--pool-size", "10"]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
        # The first sample row, not the file: its header is written before the sample is taken.
        wait_for(lambda: any(len(p.read_text().splitlines()) > 1 for p in run_dir.glob("*/sockets.csv")),
                 "the run's first sample")  # fmt: skip
        later = [socket.create_connection(("127.0.0.1", target.port)) for _ in range(5)]  # after the baseline
        assert proc.wait(timeout=60) == 0
        for s in neighbour + later:
            s.close()
    folder = next(run_dir.glob("*/run.json")).parent
    last = last_sample(folder)
    # The run's 10 connections, closed by its pool at the end, are its TIME_WAIT; the neighbour's
    # 10 connections (5 made after the first sample) are on the host, not the run's.
    assert int(last["client_time_wait"]) == 10 and int(last["ports_in_use"]) == 10
    assert int(last["host_ports_in_use"]) == 20 and int(last["preexisting_ports_in_use"]) == 5
    assert json.loads((folder / "run.json").read_text())["client_connections"]["opened"] == 10
