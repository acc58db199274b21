"""How long the report takes for 100 runs of about 17 minutes sampled at 10 Hz (1,000,000 sample rows),
against the time pandas takes just to read the same sockets.csv files, side by side.

The runs are copies of a recorded concurrent run with a synthetic 10,000-row sockets.csv each.
Each figure is the median of ROUNDS, the two measured back to back in each round. Goal: the whole
report (load, metrics, compare, render, write, the Locust reports copied in) takes at most 3x
the plain read.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.__main__ import report
from keepalive_lab.schema import SOCKETS_COLUMNS

TEMPLATE = Path(__file__).resolve().parent.parent / "tests" / "data" / "runs" / "20261123T145958Z-conc-pool-2"
RUNS = 100
ROWS = 10_000
GOAL_RATIO = 3.0
ROUNDS = 3


def make_runs(root: Path) -> list[Path]:
    rng = np.random.default_rng(1)
    folders = []
    for i in range(RUNS):
        folder = root / f"20261122T{i:06d}Z-bench-{i}"
        shutil.copytree(TEMPLATE, folder)
        t = 1795350000 + np.arange(ROWS) / 10
        tw = np.minimum(np.cumsum(rng.integers(0, 40, ROWS)), 28000)
        frame = pd.DataFrame({c: 0 for c in SOCKETS_COLUMNS}, index=range(ROWS))
        frame["ts"], frame["host"], frame["port_range"] = t.round(3), "vm", 28232
        frame["client_time_wait"], frame["ports_in_use"] = tw, tw + 2
        frame["client_established"] = frame["server_established"] = 2
        frame["active_opens"] = tw + 100
        frame["sample_ms"] = 3.1
        frame.to_csv(folder / "sockets.csv", index=False)
        folders.append(folder)
    return folders


def plain_read(folders: list[Path]) -> float:
    t0 = time.perf_counter()
    for folder in folders:
        pd.read_csv(folder / "sockets.csv")
    return time.perf_counter() - t0


def run() -> bool:
    import statistics

    reads, builds = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folders = make_runs(Path(tmp) / "runs")
        for i in range(ROUNDS):
            reads.append(plain_read(folders))
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                code = report(folders, Path(tmp) / f"report-{i}")
            builds.append(time.perf_counter() - t0)
            if code != 0:
                print("the report failed")
                return False
        size_mb = (Path(tmp) / "report-0" / "index.html").stat().st_size / 1e6
    read, build = statistics.median(reads), statistics.median(builds)
    ratio = build / read
    ok = ratio <= GOAL_RATIO
    print(f"{RUNS} runs x {ROWS:,} samples ({RUNS * ROWS:,} rows), median of {ROUNDS} rounds: pandas reads the "
          f"sockets.csv files in {read:.2f} s; the whole report builds in {build:.2f} s ({ratio:.2f}x); "
          f"index.html {size_mb:.1f} MB")  # fmt: skip
    print(f"goal: at most {GOAL_RATIO:g}x the plain read: {'met' if ok else 'MISSED'}")
    return ok
