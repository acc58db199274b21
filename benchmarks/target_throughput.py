"""The embedded target must never be the bottleneck: wrk, 10 keep-alive connections, side by side
with nginx. Goal: at least 5,000 requests/s from the target."""

from __future__ import annotations

import re
import shutil
import subprocess

from keepalive_lab.peers import NginxProcess, nginx_path
from keepalive_lab.target import TargetProcess

GOAL_RPS = 5000
DURATION_S = 5
CONNECTIONS = 10


def wrk_rps(url: str) -> float:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION_S}s", url + "/"],
        capture_output=True,
        text=True,
        timeout=DURATION_S + 30,
        check=True,
    ).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def run() -> bool:
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian package wrk); `make bench` installs it when run as root")
        return False
    rows = []
    with TargetProcess("keepalive") as target:
        rows.append(("embedded target", wrk_rps(target.url)))
    if nginx_path():
        with NginxProcess() as nginx:
            rows.append(("nginx", wrk_rps(nginx.url)))
    print(f"wrk -t1 -c{CONNECTIONS} -d{DURATION_S}s, keep-alive, on loopback")
    print(f"{'server':<18}{'requests/s':>12}{'ratio to target':>17}")
    base = rows[0][1]
    for name, rps in rows:
        print(f"{name:<18}{rps:>12,.0f}{rps / base:>16.2f}x")
    ok = base >= GOAL_RPS
    print(f"goal: target >= {GOAL_RPS:,} requests/s: {'met' if ok else 'MISSED'} ({base:,.0f})")
    return ok
