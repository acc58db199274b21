"""Stage 1, load: run folders into DataFrames.

:func:`load_runs` reads each folder's ``run.json``, ``target.json``, ``stats.csv``,
``failures.csv`` and ``sockets.csv``. A folder that is missing, empty, truncated or malformed
is not loaded: it becomes one :class:`Skipped` line naming the file and what is wrong.

Frames of :class:`Loaded` (one row per run in ``runs``; the others carry ``run_id``):

``runs``
    :data:`RUN_COLUMNS`: identity, status, settings and the exact counters of each run.
``stats``
    Locust's ``Aggregated`` row: ``requests``, ``failures``, ``rps``, ``p50_ms``, ``p95_ms``, ``p99_ms``.
``samples``
    every ``sockets.csv`` row (the sidecar's columns).
``failures``
    every ``failures.csv`` row: ``method``, ``name``, ``error``, ``occurrences``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

RUN_REQUIRED = ("scenario", "status", "start", "kernel", "settings")
STATS_REQUIRED = ("Name", "Request Count", "Failure Count", "Requests/s", "50%", "95%", "99%")
FAILURES_REQUIRED = ("Method", "Name", "Error", "Occurrences")
SOCKETS_REQUIRED = (
    "ts",
    "host",
    "client_established",
    "client_time_wait",
    "client_close_wait",
    "client_other",
    "server_established",
    "server_time_wait",
    "server_close_wait",
    "server_other",
    "ports_in_use",
    "port_range",
    "active_opens",
    "passive_opens",
    "attempt_fails",
    "estab_resets",
    "tw_total",
)
RUN_COLUMNS = (
    "run_id",
    "path",
    "scenario",
    "status",
    "status_reason",
    "start",
    "end",
    "duration_s",
    "user_class",
    "locustfile",
    "host",
    "target_embedded",
    "target_mode",
    "peer",
    "port_range",
    "tcp_tw_reuse",
    "isolated",
    "num_users",
    "settings",
    "client_opened",
    "client_closed",
    "client_discarded",
    "client_errno99",
    "first_connect_ts",
    "first_addr_not_available_ts",
    "opened_before_addr_not_available",
    "target_accepted",
    "target_closed_by_client",
    "target_closed_by_server",
    "target_closed_by_reset",
    "sidecar_status",
)


class LoadError(ValueError):
    """A run folder that cannot be loaded; ``str()`` is the one line shown to the user."""


@dataclass(frozen=True)
class Skipped:
    """A run folder left out, and why (one line)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return self.reason


@dataclass
class Loaded:
    runs: pd.DataFrame
    stats: pd.DataFrame
    samples: pd.DataFrame
    failures: pd.DataFrame
    skipped: list[Skipped] = field(default_factory=list)


def find_run_dirs(root: str | Path) -> list[Path]:
    """Every folder under ``root`` that holds a ``run.json``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.glob("*/run.json"))


def _read_json(path: Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    if not path.exists():
        raise LoadError(f"{path}: missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LoadError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LoadError(f"{path}: cannot be read ({e})") from None
    if not isinstance(data, dict):
        raise LoadError(f"{path}: not a JSON object")
    missing = [k for k in required if k not in data]
    if missing:
        raise LoadError(f"{path}: missing key {missing[0]!r}")
    return data


def _read_csv(path: Path, required: tuple[str, ...], numeric: tuple[str, ...] = ()) -> pd.DataFrame:
    if not path.exists():
        raise LoadError(f"{path}: missing")
    try:
        df = pd.read_csv(path, na_values=["N/A"], keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise LoadError(f"{path}: empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise LoadError(f"{path}: malformed CSV ({str(e).strip().splitlines()[-1]})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise LoadError(f"{path}: missing columns {', '.join(missing)}")
    if numeric and len(df):
        values = df[list(numeric)].apply(pd.to_numeric, errors="coerce")
        bad = values.isna().any(axis=1)
        if bad.any():
            line = int(bad.to_numpy().nonzero()[0][0]) + 2  # header is line 1
            what = "last line is torn" if line == len(df) + 1 else f"line {line} is torn or not numeric"
            raise LoadError(f"{path}: {what}")
        df[list(numeric)] = values
    return df


def _get(d: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


def load_run(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """One run folder: (runs row, stats row, samples, failures); raises LoadError."""
    folder = Path(folder)
    if not folder.exists():
        raise LoadError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise LoadError(f"{folder}: not a folder")
    if not any(folder.iterdir()):
        raise LoadError(f"{folder}: empty folder")
    run = _read_json(folder / "run.json", RUN_REQUIRED)
    if run["status"] == "running":
        raise LoadError(f"{folder / 'run.json'}: status 'running': the run never finished (Locust was killed)")
    target = _read_json(folder / "target.json") if (folder / "target.json").exists() else {}
    stats_df = _read_csv(folder / "stats.csv", STATS_REQUIRED)
    agg = stats_df[stats_df["Name"] == "Aggregated"]
    if agg.empty:
        raise LoadError(f"{folder / 'stats.csv'}: no Aggregated row")
    a = agg.iloc[-1]
    failures = _read_csv(folder / "failures.csv", FAILURES_REQUIRED) if (folder / "failures.csv").exists() else None
    samples = None
    if (folder / "sockets.csv").exists():
        samples = _read_csv(folder / "sockets.csv", SOCKETS_REQUIRED, SOCKETS_REQUIRED[2:])
    run_id = folder.name
    conns = run.get("client_connections") or {}
    closed_by = target.get("closed_by") or {}
    row = {
        "run_id": run_id,
        "path": str(folder),
        "scenario": str(run["scenario"]),
        "status": str(run["status"]),
        "status_reason": str(run.get("status_reason") or ""),
        "start": run.get("start"),
        "end": run.get("end"),
        "duration_s": run.get("duration_s"),
        "user_class": run.get("user_class"),
        "locustfile": run.get("locustfile"),
        "host": run.get("host"),
        "target_embedded": bool(_get(run, "target", "embedded", default=False)),
        "target_mode": _get(run, "target", "mode"),
        "peer": _get(run, "target", "peer"),
        "port_range": _get(run, "kernel", "port_range"),
        "tcp_tw_reuse": _get(run, "kernel", "tcp_tw_reuse"),
        "isolated": bool(_get(run, "kernel", "isolated", default=False)),
        "num_users": _get(run, "locust_options", "num_users"),
        "settings": run.get("settings") or {},
        "client_opened": conns.get("opened"),
        "client_closed": conns.get("closed"),
        "client_discarded": conns.get("discarded"),
        "client_errno99": (conns.get("connect_errors_by_errno") or {}).get("99", 0) if conns else None,
        "first_connect_ts": conns.get("first_connect_ts"),
        "first_addr_not_available_ts": conns.get("first_addr_not_available_ts"),
        "opened_before_addr_not_available": conns.get("opened_before_addr_not_available"),
        "target_accepted": target.get("connections_accepted"),
        "target_closed_by_client": closed_by.get("client"),
        "target_closed_by_server": closed_by.get("server"),
        "target_closed_by_reset": closed_by.get("client_reset"),
        "sidecar_status": _get(run, "sidecar", "status", default="off"),
    }
    stats_row = {
        "run_id": run_id,
        "requests": int(a["Request Count"]),
        "failures": int(a["Failure Count"]),
        "rps": float(a["Requests/s"]),
        "p50_ms": float(a["50%"]),
        "p95_ms": float(a["95%"]),
        "p99_ms": float(a["99%"]),
    }
    if samples is None:
        samples = pd.DataFrame(columns=list(SOCKETS_REQUIRED))
    samples = samples.assign(run_id=run_id)
    if failures is None:
        failures = pd.DataFrame(columns=list(FAILURES_REQUIRED))
    failures = failures.rename(
        columns={"Method": "method", "Name": "name", "Error": "error", "Occurrences": "occurrences"}
    )[["method", "name", "error", "occurrences"]].assign(run_id=run_id)
    return row, stats_row, samples, failures


def load_runs(folders: list[str | Path]) -> Loaded:
    """Load every folder that loads; the others go to ``skipped`` with their one-line reason."""
    rows, stats, samples, failures, skipped = [], [], [], [], []
    for folder in folders:
        try:
            row, stats_row, s, f = load_run(folder)
        except LoadError as e:
            skipped.append(Skipped(str(folder), str(e)))
            continue
        rows.append(row)
        stats.append(stats_row)
        samples.append(s)
        failures.append(f)
    runs_df = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    stats_df = pd.DataFrame(stats, columns=["run_id", "requests", "failures", "rps", "p50_ms", "p95_ms", "p99_ms"])
    samples_df = (
        pd.concat(samples, ignore_index=True) if samples else pd.DataFrame(columns=[*SOCKETS_REQUIRED, "run_id"])
    )
    failures_df = (
        pd.concat(failures, ignore_index=True)
        if failures
        else pd.DataFrame(columns=["method", "name", "error", "occurrences", "run_id"])
    )
    return Loaded(runs_df, stats_df, samples_df, failures_df, skipped)
