"""The multi-host lab (``make cluster``): a master and workers on simulated client hosts, nginx on a
server host, one host's port range narrowed. Counts against nginx's own accept counter; the host
that runs out is named; nothing is left behind."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import requires_netns

from keepalive_lab.peers import nginx_path

pytestmark = [
    requires_netns,
    pytest.mark.skipif(nginx_path() is None, reason="nginx is not installed: `make tools` installs nginx-light"),
]


def cluster(tmp_path, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "keepalive_lab.cluster", "--run-dir", str(tmp_path / "runs"), "--report",
         str(tmp_path / "report"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, **popen,
    )  # fmt: skip


def left_behind(prefix: str) -> tuple[list[str], list[str]]:
    """Namespaces and processes of the lab ``prefix`` still there."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()
    spaces = [line.split()[0] for line in listed if line.startswith(prefix)]
    procs = subprocess.run(["pgrep", "-af", f"keepalive-lab-cluster-|{prefix}"], capture_output=True, text=True)
    return spaces, [line for line in procs.stdout.splitlines() if "pgrep" not in line]


def test_four_workers_on_three_hosts_count_exactly_and_the_narrowed_host_is_named(tmp_path):
    proc = cluster(tmp_path, "--hosts", "3", "--workers", "4")
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    prefix = re.search(r"master on (klc\d+)-h1", out).group(1)
    accepted, opened = map(int, re.search(r"nginx accepted (\d+) connections during the run; the run counted "
                                          r"(\d+) opened", out).groups())  # fmt: skip
    assert accepted == opened > 200
    (folder,) = (tmp_path / "runs").iterdir()
    run = json.loads((folder / "run.json").read_text())
    hosts = {h["host"].split("/")[-1]: h for h in run["hosts"]}
    assert sorted(hosts) == [f"{prefix}-h1", f"{prefix}-h2", f"{prefix}-h3"]
    assert [len(hosts[f"{prefix}-h{i}"]["workers"]) for i in (1, 2, 3)] == [2, 1, 1]
    assert sum(h["opened"] for h in hosts.values()) == opened
    narrowed = hosts[f"{prefix}-h3"]
    assert narrowed["kernel"]["port_range"] == 200 and hosts[f"{prefix}-h1"]["kernel"]["port_range"] > 200
    # Each host sampled once: h1 by the master, h2 and h3 by one of their workers.
    assert hosts[f"{prefix}-h1"]["writes_run_folder"] and "sampled_by" not in hosts[f"{prefix}-h1"]
    assert narrowed["sampled_by"] in narrowed["workers"] and narrowed["sidecar"]["status"] == "ok"
    samples = pd.read_csv(folder / "sockets.csv")
    assert sorted(samples["host"].unique()) == sorted(h["host"] for h in run["hosts"])
    assert samples[samples["host"] == narrowed["host"]]["port_range"].eq(200).all()
    # Only the narrowed host ran out of ports: its errno 99 failures say where they happened.
    assert narrowed["addr_not_available"] > 0
    assert all(h["addr_not_available"] == 0 for name, h in hosts.items() if name != f"{prefix}-h3")
    failures = pd.read_csv(folder / "failures.csv")
    errno99 = failures[failures["Error"].str.contains("Errno 99|Cannot assign requested address")]
    assert errno99["Host"].unique().tolist() == [narrowed["host"]]
    assert errno99["Occurrences"].sum() == narrowed["addr_not_available"]
    # The report's verdict names that host and its own range; hosts.csv has a row per host.
    assert "ran out of ephemeral ports after" in out and f"host {narrowed['host']}'s 200-port range" in out
    per_host = pd.read_csv(tmp_path / "report" / "hosts.csv").set_index("host")
    assert per_host.loc[narrowed["host"], "port_range"] == 200
    assert per_host.loc[narrowed["host"], "addr_not_available_errors"] == narrowed["addr_not_available"]
    assert per_host["connections_opened"].sum() == opened
    summary = pd.read_csv(tmp_path / "report" / "summary.csv").iloc[0]
    assert summary["limiting_host"] == narrowed["host"] and summary["port_range"] == 200
    assert summary["client_hosts"] == 3
    # The gate bounds each host: the narrowed one fails, by name.
    rules = tmp_path / "rules.toml"
    rules.write_text('[scenarios.concurrent]\n"hosts.addr_not_available_errors" = "== 0"\n')
    check = subprocess.run([sys.executable, "-m", "analysis", "check", str(folder), "--rules", str(rules)],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert check.returncode == 1, check.stdout + check.stderr
    failed = [line for line in check.stdout.splitlines() if line.endswith("FAIL")]
    assert len(failed) == 1 and f"[{narrowed['host']}]" in failed[0]
    assert check.stdout.count("  pass") == 2
    assert left_behind(prefix) == ([], [])


def test_ctrl_c_leaves_an_interrupted_folder_and_nothing_else(tmp_path):
    proc = cluster(tmp_path, "--narrow-range", "20000", "--requests-per-user", "100000", "-t", "120")
    try:
        deadline = time.monotonic() + 60
        while not list((tmp_path / "runs").glob("*/sockets.csv")) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    prefix = re.search(r"master on (klc\d+)-h1", out).group(1)
    (folder,) = (tmp_path / "runs").iterdir()
    run = json.loads((folder / "run.json").read_text())
    assert run["status"] == "interrupted" and run["status_reason"] == "stopped by SIGINT before the test ended"
    assert left_behind(prefix) == ([], [])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hosts", "0"], "argument --hosts: '0' is not a whole number of at least 1"),
        (["--narrow-range", "5"], "argument --narrow-range: '5' is not a port count; use 10 to 20000"),
        (["-t", "2h"], "argument --run-time/-t: '2h' is not a run time; use seconds (20, 20s) or minutes (2m)"),
    ],
)
def test_bad_options_are_refused_in_one_line(tmp_path, args, message):
    proc = cluster(tmp_path, *args)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "Traceback" not in out
    assert out.count("\n") == 1 and message in out and not (tmp_path / "runs").exists()
