"""The port-exhaustion lab: real errno 99 in a private namespace, the control, the refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psutil
import pytest
from conftest import LOCUSTFILES, NETNS, ROOT, wait_for

from keepalive_lab.netns import namespace_of, processes_in

LAB = [sys.executable, "-m", "keepalive_lab.lab"]
requires_lab = pytest.mark.skipif(not NETNS, reason="the lab needs root and `unshare --net`")


def lab_locust(tmp_path, *args, port_range="40000-40499", tw_reuse="0"):
    cmd = [*LAB, "--port-range", port_range, "--tw-reuse", tw_reuse, "--", sys.executable, "-m", "locust", "-f",
           str(LOCUSTFILES / "exhaustion.py"), "--headless", "--run-dir", str(tmp_path / "runs"), *args]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    run = json.loads(next((tmp_path / "runs").glob("*/run.json")).read_text())
    return proc, run


def ours(tmp_path) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]


def namespace_gone(namespace: int) -> None:
    wait_for(lambda: not processes_in(namespace), f"network namespace {namespace} to be gone", timeout_s=5)


@requires_lab
def test_500_port_range_runs_out_after_about_500_connections(tmp_path):
    proc, run = lab_locust(tmp_path)
    assert run["kernel"]["ip_local_port_range"] == [40000, 40499] and run["kernel"]["tcp_tw_reuse"] == 0
    assert run["kernel"]["isolated"] is True
    conns = run["client_connections"]
    assert 450 <= conns["opened_before_addr_not_available"] <= 500
    assert conns["opened"] <= 500
    assert conns["connect_errors_by_errno"]["99"] == conns["connect_errors"] > 0
    assert conns["first_addr_not_available_ts"] - conns["first_connect_ts"] < 10
    failures = (next((tmp_path / "runs").glob("*/failures.csv"))).read_text()
    assert "Cannot assign requested address" in failures  # its own failure row
    assert run["kernel"]["netns_id"] != namespace_of()
    namespace_gone(run["kernel"]["netns_id"])
    assert ours(tmp_path) == []


@requires_lab
def test_control_with_a_tuned_pool_has_no_errors(tmp_path):
    proc, run = lab_locust(tmp_path, "--drain", "full")
    assert proc.returncode == 0, proc.stderr
    assert run["client_connections"]["opened"] == 20
    assert run["client_connections"]["connect_errors"] == 0
    assert run["failures"] == 0 and run["requests"] == 3000


@requires_lab
def test_passes_the_exit_code_and_sets_the_namespace():
    script = "cat /proc/sys/net/ipv4/ip_local_port_range /proc/sys/net/ipv4/tcp_tw_reuse; ip -o link | wc -l; exit 7"
    proc = subprocess.run([*LAB, "--port-range", "41000-41999", "--tw-reuse", "1", "--", "sh", "-c", script],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 7
    assert proc.stdout.split() == ["41000", "41999", "1", "1"]  # range, tw_reuse, only loopback


@requires_lab
def test_ctrl_c_and_a_crashing_command_leave_nothing_behind(tmp_path):
    marker = f"sleep 300 # {tmp_path}"
    proc = subprocess.Popen([*LAB, "--", "sh", "-c", f"{marker} & sleep 300"], start_new_session=True)
    shell = wait_for(lambda: [p for p in ours(tmp_path) if p.info["cmdline"][0] == "sh"], "the command")[0]
    namespace = namespace_of(shell.pid)
    assert namespace is not None and namespace != namespace_of()
    # unshare, the command's shell and its two sleeps: the command runs inside
    wait_for(lambda: len(processes_in(namespace)) >= 3, "the command in its namespace", timeout_s=10)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=30)
    namespace_gone(namespace)
    assert ours(tmp_path) == []
    script = "import os; print(os.stat('/proc/self/ns/net').st_ino, flush=True); os.abort()"
    crash = subprocess.run([*LAB, "--", sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert crash.returncode == 128 + signal.SIGABRT
    namespace_gone(int(crash.stdout))


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--port-range", "40000", "--", "true"], "'40000' is not a port range"),
        (["--port-range", "60000-50000", "--", "true"], "'60000-50000' is not a port range"),
        (["--tw-reuse", "3", "--", "true"], "invalid choice: 3"),
        ([], "no command"),
    ],
)
def test_bad_arguments_one_line_exit_2(args, needle):
    proc = subprocess.run([*LAB, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to drop its privileges")
def test_refuses_clearly_without_root():
    # Root's user id, stripped of every capability: unprivileged, and still able to read the
    # checkout and the interpreter wherever they live.
    drop = ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--"]
    proc = subprocess.run([*drop, *LAB, "--", "true"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "python -m keepalive_lab.lab: error: needs root to create a network namespace and set its sysctls; "
        "run it as root (e.g. sudo)"
    )
