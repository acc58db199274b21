"""The suite's instrumented users against plain Locust users, same client and pool, same server.

Each pair runs headless for DURATION_S with 10 users against nginx (or the embedded target when
nginx is missing), alternating plain and suite for ROUNDS rounds. Each round's pair gives one ratio, and the median
of those ratios is the figure: on a shared machine a whole round can run slow, and a paired ratio
cancels that. Goal: the suite reaches at least 0.95 of plain Locust's requests/s.
"""

from __future__ import annotations

import csv
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from keepalive_lab.peers import NginxProcess, nginx_path
from keepalive_lab.target import TargetProcess

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
GOAL_RATIO = 0.95
DURATION_S = 6
ROUNDS = 7
USERS = 10
SUITE_ARGS = ["--pool-scope", "user", "--pool-size", "10", "--drain", "full", "--requests-per-user", "0"]
PAIRS = [
    ("HttpUser (requests)", HERE / "locustfiles/plain_http.py", ["--client", "requests", *SUITE_ARGS]),
    (
        "FastHttpUser (fasthttp)",
        HERE / "locustfiles/plain_fast.py",
        ["--client", "fasthttp", "--pool-full", "block", *SUITE_ARGS],
    ),
]


def locust_rps(locustfile: Path | str, host: str, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(locustfile),
            "--headless",
            "--only-summary",
            "-u",
            str(USERS),
            "-r",
            str(USERS),
            "-t",
            f"{DURATION_S}s",
            "--host",
            host,
            "--csv",
            f"{tmp}/b",
            "--loglevel",
            "WARNING",
            *extra,
        ]
        subprocess.run(cmd, capture_output=True, text=True, timeout=DURATION_S + 60, cwd=tmp)
        with open(f"{tmp}/b_stats.csv") as f:
            rows = {row["Name"]: row for row in csv.DictReader(f)}
    return float(rows["Aggregated"]["Requests/s"])


def run() -> bool:
    server = NginxProcess() if nginx_path() else TargetProcess("keepalive")
    name = "nginx" if nginx_path() else "embedded target"
    ok = True
    try:
        print(f"{USERS} users, {DURATION_S} s per run, {ROUNDS} rounds interleaved, against {name}; median requests/s")
        print("keepalive-lab users run with --no-sidecar (the goal: the users' own cost); the last column adds")
        print("the sidecar process sampling at 4 Hz, which shares the machine's 2 cores")
        print("ratio: the median of the rounds' paired ratios, their range in brackets")
        print(f"{'client':<26}{'plain Locust':>14}{'keepalive-lab':>15}{'ratio':>20}{'with sidecar':>15}")
        with tempfile.TemporaryDirectory() as run_dir:
            for label, plain, suite_args in PAIRS:
                plain_rps, suite_rps, sidecar_rps = [], [], []
                suite = [*suite_args, "--run-dir", run_dir]
                for _ in range(ROUNDS):
                    plain_rps.append(locust_rps(plain, server.url, []))
                    suite_rps.append(
                        locust_rps(ROOT / "locustfiles/concurrent.py", server.url, [*suite, "--no-sidecar"])
                    )
                    sidecar_rps.append(locust_rps(ROOT / "locustfiles/concurrent.py", server.url, suite))
                ratios = [s / p if p else 0.0 for p, s in zip(plain_rps, suite_rps, strict=True)]
                with_sidecar = [c / p if p else 0.0 for p, c in zip(plain_rps, sidecar_rps, strict=True)]
                ratio = statistics.median(ratios)
                ok &= ratio >= GOAL_RATIO
                spread = f"({min(ratios):.2f}-{max(ratios):.2f})"
                print(
                    f"{label:<26}{statistics.median(plain_rps):>14,.0f}{statistics.median(suite_rps):>15,.0f}"
                    f"{ratio:>7.2f}x {spread:>11}{statistics.median(with_sidecar):>14.2f}x"
                )
    finally:
        server.stop()
    print(f"goal: keepalive-lab users >= {GOAL_RATIO:.2f}x plain Locust: {'met' if ok else 'MISSED'}")
    return ok
