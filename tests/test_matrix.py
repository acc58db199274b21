"""The matrix runner: end to end, bad files, time bounds, and Ctrl-C leaving nothing behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import psutil
import pytest
from conftest import NETNS, ROOT, in_sockets_csv, wait_for

from keepalive_lab.netns import namespace_of, processes_in

MATRIX = [sys.executable, "-m", "keepalive_lab.matrix"]

TWO = """
[defaults]
timeout_s = 60
options = { think-time = "0.02" }

[[scenarios]]
name = "seq-full"
locustfile = "locustfiles/sequential.py"
options = { drain = "full" }
rules = { connections_opened = "== 1" }

[[scenarios]]
name = "seq-none"
locustfile = "locustfiles/sequential.py"
options = { drain = "none" }
rules = { connections_opened = "== 10", peak_client_time_wait = "== 10" }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "matrix.toml"
    path.write_text(text)
    return path


def run_matrix(tmp_path, text, *extra, timeout=240):
    cmd = [
        *MATRIX,
        str(write(tmp_path, text)),
        "--run-dir",
        str(tmp_path / "runs"),
        "--out",
        str(tmp_path / "out"),
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def run_folders(tmp_path: Path) -> dict[str, dict]:
    return {p.parent.parent.name: json.loads(p.read_text()) for p in (tmp_path / "runs").glob("matrix-*/*/*/run.json")}


def test_two_scenario_matrix_end_to_end_with_gate(tmp_path):
    proc = run_matrix(tmp_path, TWO, "--check", "--junit", str(tmp_path / "junit.xml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[1/2] seq-full" in proc.stdout and "[2/2] seq-none" in proc.stdout
    assert "3 passed, 0 failed" in proc.stdout
    runs = run_folders(tmp_path)
    assert set(runs) == {"seq-full", "seq-none"}
    assert all(r["status"] == "completed" for r in runs.values())
    assert all(r["kernel"]["isolated"] is NETNS for r in runs.values())
    assert (tmp_path / "out" / "index.html").exists() and (tmp_path / "junit.xml").exists()


def test_only_runs_the_named_scenario(tmp_path):
    proc = run_matrix(tmp_path, TWO, "--only", "seq-none")
    assert proc.returncode == 0, proc.stderr
    assert set(run_folders(tmp_path)) == {"seq-none"}


BAD = """
[[scenarios]]
name = "a"
locustfile = "locustfiles/nope.py"
options = { pool-sise = "2", drain = "maybe" }
rules = { bogus = "== 1" }

[[scenarios]]
name = "b"
locustfile = "locustfiles/sequential.py"
users = 0
colour = "red"
"""


def test_bad_matrix_is_refused_before_anything_runs(tmp_path):
    proc = run_matrix(tmp_path, BAD)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    expected = [
        "locustfile 'locustfiles/nope.py' does not exist",
        "unknown option 'pool-sise'",
        "--drain 'maybe' is not valid; choose one of: full, close, none",
        "unknown metric 'bogus'",
        "users = 0 is not valid",
        "unknown key 'colour'",
    ]
    assert len(lines) == len(expected), proc.stderr
    for needle in expected:
        assert sum(needle in line for line in lines) == 1, needle
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text, needle", [("[[scenarios]\n", "not valid TOML"), ("x = 1\n", "no [[scenarios]]")])
def test_broken_matrix_files(tmp_path, text, needle):
    proc = run_matrix(tmp_path, text)
    assert proc.returncode == 2 and needle in proc.stderr


def test_hung_scenario_is_stopped_at_its_bound_and_the_rest_go_on(tmp_path):
    text = """
[[scenarios]]
name = "slow"
locustfile = "locustfiles/sequential.py"
timeout_s = 3
options = { think-time = "1" }

[[scenarios]]
name = "fast"
locustfile = "locustfiles/sequential.py"
options = { think-time = "0.02" }
"""
    proc = run_matrix(tmp_path, text)
    runs = run_folders(tmp_path)
    assert runs["slow"]["status"] == "failed"
    assert "time bound" in runs["slow"]["status_reason"]
    assert runs["fast"]["status"] == "completed"
    assert "stopped at its time bound (3 s)" in proc.stdout


def stray(tag: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", tag], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def test_ctrl_c_stops_the_run_leaves_nothing_and_still_reports(tmp_path):
    text = TWO.replace('think-time = "0.02"', 'think-time = "1"')
    cmd = [*MATRIX, str(write(tmp_path, text)), "--run-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    first = in_sockets_csv(tmp_path / "runs", lambda r: int(r["client_established"]), "matrix-*/seq-full/*/sockets.csv")
    wait_for(first, "the first scenario's connection")

    def helpers() -> list[psutil.Process] | None:
        tree = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in tree)
        wanted = ("locust", "keepalive_lab.target", "keepalive_lab.sidecar")
        return tree if all(name in names for name in wanted) else None

    tree = wait_for(helpers, "locust, its target and its sidecar")
    own = namespace_of()
    namespaces = {ns for p in tree if (ns := namespace_of(p.pid)) is not None and ns != own}
    assert len(namespaces) == (1 if NETNS else 0)  # the scenario's private namespace, when root
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "Interrupted" in out
    runs = run_folders(tmp_path)
    assert set(runs) == {"seq-full"} and runs["seq-full"]["status"] == "interrupted"
    assert (tmp_path / "out" / "index.html").exists()
    gone, alive = psutil.wait_procs(tree, timeout=3)
    assert alive == []  # locust, its target and its sidecar (and unshare's shell) all ended
    assert stray(str(tmp_path)) == []
    assert [pid for ns in namespaces for pid in processes_in(ns)] == []  # its namespace is gone


SEED = ROOT / "matrices" / "seed.toml"
REUSING = ["sequential-drain-full", "concurrent-pool-10", "concurrent-per-user-pools"]
SERVER_CLOSES = ["sequential-keepalive-off", "server-close-http10"]


def test_seed_reusing_and_server_close_runs_project_no_client_port_use(tmp_path):
    """The seed matrix's own rules hold, and its table says "never" where the report has nothing to project."""
    cmd = [*MATRIX, str(SEED), "--only", *REUSING, *SERVER_CLOSES, "sequential-drain-close", "--check",
           "--run-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("scenario")
    for name in REUSING + SERVER_CLOSES:
        assert summary.loc[name, "projected_port_use_pct"] == 0, name
        assert pd.isna(summary.loc[name, "seconds_to_exhaustion"]), name
        assert summary.loc[name, "client_closes"] == 0, name
        row = next(line for line in proc.stdout.splitlines() if line.startswith(name + " "))
        assert " never " in row, row
    churning = summary.loc["sequential-drain-close"]
    assert churning["client_closes_per_request"] == 1 and churning["projected_port_use_pct"] > 0
    table = next(line for line in proc.stdout.splitlines() if line.startswith("sequential-drain-close "))
    assert f"{churning['projected_port_use_pct']:.0f}%" in table  # the table shows the report's figure


def test_report_finds_run_folders_at_any_depth(tmp_path):
    """make report after make demo: the matrix nests runs as runs/matrix-*/<scenario>/<run>/."""
    proc = subprocess.run([*MATRIX, str(SEED), "--only", "sequential-drain-full", "--run-dir", "runs"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    nested = list((tmp_path / "runs").glob("matrix-*/sequential-drain-full/*/run.json"))
    assert len(nested) == 1
    report = subprocess.run([sys.executable, "-m", "analysis", "report", "-o", "again"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert "(1 run, 0 skipped" in report.stdout
    assert (tmp_path / "again" / "index.html").exists()
