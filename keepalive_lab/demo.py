"""`make demo`: the sequential experiment, drained and undrained, side by side.

Runs ``locust -f locustfiles/sequential.py --headless`` twice against the embedded target and
prints the connections each run opened, read from its run folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = [("drain full", ["--drain", "full"]), ("drain none", ["--drain", "none"])]
THINK_TIME_S = "0.2"


def run_one(label: str, args: list[str], run_dir: Path) -> dict:
    before = set(run_dir.glob("*")) if run_dir.exists() else set()
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(ROOT / "locustfiles" / "sequential.py"),
        "--headless",
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--think-time",
        THINK_TIME_S,
        "--run-dir",
        str(run_dir),
        *args,
    ]
    print(f"  {label}: locust -f locustfiles/sequential.py --headless {' '.join(args)} ...", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    new = sorted(set(run_dir.glob("*")) - before)
    if proc.returncode != 0 or not new:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"demo: the {label} run failed (exit code {proc.returncode})")
    folder = new[-1]
    run = json.loads((folder / "run.json").read_text())
    target = json.loads((folder / "target.json").read_text())
    return {"label": label, "folder": folder, "run": run, "target": target}


def main() -> int:
    run_dir = ROOT / "runs"
    print(f"Sequential experiment: 1 user, 10 requests, {THINK_TIME_S} s apart, embedded target\n")
    results = [run_one(label, args, run_dir) for label, args in RUNS]
    print(f"\n{'run':<12}{'requests':>10}{'connections':>13}{'closed by client':>18}  run folder")
    for r in results:
        t = r["target"]
        print(
            f"{r['label']:<12}{t['requests']:>10}{t['connections_accepted']:>13}"
            f"{t['closed_by']['client'] + t['closed_by']['client_reset']:>18}  {r['folder'].relative_to(ROOT)}"
        )
    full, none = (r["target"]["connections_accepted"] for r in results)
    print(
        f"\nReading each body to EOF reused 1 connection for 10 requests ({full} here); leaving it unread "
        f"opened one per request ({none} here), each leaving a TIME_WAIT on the client."
    )
    out = ROOT / "reports"
    cmd = [sys.executable, "-m", "analysis", "report", *(str(r["folder"]) for r in results), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"demo: the report failed (exit code {proc.returncode})")
    print(f"\nReport comparing the runs: {(out / 'index.html').relative_to(ROOT)} (open it in a browser)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
