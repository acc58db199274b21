"""Measuring a locustfile as written: Locust's own examples (tests/data/locust_examples, unmodified),
over HTTP and HTTPS, with both clients, in one process and with --processes, counted against
nginx's own accept counter; and what happens with class orders and mixed classes."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import textwrap
import urllib.request
from importlib import metadata
from pathlib import Path

import pytest
from conftest import LOCUSTFILES, ROOT

from keepalive_lab.certs import self_signed
from keepalive_lab.peers import free_port, nginx_path, wait_listening

requires_nginx = pytest.mark.skipif(
    nginx_path() is None, reason="nginx is not installed: `make tools` installs Debian's nginx-light as root"
)
EXAMPLES = ROOT / "tests" / "data" / "locust_examples"
MEASURE = LOCUSTFILES / "measure.py"

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
    default_type text/plain;
    keepalive_requests 1000000;  # nginx's default of 1,000 would close busy connections mid-test
    server {{
        listen 127.0.0.1:{http};
        listen 127.0.0.1:{https} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ return 200 "Hello world"; }}
    }}
    server {{
        listen 127.0.0.1:{status};
        location / {{ stub_status; }}
    }}
}}
"""


class CountingNginx:
    """nginx serving HTTP and HTTPS (a self-signed certificate) on 127.0.0.1, and its stub_status."""

    def __init__(self, folder: Path) -> None:
        (folder / "tmp").mkdir(parents=True)
        self.cert, key = self_signed(folder)
        self.ports = {"http": free_port(), "https": free_port(), "status": free_port()}
        conf = folder / "nginx.conf"
        conf.write_text(NGINX_CONF.format(prefix=folder, cert=self.cert, key=key, **self.ports))
        cmd = [nginx_path(), "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log")]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in self.ports.values():
            wait_listening(port)

    def url(self, scheme: str) -> str:
        return f"{scheme}://127.0.0.1:{self.ports[scheme]}"

    def accepts(self) -> int:
        """nginx's count of accepted connections on every server, this status request's own included."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['status']}/", timeout=5) as resp:
            text = resp.read().decode()
        return int(re.search(r"\n\s*(\d+)\s+\d+\s+\d+", text).group(1))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def nginx(tmp_path: Path):
    server = CountingNginx(tmp_path / "nginx")
    yield server
    server.stop()


def measured(run_locust, nginx: CountingNginx, example: str, scheme: str, *args: str, env: dict | None = None):
    """Run one of Locust's examples, measured, against nginx; return the run and nginx's accepts during it."""
    before = nginx.accepts()
    r = run_locust(f"{EXAMPLES / example},{MEASURE}", "--host", nginx.url(scheme), *args, env=env)
    after = nginx.accepts()
    return r, after - before - 1  # the second status request's own connection


def by_name(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "connections.csv") as f:
        return {row["name"]: row for row in csv.DictReader(f)}


@requires_nginx
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_locusts_fasthttp_example_is_counted_exactly(run_locust, nginx, scheme):
    r, accepted = measured(run_locust, nginx, "fast_http_locust.py", scheme, "-u", "4", "-r", "4", "-t", "3s")
    assert r.returncode == 0, r.output
    run, conns = r.run, r.run["client_connections"]
    assert run["status"] == "completed", run["status_reason"]
    assert run["user_classes"] == ["WebsiteUser"]
    assert run["settings"]["own_client"] is True and run["settings"]["client_type"] == "fasthttp"
    assert "drain" not in run["settings"] and "think_time_s" not in run["settings"]
    assert run["settings"]["client_settings"]["concurrency"] == 10  # FastHttpUser's own default, kept
    # One connection per user, reused for every request; the sockets are the users' own to the end.
    assert conns["opened"] == accepted == 4
    assert conns["connect_errors"] == 0 and conns["tls_errors"] == 0
    assert conns["connect_ms"]["count"] == 4
    assert conns["tls_ms"].get("count", 0) == (4 if scheme == "https" else 0)
    names = by_name(r.folder)
    assert set(names) == {"/", "/stats/requests"}
    assert sum(int(n["requests"]) for n in names.values()) == run["requests"] > 100
    assert sum(int(n["connections_opened"]) for n in names.values()) == 4
    assert sum(int(n["new_connection_requests"]) for n in names.values()) == 4


@requires_nginx
def test_locusts_httpuser_example_is_counted_exactly(run_locust, nginx):
    # basic.py as written: three tasks, wait_time between(2, 5).
    r, accepted = measured(run_locust, nginx, "basic.py", "http", "-u", "3", "-r", "3", "-t", "5s")
    assert r.returncode == 0, r.output
    run, conns = r.run, r.run["client_connections"]
    assert run["status"] == "completed", run["status_reason"]
    assert run["settings"]["client_type"] == "requests" and run["settings"]["own_client"] is True
    assert conns["opened"] == accepted == 3  # one per user: the wait of 2 to 5 s is far below nginx's 75 s
    assert conns["tls_errors"] == 0 and conns["connect_ms"]["count"] == 3
    names = by_name(r.folder)
    assert sum(int(n["requests"]) for n in names.values()) == run["requests"] >= 3
    assert sum(int(n["new_connection_requests"]) for n in names.values()) == 3
    stats = {row["Name"]: row for row in csv.DictReader(open(r.folder / "stats.csv"))}
    for name, row in names.items():
        assert int(row["requests"]) == int(stats[name]["Request Count"]), name


@requires_nginx
def test_locusts_httpuser_example_over_https_counts_each_handshake_its_certificate_check_refused(run_locust, nginx):
    # HttpUser verifies certificates, and nginx's is self-signed: every TCP connection is made and
    # counted, and every handshake fails; nginx accepted exactly those connections.
    r, accepted = measured(run_locust, nginx, "basic.py", "https", "-u", "2", "-r", "2", "-t", "3s")
    conns = r.run["client_connections"]
    assert conns["opened"] == accepted == r.run["requests"] >= 2
    assert conns["tls_errors"] == conns["opened"]
    assert list(conns["tls_errors_by_reason"]) == ["CERTIFICATE_VERIFY_FAILED"]
    assert r.run["status"] == "failed" and r.returncode == 1


LOCUST_VERSION = tuple(int(x) for x in metadata.version("locust").split(".")[:2])


@requires_nginx
@pytest.mark.skipif(
    LOCUST_VERSION < (2, 47),
    reason="known limit (README, Versions): with the oldest Locust, a --processes run of a measured locustfile "
    "sometimes leaves its run folder unfinished",
)
def test_processes_sum_every_worker(run_locust, nginx):
    r, accepted = measured(run_locust, nginx, "fast_http_locust.py", "http", "--processes", "2", "-u", "4", "-r", "4",
                           "-t", "3s")  # fmt: skip
    assert r.returncode == 0, r.output
    conns = r.run["client_connections"]
    assert conns["opened"] == accepted == 4
    assert sum(int(n["requests"]) for n in by_name(r.folder).values()) == r.run["requests"]
    # Each worker's counts, and their sum for the one host both ran on.
    workers, (host,) = r.run["workers"], r.run["hosts"]
    assert len(workers) == 2 == r.run["processes"] and sorted(host["workers"]) == sorted(w["id"] for w in workers)
    assert sum(w["opened"] for w in workers) == host["opened"] == 4
    assert host["host"] == os.uname().nodename and r.run["pools"] is None  # the users' own pools


@requires_nginx
def test_lab_only_options_are_refused_for_a_locustfile_measured_as_written(run_locust, nginx):
    before = nginx.accepts()
    r = run_locust(f"{EXAMPLES / 'basic.py'},{MEASURE}", "--host", nginx.url("http"), "--drain", "none",
                   "--think-time", "0", "-u", "1", "-t", "2s")  # fmt: skip
    assert r.returncode == 2 and r.folder is None
    lines = [line for line in r.output.splitlines() if "error" in line]
    assert lines == [
        "locust: error: --drain --think-time: these options act only on the suite's LabUser scenarios; "
        "WebsiteUser (HttpUser) keeps its own client, pool and tasks, and is measured as written: leave these "
        "options out"
    ]
    assert "Traceback" not in r.output
    assert nginx.accepts() == before + 1  # no load: only this status request


def test_a_locustfile_without_the_measure_module_is_told_why_nothing_is_measured(run_locust, target):
    r = run_locust(f"{EXAMPLES / 'basic.py'},{ROOT / 'keepalive_lab' / 'users.py'}", "--host", target.url, "-u", "1",
                   "-t", "1s")  # fmt: skip
    assert r.returncode == 0 and r.folder is None
    assert "keepalive-lab: nothing to measure: WebsiteUser is not among the suite's LabUser scenarios" in r.output
    assert "locustfiles/measure.py" in r.output


BOTH = """
from locust import {client}, task
from keepalive_lab.users import LabUser


class WebsiteUser({bases}):
    @task
    def index(self):
        self.client.get("/")
"""


@pytest.mark.parametrize(
    ("client", "bases"),
    [("HttpUser", "LabUser, HttpUser"), ("HttpUser", "HttpUser, LabUser"), ("FastHttpUser", "LabUser, FastHttpUser")],
)
def test_a_class_both_labuser_and_a_locust_client_is_refused_in_either_order(run_locust, target, tmp_path, client,
                                                                            bases):  # fmt: skip
    locustfile = tmp_path / "both.py"
    locustfile.write_text(BOTH.format(client=client, bases=bases))
    accepted = target.stats()["connections_accepted"]
    r = run_locust(str(locustfile), "--host", target.url, "-u", "1", "-t", "2s")
    assert r.returncode == 2 and r.folder is None
    errors = [line for line in r.output.splitlines() if "error" in line]
    assert errors == [
        f"locust: error: WebsiteUser derives from both LabUser and {client}: derive from LabUser alone "
        f"(client_type = 'fasthttp' gives FastHttpUser's client), or from {client} alone and add "
        "locustfiles/measure.py to -f to measure it as written"
    ]
    assert target.stats()["connections_accepted"] == accepted  # refused before any load


MIXED = """
from locust import FastHttpUser, HttpUser, constant, task
from locust.exception import StopUser

import keepalive_lab.measure  # noqa: F401
from keepalive_lab.users import LabUser


class Scenario(LabUser):
    requests_per_user = 10
    pool_scope = "user"

    @task
    def lab(self):
        self.fetch("/", name="lab")


class Plain(HttpUser):
    wait_time = constant(0)
    made = 0

    @task
    def plain(self):
        if self.made == 7:
            raise StopUser()
        self.made += 1
        # Connection: close from the client: a new connection for each of the 7 requests.
        self.client.get("/", name="plain", headers={"Connection": "close"})


class Fast(FastHttpUser):
    wait_time = constant(0)
    made = 0

    @task
    def fast(self):
        if self.made == 5:
            raise StopUser()
        self.made += 1
        self.client.get("/", name="fast")
"""


def test_mixed_classes_are_each_counted(run_locust, target, tmp_path):
    locustfile = tmp_path / "mixed.py"
    locustfile.write_text(textwrap.dedent(MIXED))
    accepted = target.stats()["connections_accepted"]
    r = run_locust(str(locustfile), "--host", target.url, "-u", "3", "-r", "3", "-t", "4s")
    assert r.returncode == 0, r.output
    run, conns = r.run, r.run["client_connections"]
    assert sorted(run["user_classes"]) == ["Fast", "Plain", "Scenario"]
    settings = run["settings_by_user_class"]
    assert settings["Scenario"]["drain"] == "full" and "own_client" not in settings["Scenario"]
    assert settings["Plain"]["own_client"] is True and "drain" not in settings["Plain"]
    names = by_name(r.folder)
    assert {k: int(v["requests"]) for k, v in names.items()} == {"lab": 10, "plain": 7, "fast": 5}
    assert {k: int(v["connections_opened"]) for k, v in names.items()} == {"lab": 1, "plain": 7, "fast": 1}
    assert run["requests"] == 22
    assert conns["opened"] == 9 == target.stats()["connections_accepted"] - accepted
    assert json.loads((r.folder / "run.json").read_text())["status"] == "completed"
