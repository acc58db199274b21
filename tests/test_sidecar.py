"""The socket sidecar, on real sockets in private network namespaces, where every count is exact."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import only_run_folder, requires_netns, start_locust

from keepalive_lab.netns import in_namespace
from keepalive_lab.schema import SOCKETS_COLUMNS as COLUMNS

HERE = Path(__file__).resolve().parent
SIDECAR = [sys.executable, "-m", "keepalive_lab.sidecar"]


def scenario(mode: str, n: int) -> dict:
    proc = subprocess.run(
        in_namespace([sys.executable, str(HERE / "sockets_scenario.py"), mode, str(n)], tw_reuse=0),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == list(COLUMNS)
    return rows


@requires_netns
def test_client_closes_first_time_wait_on_the_client():
    s = scenario("client-closes", 25)
    assert s["netlink"]["client_time_wait"] == 25
    assert s["netlink"]["server_time_wait"] == 0
    assert s["netlink"]["ports_in_use"] == 25  # each TIME_WAIT still holds its ephemeral port
    assert s["tw_total"] == 25


@requires_netns
def test_server_closes_first_time_wait_on_the_server():
    s = scenario("server-closes", 25)
    assert s["netlink"]["server_time_wait"] == 25
    assert s["netlink"]["client_time_wait"] == 0
    assert s["netlink"]["ports_in_use"] == 0  # the client's ports are free again


@requires_netns
def test_established_counts_ports_and_kernel_counters():
    s = scenario("established", 12)
    assert s["netlink"]["client_established"] == 12
    assert s["netlink"]["server_established"] == 12
    assert s["netlink"]["ports_in_use"] == 12
    assert s["active_opens"] == 12
    assert s["passive_opens"] == 12


@requires_netns
@pytest.mark.parametrize("mode", ["client-closes", "server-closes", "established", "mixed"])
def test_netlink_and_psutil_give_identical_rows(mode):
    s = scenario(mode, 30)
    assert s["netlink_again"] == s["psutil"]
    if mode == "mixed":
        assert s["psutil"]["client_close_wait"] == 10
        assert s["psutil"]["server_other"] == 10  # FIN_WAIT2 on the server side
        assert s["psutil"]["client_time_wait"] == 10


@requires_netns
def test_wraps_a_command_and_passes_its_exit_code(tmp_path):
    out = tmp_path / "s.csv"
    # The client holds 5 connections open until the sidecar has sampled them, then exits 7.
    client = (
        "import csv, socket, sys, time\n"
        "srv = socket.socket(); srv.bind(('127.0.0.1', 9090)); srv.listen(16)\n"
        "cs = [socket.create_connection(('127.0.0.1', 9090)) for _ in range(5)]\n"
        "def sampled():\n"
        "    lines = [x for x in open(sys.argv[1]).readlines() if x.endswith('\\n')]\n"
        "    return any(row['client_established'] == '5' for row in csv.DictReader(lines))\n"
        "deadline = time.monotonic() + 20\n"
        "while not sampled() and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "raise SystemExit(7)\n"
    )
    cmd = [*SIDECAR, "--port", "9090", "--out", str(out), "--interval", "0.05", "--", sys.executable, "-c", client,
           str(out)]  # fmt: skip
    proc = subprocess.run(in_namespace(cmd), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 7, proc.stderr
    rows = read_rows(out)
    assert len(rows) >= 3
    assert [int(r["client_established"]) for r in rows].count(5) >= 1
    assert max(int(r["client_established"]) for r in rows) == 5
    assert int(rows[-1]["client_established"]) == 0  # the last sample follows the command's exit
    assert int(rows[-1]["active_opens"]) - int(rows[0]["active_opens"]) == 5


def test_count_and_interval_zero(tmp_path):
    out = tmp_path / "s.csv"
    proc = subprocess.run(
        [*SIDECAR, "--port", "9", "--out", str(out), "--interval", "0", "--count", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(out)
    assert len(rows) == 5
    assert all(float(r["sample_ms"]) > 0 for r in rows)


def test_exits_when_its_parent_is_killed(tmp_path):
    out = tmp_path / "s.csv"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from keepalive_lab.sidecar import SidecarProcess\n"
            f"car = SidecarProcess(9, {str(out)!r}, 0.05)\n"
            "car.wait_first_row(10)\n"
            "print(car.proc.pid, flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    sidecar_pid = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and _alive(sidecar_pid):
        time.sleep(0.05)
    assert not _alive(sidecar_pid)
    rows = read_rows(out)  # still parseable: every row whole
    assert all(len(r) == len(COLUMNS) and None not in r.values() for r in rows)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--port", "0", "--out", "x.csv"], "'0' is not a TCP port"),
        (["--port", "http", "--out", "x.csv"], "'http' is not a TCP port"),
        (["--port", "80", "--out", "x.csv", "--interval", "-1"], "'-1' is not a number of seconds"),
        (["--port", "80", "--out", "x.csv", "--count", "two"], "'two' is not a whole number"),
        (["--port", "80", "--out", "x.csv", "--method", "ss"], "invalid choice: 'ss'"),
        (["--port", "80", "--out", "."], "is a folder"),
        (["--out", "x.csv"], "the following arguments are required: --port"),
        (["--port", "80", "--out", "x.csv", "--", "/no/such/program"], "cannot run '/no/such/program'"),
    ],
)
def test_bad_arguments_one_line_exit_2(tmp_path, args, needle):
    proc = subprocess.run([*SIDECAR, *args], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert needle in proc.stderr


def client_time_wait(folder: Path) -> list[int]:
    return [int(r["client_time_wait"]) for r in read_rows(folder / "sockets.csv")]


@requires_netns
def test_concurrent_run_time_wait_piles_up_with_pool_2_and_stays_flat_with_pool_10(run_locust):
    args = ("--sample-interval", "0.02", "--think-time", "0.01")
    small = run_locust("concurrent.py", *args, isolated=True)
    assert small.run["kernel"]["isolated"] is True
    tw_small = client_time_wait(small.folder)
    assert tw_small[0] == 0
    assert tw_small == sorted(tw_small)  # only grows: each discard adds one
    assert tw_small[-1] == small.accepted  # every connection ended in a client-side TIME_WAIT
    assert len(set(tw_small)) >= 5  # and they piled up step by step while the test ran
    big = run_locust("concurrent.py", *args, "--pool-size", "10", isolated=True)
    tw_big = client_time_wait(big.folder)
    zeros = tw_big.index(next(v for v in tw_big if v))  # flat at 0 while the requests ran...
    assert zeros >= 5 and 0 not in tw_big[zeros:]
    assert tw_big[zeros:] == sorted(tw_big[zeros:]) and tw_big[-1] == 10  # ...then the pool's 10 closed


def test_no_sidecar_option(run_locust):
    r = run_locust("sequential.py", "--think-time", "0", "--no-sidecar")
    assert r.returncode == 0, r.output
    assert not (r.folder / "sockets.csv").exists()
    assert r.run["sidecar"] == {"status": "off"}


def test_no_sidecar_class_attribute(tmp_path):
    locustfile = tmp_path / "quiet.py"
    locustfile.write_text(
        "from locust import task\n"
        "from keepalive_lab.users import LabUser\n\n"
        "class QuietUser(LabUser):\n"
        "    no_sidecar = True\n"
        "    requests_per_user = 2\n\n"
        "    @task\n"
        "    def get(self):\n"
        "        self.fetch()\n"
    )
    run_dir = tmp_path / "runs"
    cmd = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "--run-dir", str(run_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    folder = only_run_folder(run_dir)
    run = json.loads((folder / "run.json").read_text())
    assert run["settings"]["no_sidecar"] is True and run["sidecar"] == {"status": "off"}
    assert not (folder / "sockets.csv").exists()


def test_a_failing_sidecar_does_not_stop_the_test(tmp_path):
    proc, run_dir = start_locust(tmp_path, "sequential.py", "--think-time", "0.3")
    killed = datetime.now(UTC)
    assert subprocess.run(["pkill", "-KILL", "-f", f"keepalive_lab.sidecar.*--parent-pid {proc.pid}"]).returncode == 0
    out, _ = proc.communicate(timeout=60)
    folder = only_run_folder(run_dir)
    run = json.loads((folder / "run.json").read_text())
    assert run["status"] == "completed", out
    assert run["requests"] == 10
    assert run["sidecar"]["status"] == "failed"
    # When it stopped, as the run noticed it (within its watchdog's half second), and the rows so far are kept.
    stopped = datetime.fromisoformat(run["sidecar"]["stopped_at"].replace("Z", "+00:00"))
    assert timedelta(0) <= stopped - killed < timedelta(seconds=2)
    rows = (folder / "sockets.csv").read_text().splitlines()
    assert len(rows) >= 2 and rows[0].startswith("ts,host,") and run["sidecar"]["rows"] == len(rows) - 1
    assert "sidecar failed" in out
