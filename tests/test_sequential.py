"""The seed's first experiment, run with the real `locust` command against the embedded target."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess

import pytest
from conftest import locust_command, only_run_folder, start_locust

FAST = ("--think-time", "0.02")
LOCUST_STATS_COLUMNS = ["Type", "Name", "Request Count", "Failure Count", "Median Response Time"]


def test_drain_full_reuses_one_connection(run_locust):
    r = run_locust("sequential.py", *FAST)
    assert r.returncode == 0, r.output
    assert r.accepted == 1
    assert r.target["requests"] == 10
    assert r.run["client_connections"]["opened"] == 1
    assert r.run["status"] == "completed"
    assert r.target["requests_per_connection"] == {"10": 1}


@pytest.mark.parametrize("drain", ["none", "close"])
def test_undrained_body_opens_a_connection_per_request(run_locust, drain):
    r = run_locust("sequential.py", *FAST, "--drain", drain)
    assert r.returncode == 0, r.output
    assert r.accepted == 10
    assert r.run["client_connections"]["opened"] == 10
    assert r.target["closed_by"]["server"] == 0  # the client closed them all


@pytest.mark.parametrize("args", [("--keep-alive", "off"), ("--target-mode", "http10")])
def test_server_closes_every_connection(run_locust, args):
    r = run_locust("sequential.py", *FAST, *args)
    assert r.returncode == 0, r.output
    assert r.accepted == 10
    assert r.target["closed_by"] == {"client": 0, "server": 10, "client_reset": 0}


def test_close_after_three_with_nine_requests(run_locust):
    r = run_locust("sequential.py", *FAST, "--target-mode", "close-after:3", "--requests-per-user", "9")
    assert r.returncode == 0, r.output
    assert r.accepted == 3
    assert r.target["requests"] == 9
    assert r.target["requests_per_connection"] == {"3": 3}


def test_run_folder_is_complete(run_locust):
    r = run_locust("sequential.py", *FAST, "--requests-per-user", "3")
    names = {p.name for p in r.folder.iterdir()}
    assert names == {
        "run.json",
        "stats.csv",
        "stats_history.csv",
        "failures.csv",
        "exceptions.csv",
        "locust.html",
        "target.json",
        "sockets.csv",
        "connections.csv",
    }
    run = r.run
    with open(r.folder / "connections.csv") as f:
        (row,) = list(csv.DictReader(f))  # one request name: the scenario's "/"
    assert (row["name"], row["requests"], row["new_connection_requests"], row["connections_opened"]) == (
        "/",
        "3",
        "1",
        "1",
    )
    assert float(row["reuse_pct"]) == pytest.approx(100 * 2 / 3, abs=0.01) and float(row["connect_ms_mean"]) > 0
    assert run["scenario"] == "sequential" and run["user_class"] == "SequentialUser"
    assert run["settings"]["requests_per_user"] == 3 and run["settings"]["think_time_s"] == 0.02
    lo, hi = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    assert run["kernel"]["ip_local_port_range"] == [lo, hi] and run["kernel"]["port_range"] == hi - lo + 1
    assert run["target"]["embedded"] is True and run["host"].startswith("http://127.0.0.1:")
    assert {"python", "locust"} <= set(run["versions"])
    assert set(run["kernel"]["baseline"]) == {
        "active_opens",
        "passive_opens",
        "attempt_fails",
        "estab_resets",
        "tw_total",
    }
    assert run["start"] < run["end"]
    with open(r.folder / "stats.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][:5] == LOCUST_STATS_COLUMNS
    assert rows[1][:4] == ["GET", "/", "3", "0"]
    assert rows[-1][1] == "Aggregated"
    with open(r.folder / "stats_history.csv") as f:
        assert next(csv.reader(f))[:3] == ["Timestamp", "User Count", "Type"]
    assert "<html" in (r.folder / "locust.html").read_text()[:500].lower()
    assert not [p for p in r.folder.iterdir() if p.name.startswith(".")]


BAD_OPTIONS = [
    (("--pool-size", "0"), "--pool-size: '0'"),
    (("--pool-size", "abc"), "--pool-size: 'abc'"),
    (("--drain", "maybe"), "--drain: 'maybe' is not valid; choose one of: full, close, none"),
    (("--think-time", "-1"), "--think-time: '-1'"),
    (("--target-mode", "close-after:x"), "--target-mode: 'close-after:x'"),
    (("--client", "fasthttp"), "--pool-full 'discard' does not work with --client fasthttp"),
]


@pytest.mark.parametrize("args, needle", BAD_OPTIONS)
def test_bad_option_one_line_exit_2_no_run(run_locust, args, needle):
    r = run_locust("sequential.py", *args)
    assert r.returncode == 2
    errors = [line for line in r.output.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, r.output
    assert needle in errors[0]
    assert "Traceback" not in r.output
    assert r.folder is None  # no load started, no run folder


def test_ctrl_c_leaves_a_complete_folder_marked_interrupted(tmp_path):
    proc, run_dir = start_locust(tmp_path, "sequential.py", "--think-time", "0.5")
    os.killpg(proc.pid, signal.SIGINT)  # the whole group: locust, its target and its sidecar
    out, _ = proc.communicate(timeout=30)
    folder = only_run_folder(run_dir)
    run = json.loads((folder / "run.json").read_text())
    target = json.loads((folder / "target.json").read_text())
    assert run["status"] == "interrupted", out
    assert 1 <= run["requests"] < 10
    assert target["connections_accepted"] == 1
    assert (folder / "stats.csv").exists() and (folder / "locust.html").exists()
    assert subprocess.run(["pgrep", "-f", f"keepalive_lab.target.*--parent-pid {proc.pid}"]).returncode == 1


def test_target_killed_mid_run_marks_the_run_failed(tmp_path):
    proc, run_dir = start_locust(tmp_path, "sequential.py", "--think-time", "0.3")
    killed = subprocess.run(["pkill", "-KILL", "-f", f"keepalive_lab.target.*--parent-pid {proc.pid}"])
    assert killed.returncode == 0
    out, _ = proc.communicate(timeout=30)
    run = json.loads((only_run_folder(run_dir) / "run.json").read_text())
    assert run["status"] == "failed", out
    assert "target died" in run["status_reason"]
    assert proc.returncode == 1
    assert (only_run_folder(run_dir) / "stats.csv").exists()


def test_crashing_user_class_ends_the_run_as_failed(tmp_path):
    locustfile = tmp_path / "broken.py"
    locustfile.write_text(
        "from locust import task\n"
        "from keepalive_lab.users import LabUser\n\n"
        "class BrokenUser(LabUser):\n"
        "    requests_per_user = 3\n\n"
        "    def __init__(self, environment):\n"
        "        super().__init__(environment)\n"
        "        raise RuntimeError('boom')\n\n"
        "    @task\n"
        "    def get(self):\n"
        "        self.fetch()\n"
    )
    run_dir = tmp_path / "runs"
    proc = subprocess.run(
        [*locust_command("sequential.py")[:3], "-f", str(locustfile), "--headless", "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    run = json.loads((only_run_folder(run_dir) / "run.json").read_text())
    assert run["status"] == "failed"
    assert proc.returncode != 0
