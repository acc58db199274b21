"""How long the report takes for 20 runs of 5 minutes sampled at 10 Hz (60,000 sample rows).

The runs are copies of a recorded concurrent run with a synthetic 3,000-row sockets.csv each.
Goal: the whole report (load, metrics, compare, render, write) builds in under 5 s.
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

TEMPLATE = Path(__file__).resolve().parent.parent / "tests" / "data" / "runs" / "20261122T131213Z-concurrent"
RUNS = 20
ROWS = 5 * 60 * 10
GOAL_S = 5.0


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


def run() -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        folders = make_runs(Path(tmp) / "runs")
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            code = report(folders, Path(tmp) / "report")
        elapsed = time.perf_counter() - t0
        size_mb = (Path(tmp) / "report" / "index.html").stat().st_size / 1e6
    ok = code == 0 and elapsed < GOAL_S
    print(
        f"{RUNS} runs x {ROWS:,} samples ({RUNS * ROWS:,} rows): report built in {elapsed:.2f} s "
        f"({elapsed / GOAL_S:.2f}x the {GOAL_S:.0f} s goal), index.html {size_mb:.1f} MB"
    )
    print(f"goal: under {GOAL_S:.0f} s: {'met' if ok else 'MISSED'}")
    return ok
