"""A worker on another host: a network namespace of its own, joined to this one by a veth pair.

The embedded target listens on 127.0.0.1 by default, which the other host cannot reach: the test
is refused before any load. With --target-bind an address of the master's host, it runs, and
the connection counts are exact."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import locust_command, only_run_folder, requires_netns

from keepalive_lab.netns import namespace_of
from keepalive_lab.peers import free_port

pytestmark = requires_netns


class TwoHosts:
    """A network namespace ("the other host") and a veth pair: ``here`` on this side, ``there`` on its side."""

    def __init__(self) -> None:
        n = os.getpid() % 250 + 1
        self.ns, self.veth = f"kl-test-{os.getpid()}", f"klt{os.getpid() % 100000}"
        self.here, self.there = f"10.231.{n}.1", f"10.231.{n}.2"

    def __enter__(self) -> TwoHosts:
        for cmd in (
            ["ip", "netns", "add", self.ns],
            ["ip", "link", "add", self.veth + "a", "type", "veth", "peer", "name", self.veth + "b"],
            ["ip", "link", "set", self.veth + "b", "netns", self.ns],
            ["ip", "addr", "add", f"{self.here}/30", "dev", self.veth + "a"],
            ["ip", "link", "set", self.veth + "a", "up"],
            ["ip", "netns", "exec", self.ns, "ip", "addr", "add", f"{self.there}/30", "dev", self.veth + "b"],
            ["ip", "netns", "exec", self.ns, "ip", "link", "set", self.veth + "b", "up"],
            ["ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up"],
        ):
            subprocess.run(cmd, check=True, capture_output=True)
        return self

    def __exit__(self, *_: object) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)  # takes its end of the veth pair along
        subprocess.run(["ip", "link", "del", self.veth + "a"], capture_output=True)


def master_and_remote_worker(tmp_path: Path, hosts: TwoHosts, *args: str) -> tuple[int, str, Path | None]:
    """A headless master here, bound to the veth address, and one worker on the other host."""
    port, run_dir = free_port(), tmp_path / "runs"
    master = subprocess.Popen(
        locust_command("sequential.py", "--headless", "--master", "--master-bind-host", hosts.here,
                       "--master-bind-port", str(port), "--expect-workers", "1", "--run-dir", str(run_dir),
                       "--think-time", "0.05", *args),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, start_new_session=True,
    )  # fmt: skip
    worker = subprocess.Popen(
        ["ip", "netns", "exec", hosts.ns,
         *locust_command("sequential.py", "--worker", "--master-host", hosts.here, "--master-port", str(port))],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path, start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = master.communicate(timeout=90)
    finally:
        for proc in (master, worker):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return master.returncode, out, only_run_folder(run_dir)


def test_a_remote_worker_is_refused_a_loopback_target_before_any_load(tmp_path):
    import json

    with TwoHosts() as hosts:
        code, out, folder = master_and_remote_worker(tmp_path, hosts)
    assert code == 2, out
    run = json.loads((folder / "run.json").read_text())
    assert run["status"] == "failed"
    assert run["status_reason"].startswith(
        f"a worker on host {os.uname().nodename}/{hosts.ns} (another network namespace) cannot reach the embedded "
        "target at "
        "http://127.0.0.1:"
    )
    assert "give --target-bind an address of that host the workers reach" in run["status_reason"]
    assert run["requests"] == 0 and run["client_connections"]["opened"] == 0  # no load at all
    assert run["target_connections_accepted"] == 0
    errors = [line for line in out.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and run["status_reason"] in errors[0]


def test_a_target_bound_to_an_address_the_worker_reaches_is_counted_exactly(tmp_path):
    import json

    with TwoHosts() as hosts:
        code, out, folder = master_and_remote_worker(tmp_path, hosts, "--target-bind", hosts.here)
        run = json.loads((folder / "run.json").read_text())
    assert code == 0, out
    assert run["status"] == "completed", run["status_reason"]
    assert run["host"] == f"http://{hosts.here}:{run['host'].rsplit(':', 1)[1]}"
    assert run["target"]["bind"] == hosts.here
    assert run["requests"] == 10
    assert run["client_connections"]["opened"] == run["target_connections_accepted"] == 1
    # The worker's host is the other namespace, and its counts are the run's.
    (worker,) = run["workers"]
    master_host, worker_host = sorted(run["hosts"], key=lambda h: h["netns"] != namespace_of())
    assert worker_host["host"] == f"{os.uname().nodename}/{hosts.ns}" == worker["host"]
    assert worker_host["netns"] != namespace_of() and worker_host["workers"] == [worker["id"]]
    assert worker_host["opened"] == 1
    assert master_host["workers"] == [] and master_host["opened"] == 0 and master_host["writes_run_folder"]
    assert run["processes"] == 1 and run["pools"] == 1  # sequential.py: one user, its own pool
    # One sidecar per host: the worker's host was sampled by the worker, and its rows reached the
    # master's sockets.csv under its own host name, with its own kernel facts.
    assert worker_host["sampled_by"] == worker["id"] and worker_host["sidecar"]["status"] == "ok"
    assert worker_host["kernel"]["netns_id"] == worker_host["netns"] and "baseline" in worker_host["kernel"]
    samples = pd.read_csv(folder / "sockets.csv")
    by_host = {host: rows for host, rows in samples.groupby("host")}
    assert set(by_host) == {master_host["host"], worker_host["host"]}
    assert len(by_host[worker_host["host"]]) == worker_host["sidecar"]["rows"] >= 2
    there, here = by_host[worker_host["host"]], by_host[master_host["host"]]
    assert there["ports_in_use"].max() == 1 and there["client_established"].max() == 1  # the one connection
    assert here["client_established"].max() == 0 and here["ports_in_use"].max() == 0  # no client here
    assert there["server_established"].max() == 0 and here["server_established"].max() == 1  # the target is here


@pytest.mark.parametrize("value", ["0.0.0.0", "localhost", "::"])
def test_a_target_bind_that_is_no_usable_address_is_refused_in_one_line(run_locust, value):
    r = run_locust("sequential.py", "--target-bind", value, "-u", "1")
    assert r.returncode == 2 and r.folder is None and "Traceback" not in r.output
    errors = [line for line in r.output.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, r.output
    assert errors[0].endswith(
        f"error: argument --target-bind: {value!r} is not valid; use an IP address of this host that clients can "
        "reach (not a wildcard such as 0.0.0.0)"
    )


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make tools installs it as root)")
def test_the_connections_tab_shows_a_row_per_host(tmp_path):
    """A web-UI master here and a worker on the other host: the tab lists both hosts, each with its own
    counts and range, the same as run.json's."""
    import json
    import urllib.parse
    import urllib.request

    from conftest import ROOT, wait_for
    from playwright.sync_api import sync_playwright

    port, web_port, run_dir = free_port(), free_port(), tmp_path / "runs"
    with TwoHosts() as hosts:
        master = subprocess.Popen(
            locust_command("concurrent.py", "--master", "--master-bind-host", hosts.here, "--master-bind-port",
                           str(port), "--web-host", "127.0.0.1", "--web-port", str(web_port), "--run-dir",
                           str(run_dir), "--target-bind", hosts.here),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path, start_new_session=True,
        )  # fmt: skip
        worker = subprocess.Popen(
            ["ip", "netns", "exec", hosts.ns,
             *locust_command("concurrent.py", "--worker", "--master-host", hosts.here, "--master-port", str(port))],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path, start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{web_port}"
        try:

            def one_worker() -> bool:
                try:
                    with urllib.request.urlopen(f"{url}/stats/requests", timeout=2) as resp:
                        return len(json.loads(resp.read()).get("workers", [])) == 1
                except OSError:
                    return False

            wait_for(one_worker, "the worker to join the master")
            form = urllib.parse.urlencode({"user_count": 10, "spawn_rate": 10}).encode()
            urllib.request.urlopen(f"{url}/swarm", data=form, timeout=10).read()
            folder = wait_for(lambda: next((p.parent for p in run_dir.glob("*/run.json") if json.loads(
                p.read_text())["status"] != "running"), None), "the run to finish", timeout_s=60)  # fmt: skip
            run = json.loads((folder / "run.json").read_text())

            def stopped() -> bool:  # Locust caches /stats/requests 2 s; its page follows that state
                with urllib.request.urlopen(f"{url}/stats/requests", timeout=5) as resp:
                    return json.loads(resp.read())["state"] == "stopped"

            wait_for(stopped, "Locust's stats to say stopped")
            metrics = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
                page = browser.new_page(viewport={"width": 1366, "height": 900})
                page.goto(f"{url}/?tab=connections")
                page.wait_for_selector("#keepalive-lab-hosts tr:nth-child(3)", timeout=20000)
                rows = page.locator("#keepalive-lab-hosts tr").all_inner_texts()
                (ROOT / "reports" / "test-artifacts").mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ROOT / "reports" / "test-artifacts" / "web-ui-hosts.png"), full_page=True)
                browser.close()
        finally:
            for proc in (master, worker):
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert run["status"] == "completed", run["status_reason"]
    by_host = {h["host"]: h for h in run["hosts"]}
    there = f"{os.uname().nodename}/{hosts.ns}"
    assert set(by_host) == {os.uname().nodename, there}
    cells = {row.split("\t")[0].split(" (")[0]: row.split("\t") for row in rows[1:]}
    assert set(cells) == set(by_host), rows
    # Host, Workers, Connections, ...: the worker's host holds the run's 10 users' connections.
    assert cells[there][1:3] == ["1", str(by_host[there]["opened"])] and by_host[there]["opened"] >= 2
    assert cells[os.uname().nodename][1:3] == ["0", "0"]
    assert cells[there][6] == f"{by_host[there]['kernel']['port_range']:,}"
    # /metrics: a series per host, the same numbers.
    opened = {m.group(1): float(m.group(2)) for m in re.finditer(
        r'keepalive_connections_opened_total\{host="([^"]+)",scenario="concurrent"\} (\S+)', metrics)}  # fmt: skip
    assert opened == {there: by_host[there]["opened"]}, metrics
    ranges = set(re.findall(r'keepalive_port_range\{host="([^"]+)"', metrics))
    assert ranges == set(by_host), metrics
