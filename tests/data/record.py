"""Record the small run folders the analysis tests read (tests/data/runs), each in a private
network namespace so that every count is exact. Run as root from the repository:

    .venv/bin/python tests/data/record.py

Locust's HTML report is trimmed to a stub, and the command line and paths are made relative.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from keepalive_lab.netns import in_namespace

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RUNS = [
    ("sequential.py", "seq-drained", ["--think-time", "0.2"]),
    ("sequential.py", "seq-undrained", ["--think-time", "0.2", "--drain", "none"]),
    ("concurrent.py", "conc-pool-2", ["--think-time", "0.01"]),
    ("concurrent.py", "conc-pool-10", ["--think-time", "0.01", "--pool-size", "10"]),
]


def main() -> None:
    out = HERE / "runs"
    shutil.rmtree(out, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        for locustfile, scenario, args in RUNS:
            cmd = [sys.executable, "-m", "locust", "-f", f"locustfiles/{locustfile}", "--headless", "--only-summary",
                   "--run-dir", tmp, "--scenario", scenario, *args]  # fmt: skip
            subprocess.run(in_namespace(cmd), check=True, cwd=ROOT, capture_output=True)
        for folder in sorted(Path(tmp).iterdir()):
            (folder / "locust.html").write_text("<!-- Locust's HTML report, trimmed from the recorded run -->\n")
            (folder / "stats_history.csv").unlink()
            run = json.loads((folder / "run.json").read_text())
            run["locust_options"]["command"] = ["locust", "-f", run["locustfile"], "--headless"]
            (folder / "run.json").write_text(json.dumps(run, indent=2) + "\n")
            shutil.copytree(folder, out / folder.name)
            print(out / folder.name)


if __name__ == "__main__":
    main()
