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
    every ``failures.csv`` row: ``method``, ``name``, ``error``, ``occurrences``, and the ``host``
    it happened on (missing in older folders).
"""

from __future__ import annotations

import csv
import functools
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from keepalive_lab.schema import (
    FAILURES_CSV,
    FAILURES_HOST_COLUMN,
    LOCUST_FAILURES_COLUMNS,
    LOCUST_STATS_COLUMNS,
    RUN_JSON,
    SOCKETS_COLUMNS,
    SOCKETS_CSV,
    SOCKETS_READ_COLUMNS,
    SOCKETS_READ_DTYPES,
    SOCKETS_REQUIRED,
    STATS_CSV,
    TARGET_JSON,
    RunRecord,
    SchemaError,
    Status,
    TargetCounts,
    by_name_rows,
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
    "tcp_max_tw_buckets",
    "isolated",
    "num_users",
    "settings",
    "client_opened",
    "client_closed",
    "client_closed_by_client",
    "client_reset_by_client",
    "client_closed_by_server",
    "client_closed_at_end",
    "client_discarded",
    "client_errno99",
    "client_tls_errors",
    "client_pool_timeouts",
    "first_connect_ts",
    "last_request_ts",
    "first_addr_not_available_ts",
    "opened_before_addr_not_available",
    "target_accepted",
    "target_closed_by_client",
    "target_closed_by_server",
    "target_closed_by_reset",
    "sidecar_status",
    "client_connect_ms",
    "client_tls_ms",
    "client_new_connection_requests",
    "by_name",
    "hosts",
)


class LoadError(ValueError):
    """A run folder that cannot be loaded; ``str()`` is the one line shown to the user."""


SOCKETS_NUMERIC_REQUIRED = tuple(c for c in SOCKETS_REQUIRED if c not in ("ts", "host")) + ("ts",)


@dataclass(frozen=True)
class Skipped:
    """A run folder left out, and why (one line)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return self.reason


@dataclass
class Loaded:
    """The frames of the loaded runs. ``samples_by_run``: each run's samples (run id -> frame), host
    by host and each host's in time order, without ``sample_ms``, in the compact types of
    ``SOCKETS_READ_DTYPES``; ``samples`` is them in one frame, made on first use (the report's
    stages take the per-run frames, and a million rows are not copied once more)."""

    runs: pd.DataFrame
    stats: pd.DataFrame
    samples_by_run: dict[str, pd.DataFrame]
    failures: pd.DataFrame
    skipped: list[Skipped] = field(default_factory=list)

    @functools.cached_property
    def samples(self) -> pd.DataFrame:
        if not self.samples_by_run:
            return pd.DataFrame(columns=[*SOCKETS_COLUMNS, "run_id"])
        return pd.concat(list(self.samples_by_run.values()), ignore_index=True)


def find_run_dirs(root: str | Path) -> list[Path]:
    """Every folder at any depth under ``root`` that holds a ``run.json`` (a matrix nests them as
    ``matrix-*/<scenario>/<run>/``), in the order their names sort: oldest first within a folder."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p.parent for p in root.rglob(RUN_JSON)), key=lambda p: (p.name, str(p)))


def _read_csv(path: Path, required: tuple[str, ...], numeric: tuple[str, ...] = ()) -> pd.DataFrame:
    """A CSV with its ``required`` columns, ``numeric`` ones numbers on every line; LoadError naming the problem."""
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
        if all(df[c].dtype.kind in "iuf" for c in numeric):  # read as numbers: only a torn line is left to find
            floats = [c for c in numeric if df[c].dtype.kind == "f"]  # a missing value turns a column to floats
            if not any(np.isnan(df[c].to_numpy()).any() for c in floats):
                return df
        values = df[list(numeric)].apply(pd.to_numeric, errors="coerce")
        bad = values.isna().any(axis=1)
        if bad.any():
            line = int(bad.to_numpy().nonzero()[0][0]) + 2  # header is line 1
            what = "last line is torn" if line == len(df) + 1 else f"line {line} is torn or not numeric"
            raise LoadError(f"{path}: {what}")
        df[list(numeric)] = values
    return df


_CHUNK_ROWS = 250_000  # rows of sockets.csv parsed at a time
# The types resolved once (pandas resolving a name per column costs a file a few ms of a report's hundred)
_READ_DTYPES = {c: pd.api.types.pandas_dtype(d) for c, d in SOCKETS_READ_DTYPES.items()}
_CHUNK_BYTES = 16 * 2**20  # a sockets.csv up to this size is read at once (about 180,000 rows)


def _count_rows(path: Path) -> int:
    """The lines of a CSV after its header (a last line without its newline counts)."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return max(lines + (last != b"\n") - 1, 0)


def _read_samples(path: Path) -> pd.DataFrame:
    """sockets.csv: the columns the analysis needs, in the compact types of ``SOCKETS_READ_DTYPES``
    (:func:`_read_typed`), host by host in time order.

    A file those types do not fit (a torn line, a missing value, an older file's empty cells) is
    read again as :func:`_read_csv` reads any CSV, which names the bad line or keeps the gaps. The
    added columns an older file lacks are added, empty."""
    try:
        df = _read_typed(path)
    except (ValueError, OverflowError):  # pandas' parser errors are ValueErrors too
        df = _read_csv(path, SOCKETS_REQUIRED, SOCKETS_NUMERIC_REQUIRED)
        df = df[[c for c in df.columns if c in SOCKETS_READ_DTYPES]]
    return _completed(path, df)


def _read_typed(path: Path) -> pd.DataFrame:
    """sockets.csv in ``SOCKETS_READ_DTYPES``; ValueError when they do not fit.

    A long file's rows are counted first, then parsed a chunk at a time into columns of that
    length, so the peak memory is the frame plus one chunk, not twice the frame (as one
    ``read_csv`` of it takes); a small one is read at once."""
    typed = {"usecols": lambda c: c in SOCKETS_READ_DTYPES, "dtype": _READ_DTYPES, "na_values": ["N/A"],
             "keep_default_na": False}  # fmt: skip
    if not path.exists() or path.stat().st_size <= _CHUNK_BYTES:
        return pd.read_csv(path, **typed)
    total = _count_rows(path)
    columns: dict[str, np.ndarray] = {}
    hosts: dict[str, int] = {}  # host name -> its code, in the order the hosts first appear
    n = 0
    with pd.read_csv(path, chunksize=_CHUNK_ROWS, **typed) as chunks:
        for chunk in chunks:
            if not columns:
                columns = {c: np.empty(total, dtype=np.int32 if c == "host" else chunk[c].dtype) for c in chunk}
            m = len(chunk)
            for c in chunk:
                if c == "host":
                    codes = chunk[c].cat.codes.to_numpy()
                    if (codes < 0).any():
                        raise ValueError("a missing host")
                    own = [hosts.setdefault(str(h), len(hosts)) for h in chunk[c].cat.categories]
                    columns[c][n : n + m] = np.asarray(own, dtype=np.int32)[codes]
                else:
                    columns[c][n : n + m] = chunk[c].to_numpy()
            n += m
    if not columns:  # blank lines after the header
        return pd.read_csv(path, **typed)
    return pd.DataFrame(
        {c: pd.Categorical.from_codes(a[:n], categories=list(hosts)) if c == "host" else a[:n]
         for c, a in columns.items()},
        copy=False,
    )  # fmt: skip


def _completed(path: Path, df: pd.DataFrame) -> pd.DataFrame:
    """The samples as read, checked for the required columns, the added ones an older file lacks
    added empty, host by host in time order."""
    missing = [c for c in SOCKETS_REQUIRED if c in SOCKETS_READ_DTYPES and c not in df.columns]
    if missing:
        raise LoadError(f"{path}: missing columns {', '.join(missing)}")
    for c in SOCKETS_READ_COLUMNS:
        if c not in df.columns:
            df[c] = np.nan
    if len(df) and (df["host"].nunique() > 1 or not df["ts"].is_monotonic_increasing):
        _group_by_host(df)  # several hosts' rows, appended as their batches came in
    return df


def _group_by_host(df: pd.DataFrame) -> None:
    """Put ``df``'s rows host by host (in the order the hosts first appear), each host's in time
    order, in place and a column at a time: sorting a long frame the usual way holds it twice.
    Grouped, a host's rows are a slice of the frame, not a copy (:func:`analysis.metrics.by_host`)."""
    hosts, _ = pd.factorize(df["host"])
    order = np.lexsort((pd.to_numeric(df["ts"], errors="coerce").to_numpy(dtype=float), hosts))
    del hosts  # the last reference: freed before the columns are
    for c in list(df.columns):
        column = df[c]
        if isinstance(column.dtype, pd.CategoricalDtype):
            df[c] = pd.Categorical.from_codes(column.cat.codes.to_numpy()[order], dtype=column.dtype)
        else:
            df[c] = column.to_numpy()[order]


def _read_small_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """A small CSV of Locust's (stats.csv, failures.csv) as rows of text, read without pandas' per-file cost."""
    if not path.exists():
        raise LoadError(f"{path}: missing")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise LoadError(f"{path}: empty")
            missing = [c for c in required if c not in header]
            if missing:
                raise LoadError(f"{path}: missing columns {', '.join(missing)}")
            return [dict(zip(header, row, strict=False)) for row in reader if row]
    except (UnicodeDecodeError, csv.Error) as e:
        raise LoadError(f"{path}: malformed CSV ({e})") from None


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "", "N/A") else math.nan
    except ValueError:
        return math.nan


def load_run(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """One run folder: (runs row, stats row, samples, failures); raises LoadError."""
    folder = Path(folder)
    if not folder.exists():
        raise LoadError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise LoadError(f"{folder}: not a folder")
    if not any(folder.iterdir()):
        raise LoadError(f"{folder}: empty folder")
    try:
        run = RunRecord.read(folder)
        target = TargetCounts.read(folder) if (folder / TARGET_JSON).exists() else None
    except SchemaError as e:
        raise LoadError(str(e)) from None
    if run.status is Status.RUNNING:
        raise LoadError(
            f"{folder / RUN_JSON}: crashed: no end (status 'running': Locust was killed before the run ended)"
        )
    aggregated = [r for r in _read_small_csv(folder / STATS_CSV, LOCUST_STATS_COLUMNS) if r["Name"] == "Aggregated"]
    if not aggregated:
        raise LoadError(f"{folder / STATS_CSV}: no Aggregated row")
    a = aggregated[-1]
    failures = None
    if (folder / FAILURES_CSV).exists():
        rows = _read_small_csv(folder / FAILURES_CSV, LOCUST_FAILURES_COLUMNS)
        failures = pd.DataFrame(rows) if rows else None
    samples = None
    if (folder / SOCKETS_CSV).exists():
        samples = _read_samples(folder / SOCKETS_CSV)
    run_id = folder.name
    row = run_row(run, target, run_id, str(folder))
    numbers = {c: _number(a[c]) for c in LOCUST_STATS_COLUMNS[1:]}  # Locust writes N/A for none
    if pd.isna(numbers["Request Count"]) or pd.isna(numbers["Failure Count"]):
        raise LoadError(f"{folder / STATS_CSV}: the Aggregated row's request counts are not numbers")
    stats_row = {
        "run_id": run_id,
        "requests": int(numbers["Request Count"]),
        "failures": int(numbers["Failure Count"]),
        "rps": float(numbers["Requests/s"]),
        "p50_ms": float(numbers["50%"]),
        "p95_ms": float(numbers["95%"]),
        "p99_ms": float(numbers["99%"]),
    }
    return row, stats_row, *framed(run_id, samples, failures)


def framed(run_id: str, samples: pd.DataFrame | None, failures: pd.DataFrame | None) -> tuple[pd.DataFrame, ...]:
    """A run's samples (sockets.csv's columns) and failures (Locust's columns) as the stages take them."""
    if samples is None:
        samples = pd.DataFrame(columns=list(SOCKETS_COLUMNS))
    # In place (the frame is this load's own, and a copy of a long one costs), as a category: one
    # byte a row, not a pointer to the same string.
    samples["run_id"] = pd.Categorical.from_codes(np.zeros(len(samples), dtype=np.int8), categories=[run_id])
    if failures is None:
        failures = pd.DataFrame(columns=list(LOCUST_FAILURES_COLUMNS))
    if FAILURES_HOST_COLUMN not in failures.columns:  # an older folder: where is not known
        failures = failures.assign(**{FAILURES_HOST_COLUMN: pd.NA})
    failures = failures.rename(
        columns={"Method": "method", "Name": "name", "Error": "error", "Occurrences": "occurrences",
                 FAILURES_HOST_COLUMN: "host"}
    )[["method", "name", "error", "occurrences", "host"]].assign(run_id=run_id)  # fmt: skip
    return samples, failures


def run_row(run: RunRecord, target: TargetCounts | None, run_id: str, path: str) -> dict[str, Any]:
    """A run's row of the ``runs`` frame (:data:`RUN_COLUMNS`), from its run.json and target.json."""
    conns = run.client_connections
    closed_by = target.closed_by if target is not None else {}
    return {
        "run_id": run_id,
        "path": path,
        "scenario": run.scenario,
        "status": str(run.status),
        "status_reason": run.status_reason,
        "start": run.start,
        "end": run.end,
        "duration_s": run.duration_s,
        "user_class": run.user_class,
        "locustfile": run.locustfile,
        "host": run.host,
        "target_embedded": run.target.embedded,
        "target_mode": run.target.mode,
        "peer": run.target.peer,
        "port_range": run.kernel.port_range,
        "tcp_tw_reuse": run.kernel.tcp_tw_reuse,
        "tcp_max_tw_buckets": run.kernel.tcp_max_tw_buckets,
        "isolated": run.kernel.isolated,
        "num_users": run.locust_options.num_users,
        "settings": run.settings,
        "client_opened": conns.opened if conns else None,
        "client_closed": conns.closed if conns else None,
        "client_closed_by_client": conns.closed_by_client if conns else None,
        "client_reset_by_client": conns.reset_by_client if conns else None,
        "client_closed_by_server": conns.closed_by_server if conns else None,
        "client_closed_at_end": conns.closed_at_end if conns else None,
        "client_discarded": conns.discarded if conns else None,
        "client_errno99": conns.addr_not_available if conns else None,
        "client_tls_errors": conns.tls_errors if conns else None,
        "client_pool_timeouts": conns.pool_timeouts if conns else None,
        "first_connect_ts": conns.first_connect_ts if conns else None,
        "last_request_ts": run.last_request_ts,
        "first_addr_not_available_ts": conns.first_addr_not_available_ts if conns else None,
        "opened_before_addr_not_available": conns.opened_before_addr_not_available if conns else None,
        "target_accepted": target.connections_accepted if target else None,
        "target_closed_by_client": closed_by.get("client"),
        "target_closed_by_server": closed_by.get("server"),
        "target_closed_by_reset": closed_by.get("client_reset"),
        "sidecar_status": run.sidecar.status,
        "client_connect_ms": conns.connect_ms if conns else None,
        "client_tls_ms": conns.tls_ms if conns else None,
        "client_new_connection_requests": (
            sum(int(c.get("new_connection_requests", 0)) for c in conns.by_name.values())
            if conns and conns.by_name
            else None
        ),
        "by_name": by_name_rows(conns),
        "hosts": run.hosts,
    }


def samples_from_text(text: str) -> pd.DataFrame:
    """sockets.csv as it is being written (the live view): whole rows only, the added columns kept."""
    whole = text[: text.rfind("\n") + 1]
    if not whole.strip():
        return pd.DataFrame(columns=list(SOCKETS_COLUMNS))
    frame = pd.read_csv(io.StringIO(whole), na_values=["N/A"], keep_default_na=False)
    return frame.reindex(columns=list(SOCKETS_COLUMNS))


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
    by_run = {str(row["run_id"]): s for row, s in zip(rows, samples, strict=True) if len(s)}
    failures_df = (
        pd.concat(failures, ignore_index=True)
        if failures
        else pd.DataFrame(columns=["method", "name", "error", "occurrences", "host", "run_id"])
    )
    return Loaded(runs_df, stats_df, by_run, failures_df, skipped)
