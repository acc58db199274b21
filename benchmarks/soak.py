"""A load test of the suite itself: ``concurrent.py`` for SOAK_S (10 minutes) at the highest rate
this machine sustains, the sidecar sampling at 10 Hz, against nginx on loopback.

Twenty users, each with a pool of one connection it keeps, no think time, no request budget (the
run time bounds it). Every SAMPLE_S the resident memory (RSS) and the open file descriptors of
Locust's process and of the sidecar are read. Goals: after the first minute, RSS grows under 10 %
(the highest reading against the one at 60 s) and the descriptors do not grow (at most
FD_SLACK above the count at 60 s, for a connection being replaced); the run folder is complete
(status completed, every file, a sample row for each 0.1 s within 5 %) and its report builds.
``KEEPALIVE_SOAK_S`` shortens the run to try it out.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from keepalive_lab.peers import NginxProcess, nginx_path
from keepalive_lab.schema import RUN_JSON, SOCKETS_CSV, STATS_CSV

ROOT = Path(__file__).resolve().parent.parent
CONCURRENT = ROOT / "locustfiles" / "concurrent.py"
SOAK_S = int(os.environ.get("KEEPALIVE_SOAK_S", "600"))
WARMUP_S = 60  # growth is measured against the readings at this time
SAMPLE_S = 5.0
INTERVAL_S = 0.1  # the sidecar's sampling: 10 Hz
RSS_GROWTH_GOAL_PCT = 10.0
FD_SLACK = 2
FOLDER_FILES = (RUN_JSON, SOCKETS_CSV, STATS_CSV, "failures.csv", "exceptions.csv", "locust.html")


def _reading(proc: psutil.Process) -> tuple[int, int] | None:
    try:
        return proc.memory_info().rss, proc.num_fds()
    except psutil.Error:
        return None


def _sidecar(locust: psutil.Process) -> psutil.Process | None:
    try:
        for child in locust.children(recursive=True):
            if "keepalive_lab.sidecar" in " ".join(child.cmdline()):
                return child
    except psutil.Error:
        pass
    return None


def _growth(readings: list[tuple[float, int, int]]) -> tuple[int, int, int, int]:
    """(RSS at WARMUP_S, highest RSS after, descriptors at WARMUP_S, most descriptors after)."""
    after = [r for r in readings if r[0] >= WARMUP_S]
    if not after:
        raise RuntimeError(f"no reading after {WARMUP_S} s: the run ended early")
    return after[0][1], max(r[1] for r in after), after[0][2], max(r[2] for r in after)


def run() -> bool:
    if nginx_path() is None:
        print("skipped: nginx is not installed")
        return True
    with tempfile.TemporaryDirectory() as tmp, NginxProcess() as nginx:
        runs = Path(tmp) / "runs"
        cmd = [sys.executable, "-m", "locust", "-f", str(CONCURRENT), "--headless", "--only-summary", "-u", "20",
               "-r", "20", "-t", f"{SOAK_S}s", "--host", nginx.url, "--requests-per-user", "0", "--pool-scope",
               "user", "--pool-size", "1", "--think-time", "0", "--sample-interval", str(INTERVAL_S), "--run-dir",
               str(runs), "--loglevel", "WARNING"]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        locust = psutil.Process(proc.pid)
        sidecar = None
        own: list[tuple[float, int, int]] = []
        car: list[tuple[float, int, int]] = []
        t0 = time.monotonic()
        print(f"soak: {SOAK_S} s; a reading every {SAMPLE_S:g} s", flush=True)
        while proc.poll() is None and time.monotonic() - t0 < SOAK_S + 120:
            time.sleep(SAMPLE_S)
            at = time.monotonic() - t0
            sidecar = sidecar or _sidecar(locust)
            for series, p in ((own, locust), (car, sidecar)):
                reading = _reading(p) if p is not None else None
                if reading is not None and at < SOAK_S - SAMPLE_S:  # the end's own work is no growth
                    series.append((at, *reading))
            if int(at) % 60 < SAMPLE_S and own:  # progress, once a minute
                line = f"  {at:4.0f} s: Locust {own[-1][1] / 2**20:.0f} MiB, {own[-1][2]} fds"
                if car:
                    line += f"; sidecar {car[-1][1] / 2**20:.0f} MiB, {car[-1][2]} fds"
                print(line, flush=True)
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
        folders = [p.parent for p in runs.rglob(RUN_JSON)]
        if proc.returncode != 0 or len(folders) != 1:
            print(f"the soak run failed (exit {proc.returncode}): {err.strip()[-600:]}")
            return False
        folder = folders[0]
        record = json.loads((folder / RUN_JSON).read_text())
        missing = [name for name in FOLDER_FILES if not (folder / name).is_file()]
        with open(folder / SOCKETS_CSV, newline="") as f:
            rows = sum(1 for _ in f) - 1
        with open(folder / STATS_CSV, newline="") as f:
            total = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
        report = subprocess.run([sys.executable, "-m", "analysis", "report", str(folder), "-o", f"{tmp}/report"],
                                capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    ok = True
    for name, series in (("Locust", own), ("sidecar", car)):
        rss0, rss_max, fd0, fd_max = _growth(series)
        growth = 100 * (rss_max - rss0) / rss0
        met = growth < RSS_GROWTH_GOAL_PCT and fd_max <= fd0 + FD_SLACK
        ok = ok and met
        print(f"{name}: RSS {rss0 / 2**20:.1f} MiB at {WARMUP_S} s, at most {rss_max / 2**20:.1f} MiB after "
              f"({growth:+.1f} %, goal < {RSS_GROWTH_GOAL_PCT:g} %); descriptors {fd0} at {WARMUP_S} s, at most "
              f"{fd_max} after (goal <= {fd0 + FD_SLACK}): {'met' if met else 'MISSED'}")  # fmt: skip
    expected = record["duration_s"] / INTERVAL_S
    rows_ok = abs(rows - expected) <= 0.05 * expected
    complete = record["status"] == "completed" and not missing and rows_ok and report.returncode == 0
    ok = ok and complete
    print(
        f"load: {int(total['Request Count']):,} requests at {float(total['Requests/s']):,.0f}/s, "
        f"{int(total['Failure Count'])} failed; connections opened {record['client_connections']['opened']}"
    )
    print(f"run folder: status {record['status']}; {rows:,} sample rows for {record['duration_s']:.0f} s at "
          f"{1 / INTERVAL_S:g} Hz (expected {expected:,.0f}); missing files: {', '.join(missing) or 'none'}; "
          f"report: {'built' if report.returncode == 0 else report.stderr.strip()[-200:]}: "
          f"{'complete' if complete else 'INCOMPLETE'}")  # fmt: skip
    return ok
