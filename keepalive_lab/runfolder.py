"""The run folder: the contract between a test and the analysis.

``RUN_DIR/<UTC timestamp>-<scenario>/`` holds:

``run.json``
    what ran and how it ended (:data:`RUN_JSON_FIELDS`). Written whole when the test starts,
    with ``status: "running"``, and again when it ends with ``completed``, ``interrupted`` (Ctrl-C,
    SIGTERM) or ``failed`` (the embedded target died, or user code raised).
``stats.csv``, ``stats_history.csv``, ``failures.csv``, ``exceptions.csv``
    Locust's own, with the columns ``--csv`` writes.
``locust.html``
    Locust's own HTML report.
``target.json``
    the embedded target's counters for this test (see :mod:`keepalive_lab.target`).
``sockets.csv``
    the sidecar's samples (see :mod:`keepalive_lab.sidecar`), when the sidecar ran.

Every file except ``sockets.csv`` is written whole: a temporary file, then a rename.
"""

from __future__ import annotations

import csv
import io
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from keepalive_lab.files import write_atomic, write_json_atomic

RUN_JSON = "run.json"
TARGET_JSON = "target.json"
RUN_JSON_FIELDS = (
    "scenario",
    "locustfile",
    "user_class",
    "user_classes",
    "settings",
    "locust_options",
    "host",
    "target",
    "kernel",
    "versions",
    "start",
    "end",
    "duration_s",
    "status",
    "status_reason",
    "client_connections",
    "requests",
    "failures",
    "target_connections_accepted",
    "sidecar",
)
_VERSIONED = ("locust", "requests", "urllib3", "gevent", "geventhttpclient", "psutil", "keepalive-lab")


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def new_run_dir(run_dir: str | Path, scenario: str, started: datetime) -> Path:
    """Create ``run_dir/<UTC timestamp>-<scenario>/``; a suffix keeps two runs in one second apart."""
    root = Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    stem = f"{started.strftime('%Y%m%dT%H%M%SZ')}-{scenario}"
    for n in range(1, 1000):
        path = root / (stem if n == 1 else f"{stem}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a run folder under {root}")


def write_run_json(folder: Path, record: dict[str, Any]) -> None:
    write_json_atomic(folder / RUN_JSON, record)


def write_csv(path: Path, write_rows: Any) -> None:
    """Write a CSV whole; ``write_rows(csv_writer)`` fills it (Locust's ``StatsCSV`` methods fit)."""
    buf = io.StringIO()
    write_rows(csv.writer(buf))
    write_atomic(path, buf.getvalue())
