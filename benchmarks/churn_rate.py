"""How many new connections per second the exhaustion scenario opens from this machine.

Runs ``locustfiles/exhaustion.py`` (no reuse: each connection closed by the client) for a few
seconds inside the lab with the default port range and tcp_tw_reuse=1, so that it never runs
out of ports, once per client. Goal: at least 1,000 new connections/s, against the 470/s
(28,232 ports / 60 s) that exhausts a default range.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from keepalive_lab.netns import in_namespace

ROOT = Path(__file__).resolve().parent.parent
GOAL = 1000
DEFAULT_RANGE_PER_S = 28232 / 60
DURATION_S = 5
CLIENTS = [
    ("fasthttp (the scenario's default)", []),
    ("requests", ["--client", "requests", "--pool-full", "discard"]),
]


def churn(extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "exhaustion.py"), "--headless",
               "--only-summary", "--loglevel", "WARNING", "-t", f"{DURATION_S}s", "--requests-per-user", "0",
               "--no-sidecar", "--run-dir", tmp, *extra]  # fmt: skip
        lab = in_namespace(cmd, port_range=(32768, 60999), tw_reuse=1, fork=True)
        subprocess.run(lab, capture_output=True, timeout=DURATION_S + 60, cwd=ROOT)
        run = json.loads(next(Path(tmp).glob("*/run.json")).read_text())
    return run["client_connections"]["opened"] / run["duration_s"]


def run() -> bool:
    if os.geteuid() != 0:
        print("needs root for the lab's private network namespace; skipped")
        return False
    print(f"exhaustion.py, 20 users, {DURATION_S} s, in the lab (28,232 ports, tcp_tw_reuse=1)")
    print(f"{'client':<36}{'new connections/s':>18}{'x 470/s':>9}")
    rates = []
    for label, extra in CLIENTS:
        rate = churn(extra)
        rates.append(rate)
        print(f"{label:<36}{rate:>18,.0f}{rate / DEFAULT_RANGE_PER_S:>8.1f}x")
    ok = rates[0] >= GOAL
    print(f"goal: the scenario opens >= {GOAL:,} connections/s: {'met' if ok else 'MISSED'} ({rates[0]:,.0f})")
    return ok
