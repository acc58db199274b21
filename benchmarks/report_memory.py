"""The report's peak memory for one run of 10,000,000 sample rows (11.6 days at 10 Hz), against pandas
reading the same sockets.csv with its defaults, side by side.

Two files: one host's rows in time order, as a sidecar writes them, and two hosts' rows appended in
batches of 10 as they came in (out of time order), as a master writes its workers'. Each figure is
the peak resident memory of its own process. Goal: the report stays within
``FIXED_BYTES + ROW_BYTES`` a row, the bound the README states.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from keepalive_lab.schema import SOCKETS_COLUMNS

TEMPLATE = Path(__file__).resolve().parent.parent / "tests" / "data" / "runs" / "20261123T145958Z-conc-pool-2"
ROWS = 10_000_000
FIXED_BYTES = 100 * 2**20  # parsing a chunk of rows, and the interpreter's own growth
ROW_BYTES = 250  # the frame (about 130 bytes a row) and, with several hosts, their summed timeline


def write_run(folder: Path, rows: int, hosts: int) -> None:
    """A copy of a recorded run whose sockets.csv has ``rows`` rows of ``hosts`` hosts (two or more:
    batches of 10 rows a host, each batch's times before the previous batch's end)."""
    shutil.copytree(TEMPLATE, folder)
    names = [f"host-{h}" for h in range(hosts)]
    with open(folder / "sockets.csv", "w", encoding="utf-8") as f:
        f.write(",".join(SOCKETS_COLUMNS) + "\n")
        step = 10 * hosts
        for start in range(0, rows, 1_000_000):
            f.writelines(
                f"{1795350000 + (i // step) + (i % 10) / 10:.1f},{names[(i // 10) % hosts]},2,{i % 28000},0,0,2,0,0,0,"
                f"{i % 28000 + 2},0,0,0,0,0,0,0,0,0,28232,{i + 100},0,0,0,0,3.1\n"
                for i in range(start, min(start + 1_000_000, rows))
            )


# The peak is the process's own high-water mark (VmHWM): getrusage's ru_maxrss survives exec, so a
# child would start from its parent's peak.
_HWM = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')).split()[1]) * 1024"
_PEAK = (
    "import runpy, sys\n"
    "sys.argv = sys.argv[1:]\n"
    "try:\n"
    "    runpy.run_module(sys.argv[0], run_name='__main__')\n"
    "except SystemExit as e:\n"
    "    code = e.code\n"
    "else:\n"
    "    code = 0\n"
    f"print('peak', {_HWM}, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def peak_bytes(*argv: str) -> int:
    """The peak resident memory of ``python -m ARGV...`` in a process of its own; fails if it fails."""
    done = subprocess.run([sys.executable, "-c", _PEAK, *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"python -m {' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-400:]}")
    return int(done.stderr.rsplit("peak ", 1)[1])


def report_peak(folder: Path, out: Path) -> int:
    return peak_bytes("analysis", "report", str(folder), "--out", str(out))


def plain_read_peak(csv: Path) -> int:
    code = f"import pandas as pd; pd.read_csv({str(csv)!r}); print({_HWM})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout)


def run() -> bool:
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tiny = root / "20261122T000000Z-tiny"
        write_run(tiny, 10, 1)
        base = report_peak(tiny, root / "out-tiny")
        print(f"the report of a 10-row run: {base / 2**20:,.0f} MiB (the interpreter and its imports)")
        for hosts in (1, 2):
            folder = root / f"20261122T00000{hosts}Z-{hosts}-hosts"
            write_run(folder, ROWS, hosts)
            size = (folder / "sockets.csv").stat().st_size
            plain = plain_read_peak(folder / "sockets.csv")
            peak = report_peak(folder, root / f"out-{hosts}")
            bound = base + FIXED_BYTES + ROW_BYTES * ROWS
            met = peak <= bound
            ok = ok and met
            print(f"{ROWS:,} rows, {hosts} host(s), sockets.csv {size / 1e6:,.0f} MB: pandas' read_csv alone "
                  f"{plain / 2**30:.2f} GiB; the whole report {peak / 2**30:.2f} GiB ({peak / plain:.2f}x), "
                  f"{(peak - base) / ROWS:.0f} bytes a row; bound {bound / 2**30:.2f} GiB: "
                  f"{'met' if met else 'MISSED'}")  # fmt: skip
            shutil.rmtree(folder)
    return ok
