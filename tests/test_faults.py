"""Faults provoked for real, each a row of the README's table "When this happens": the status, the
exit code and the files a user gets."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import locust_command, only_run_folder, wait_for

from analysis.load import load_runs

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare for a private tmpfs"
)


@needs_root
def test_a_disk_that_fills_during_the_run_stops_the_load_and_leaves_a_whole_run_json(tmp_path):
    """The run folder on a 1 MiB tmpfs already 70 % full: the run stops itself before the disk is
    full, says why, and its run.json is whole; Locust exits 1."""
    disk, kept = "/mnt/keepalive-lab-full", tmp_path / "kept"
    run = shlex.join(locust_command("concurrent.py", "--headless", "--run-dir", f"{disk}/runs", "-u", "10",
                                    "--requests-per-user", "0", "-t", "60s", "--sample-interval", "0.002"))  # fmt: skip
    script = (f"mkdir -p {disk} && mount -t tmpfs -o size=1m tmpfs {disk} && "
              f"head -c 716800 /dev/zero > {disk}/filler && {run}; "
              f"code=$?; cp -r {disk}/runs {kept}; exit $code")  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    took = time.monotonic() - started
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert took < 50, out  # stopped by the full disk, well before -t
    folder = only_run_folder(kept)
    run = json.loads((folder / "run.json").read_text())  # whole: written to a temporary file, then renamed
    assert run["status"] == "failed"
    assert run["status_reason"].startswith("the run folder's disk is nearly full (")
    assert "the load stopped so that the folder can be finished" in run["status_reason"]
    assert "Traceback" not in out and "Uncaught exception" not in out
    errors = [line for line in out.splitlines() if "ERROR" in line]
    assert "disk is nearly full" in errors[0], errors
    # What no longer fits (Locust's own HTML report is larger than what is left) is named, one line each.
    assert all("cannot write" in line and "No space left on device" in line for line in errors[1:]), errors
    assert (folder / "sockets.csv").stat().st_size > 0 and (folder / "connections.csv").exists()


def test_a_run_dir_that_cannot_be_written_is_refused_before_any_load(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for value, reason in ((blocker / "runs", "cannot be written (Not a directory)"), (blocker, "is a file")):
        proc = subprocess.run(locust_command("sequential.py", "--headless", "--run-dir", str(value)),
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)  # fmt: skip
        out = proc.stdout + proc.stderr
        assert proc.returncode == 2 and "Traceback" not in out
        lines = [line for line in out.splitlines() if line.strip()]
        assert len(lines) == 1 and f"argument --run-dir: {str(value)!r} {reason}" in lines[0], out


def test_locust_killed_leaves_no_helper_and_a_folder_analysis_calls_crashed(tmp_path):
    run_dir = tmp_path / "runs"
    proc = subprocess.Popen(locust_command("concurrent.py", "--headless", "--run-dir", str(run_dir), "-u", "4",
                                           "--requests-per-user", "0", "-t", "60s"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
                            start_new_session=True)  # fmt: skip
    try:
        wait_for(lambda: list(run_dir.glob("*/sockets.csv")), "the run to start")
        helpers = [p for p in _children(proc.pid) if p != proc.pid]
        assert len(helpers) >= 2  # the embedded target and the sidecar
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        killed = time.monotonic()
        wait_for(lambda: not any(_alive(p) for p in helpers), "the helpers to exit", timeout_s=5)
        assert time.monotonic() - killed <= 2.5
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    folder = only_run_folder(run_dir)
    assert json.loads((folder / "run.json").read_text())["status"] == "running"
    loaded = load_runs([folder])
    (skipped,) = loaded.skipped
    assert (
        str(skipped)
        == f"{folder / 'run.json'}: crashed: no end (status 'running': Locust was killed before the run ended)"
    )


def _children(pid: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


class ResettingServer:
    """On 127.0.0.1: every other connection gets its response whole (and is closed); the others get
    the headers and part of the body, then a reset (RST: SO_LINGER 0) in the middle of the response."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.reset = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import socket
        import struct

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                conn.recv(65536)
                if self.accepted % 2:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part of the bo")
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.reset += 1
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\nHello world")

    def close(self) -> None:
        self.sock.close()


def test_a_server_that_resets_mid_response_gives_failures_with_their_reason_and_exact_counts(run_locust):
    server = ResettingServer()
    try:
        r = run_locust("sequential.py", "--host", f"http://127.0.0.1:{server.port}", "--think-time", "0")
    finally:
        server.close()
    assert r.returncode == 1, r.output  # Locust's own exit code when requests failed
    assert r.run["status"] == "completed" and r.run["requests"] == 10 and r.run["failures"] == 5
    failures = (r.folder / "failures.csv").read_text()
    assert "Connection broken" in failures or "ConnectionResetError" in failures or "IncompleteRead" in failures
    assert r.run["client_connections"]["opened"] == server.accepted == 10  # counted exactly, resets and all
    assert server.reset == 5


@pytest.mark.parametrize("client", ["requests", "fasthttp"])
def test_a_server_that_never_answers_times_requests_out_and_the_run_fails_saying_so(run_locust, client):
    """A server that accepts and never answers: each request fails after --request-timeout, the run ends
    by its budget, failed: every request failed, with the time-out as the reason."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)  # the kernel accepts the connections; nobody reads or answers
    try:
        extra = ["--pool-full", "block"] if client == "fasthttp" else []
        r = run_locust("sequential.py", "--host", f"http://127.0.0.1:{server.getsockname()[1]}", "--client", client,
                       "--request-timeout", "0.5", "--requests-per-user", "3", "--think-time", "0", *extra,
                       timeout_s=60)  # fmt: skip
    finally:
        server.close()
    assert r.returncode == 1, r.output
    assert r.run["settings"]["request_timeout_s"] == 0.5
    assert r.run["status"] == "failed" and r.run["requests"] == r.run["failures"] == 3
    assert r.run["status_reason"].startswith("every request failed: ")
    assert "timed out" in r.run["status_reason"].lower() or "timeout" in r.run["status_reason"].lower()
    assert r.run["duration_s"] < 10


def test_a_report_of_millions_of_sample_rows_stays_within_its_memory_bound(tmp_path):
    """The README's bound (benchmarks/report_memory.py measures 10 million rows): here a million rows
    of two hosts, appended out of time order as a master writes them; pandas' defaults take about
    650 bytes a row there, over the bound."""
    from benchmarks.report_memory import FIXED_BYTES, ROW_BYTES, report_peak, write_run

    rows = 1_000_000
    tiny, big = tmp_path / "20261122T000000Z-tiny", tmp_path / "20261122T000001Z-big"
    write_run(tiny, 10, 1)
    write_run(big, rows, 2)
    base = report_peak(tiny, tmp_path / "out-tiny")
    peak = report_peak(big, tmp_path / "out")
    assert peak - base <= FIXED_BYTES + ROW_BYTES * rows, f"{(peak - base) / 2**20:.0f} MiB over the 10-row report"
    hosts = pd.read_csv(tmp_path / "out" / "hosts.csv")
    assert hosts["host"].tolist() == ["host-0", "host-1"]
    # Row i holds i % 28,000 client TIME_WAIT, in batches of 10 rows a host: host-0 the even batches
    assert hosts["peak_client_time_wait"].tolist() == [27_989, 27_999]
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert summary["client_hosts"].tolist() == [2]
