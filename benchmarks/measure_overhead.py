"""What measuring a plain locustfile costs it: the same file run plain, and run measured with the
suite's ``locustfiles/measure.py`` and the socket sidecar on (as users run it), for each client.

Each round runs the pair back to back headless for DURATION_S with 10 users against nginx (or the
embedded target when nginx is missing); the figure is the median of the rounds' paired ratios of
Locust's requests/s, whose window the suite restarts once its run has started. Goal: the
measured file reaches at least 0.97 of the plain file's requests/s.
"""

from __future__ import annotations

import statistics
import tempfile

from benchmarks.user_overhead import HERE, ROOT, locust_rps
from keepalive_lab.peers import NginxProcess, nginx_path
from keepalive_lab.target import TargetProcess

GOAL_RATIO = 0.97
ROUNDS = 7
FILES = [
    ("HttpUser (requests)", HERE / "locustfiles/plain_http.py"),
    ("FastHttpUser (fasthttp)", HERE / "locustfiles/plain_fast.py"),
]


def run() -> bool:
    server = NginxProcess() if nginx_path() else TargetProcess("keepalive")
    name = "nginx" if nginx_path() else "embedded target"
    ok = True
    try:
        print(f"the same locustfile, plain and measured (sidecar on, 4 Hz), {ROUNDS} interleaved rounds against {name}")
        print("requests/s: medians; ratio: the median of the rounds' paired ratios, their range in brackets")
        print(f"{'locustfile':<26}{'plain':>10}{'measured':>10}{'ratio':>20}")
        with tempfile.TemporaryDirectory() as run_dir:
            for label, locustfile in FILES:
                plain, measured = [], []
                for _ in range(ROUNDS):
                    plain.append(locust_rps(locustfile, server.url, []))
                    measured.append(locust_rps(f"{locustfile},{ROOT / 'locustfiles/measure.py'}", server.url,
                                               ["--run-dir", run_dir]))  # fmt: skip
                ratios = [m / p if p else 0.0 for p, m in zip(plain, measured, strict=True)]
                ratio = statistics.median(ratios)
                ok &= ratio >= GOAL_RATIO
                spread = f"({min(ratios):.2f}-{max(ratios):.2f})"
                print(f"{label:<26}{statistics.median(plain):>10,.0f}{statistics.median(measured):>10,.0f}"
                      f"{ratio:>8.2f}x {spread:>11}")  # fmt: skip
    finally:
        server.stop()
    print(f"goal: measured >= {GOAL_RATIO:.2f}x plain: {'met' if ok else 'MISSED'}")
    return ok
