"""Servers that close (the seed's third lesson), with real peers: who holds the TIME_WAIT.

Each run is isolated in a private network namespace, so TIME_WAIT counts are exact."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from conftest import requires_netns

from keepalive_lab.peers import NginxProcess, nginx_path

requires_nginx = pytest.mark.skipif(
    nginx_path() is None, reason="nginx is not installed: `make tools` installs Debian's nginx-light as root"
)


def summary(r) -> pd.Series:
    out = r.folder.parent / "report"
    proc = subprocess.run([sys.executable, "-m", "analysis", "report", str(r.folder), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    row = pd.read_csv(out / "summary.csv").iloc[0]
    row["verdict_line"] = proc.stdout.splitlines()[0]
    return row


@requires_netns
def test_embedded_http10_one_connection_per_request_time_wait_on_the_server(run_locust):
    r = run_locust("server_close.py", isolated=True)
    assert r.returncode == 0, r.output
    assert r.run["settings"]["target_mode"] == "http10" and r.run["locust_options"]["num_users"] == 10
    assert r.accepted == 100 and r.target["requests"] == 100
    assert r.target["closed_by"]["server"] == 100
    s = summary(r)
    assert s["peak_server_time_wait"] == 100 and s["peak_client_time_wait"] == 0
    assert s["server_time_wait_pct"] == 100
    assert ("the server closes every connection (HTTP/1.0): 1 connection per request, TIME_WAIT on the server"
            in s["verdict_line"])  # fmt: skip


@requires_netns
def test_python_http_server_closes_every_connection(run_locust):
    r = run_locust("server_close.py", "--peer", "http.server", isolated=True)
    assert r.returncode == 0, r.output
    assert r.run["target"]["peer"] == "http.server"
    assert r.run["client_connections"]["opened"] == 100
    s = summary(r)
    assert s["connections_source"] == "client"
    assert s["connections_per_request"] == 1.0
    # It writes the response, then shuts the socket: a client that closes right after reading
    # sometimes beats its FIN, so a few TIME_WAIT land on the client; most are the server's.
    # When both close at once (a simultaneous close), both sides hold one: so at least 100, less
    # the connections still closing at the last sample (the client has yet to close a socket the
    # server has shut: CLOSE_WAIT on its side, FIN_WAIT_2 on the server's).
    last = pd.read_csv(r.folder / "sockets.csv").iloc[-1]
    closing = max(last["client_close_wait"] + last["client_other"], last["server_close_wait"] + last["server_other"])
    assert closing <= 2
    assert s["peak_server_time_wait"] + s["peak_client_time_wait"] + closing >= 100
    assert s["server_time_wait_pct"] >= 50
    assert "the server closes every connection (HTTP/1.0)" in s["verdict_line"]


@requires_netns
@requires_nginx
def test_nginx_keepalive_timeout_0_closes_every_connection(run_locust):
    r = run_locust("server_close.py", "--peer", "nginx-close", isolated=True)
    assert r.returncode == 0, r.output
    s = summary(r)
    assert s["connections_opened"] == 100 and s["connections_per_request"] == 1.0
    # Now and then the client closes as nginx does (it has read Content-Length bytes): a simultaneous
    # close leaves TIME_WAIT on both sides, a client close first leaves it on the client only.
    assert s["peak_server_time_wait"] >= 98 and s["peak_client_time_wait"] <= 2
    assert s["peak_server_time_wait"] + s["peak_client_time_wait"] >= 100
    assert s["server_time_wait_pct"] >= 50
    assert "(nginx keepalive_timeout 0)" in s["verdict_line"]


@requires_netns
@requires_nginx
def test_nginx_keepalive_on_one_connection_per_user(run_locust):
    r = run_locust("server_close.py", "--peer", "nginx-keepalive", isolated=True)
    assert r.returncode == 0, r.output
    s = summary(r)
    assert s["connections_opened"] == 10 and s["requests"] == 100
    assert s["peak_server_time_wait"] == 0  # the clients close at the end: their TIME_WAIT
    assert s["peak_client_time_wait"] == 10
    assert "reuses connections: 10 connections for 100 requests" in s["verdict_line"]


@requires_netns
@requires_nginx
def test_nginx_low_keepalive_requests(run_locust):
    r = run_locust("server_close.py", "--peer", "nginx-low-requests", "-u", "1", isolated=True)
    assert r.returncode == 0, r.output
    assert r.run["client_connections"]["opened"] == 4  # 10 requests, 3 per connection


@requires_netns
def test_stale_keepalive_is_counted_and_explained(run_locust):
    r = run_locust("server_close.py", "--target-mode", "idle-timeout:0.2", "--think-time", "0.4", isolated=True)
    assert r.returncode == 0, r.output
    assert r.accepted == 100  # every request found its idle connection closed and reconnected
    assert r.target["closed_by"]["server"] >= 90
    s = summary(r)
    expected = "stale keep-alive: the server closes connections idle for 0.2 s, before the client's next request 0.4 s"
    assert s["verdict_line"].split(": ", 1)[1].startswith(expected)


@requires_nginx
def test_external_host_uses_the_client_side_counts(run_locust):
    with NginxProcess() as nginx:
        r = run_locust("server_close.py", "--host", nginx.url_for("nginx-close"), "-u", "2")
    assert r.returncode == 0, r.output
    assert r.run["target"] == {"embedded": False, "url": nginx.url_for("nginx-close")}
    assert r.run["client_connections"]["opened"] == 20
    assert summary(r)["connections_source"] == "client"
