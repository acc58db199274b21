"""The run as it stands, for the web UI's Connections tab, ``/metrics`` and the console line.

:class:`LiveView` builds the report's own frames from the live state (the run record so far,
the client's counts, Locust's stats, the sidecar's samples so far) and runs the report's own
computation on them (:mod:`analysis.metrics`, :mod:`analysis.compare`), so every number shown
while a test runs is the one the report will show. Once the test has ended, it reads the
finished run folder, exactly as the report does. A snapshot is kept for :data:`MAX_AGE_S`.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keepalive_lab.schema import SOCKETS_CSV, RunRecord, Status, TargetCounts, by_name_rows

log = logging.getLogger("keepalive_lab")
MAX_AGE_S = 1.9  # the web UI polls every 2 s, the Connections panel too: one computation serves both


@dataclass
class Snapshot:
    """One moment of a run: its summary row (``summary.csv``'s columns), verdict, per-name rows, last sample."""

    run_id: str = ""
    status: str = ""
    status_reason: str = ""  # why the run is not completed (run.json's status_reason)
    folder: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    verdict: str = ""
    why: str = ""
    by_name: list[dict[str, Any]] = field(default_factory=list)
    last_sample: dict[str, Any] = field(default_factory=dict)
    tcp_tw_reuse: int | None = None
    hosts: list[dict[str, Any]] = field(default_factory=list)  # hosts.csv's rows of the run, several hosts only
    taken: float = 0.0


def _clean(value: Any) -> Any:
    """A JSON-safe value: NaN becomes None, numpy numbers plain numbers."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class LiveView:
    """Snapshots of the session's current run, or of its last finished one."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self._snapshot = Snapshot()
        self._source: Any = None
        self._tail = SamplesTail()

    @staticmethod
    def warm() -> None:
        """Import the report's computation now, before a test, rather than in its first seconds."""
        import analysis.compare
        import analysis.load
        import analysis.metrics  # noqa: F401

    def samples(self) -> Any:
        """The current (or last) run's sockets.csv rows so far, as the report reads them."""
        run = self.session.run or self.session.last_run
        return None if run is None else self._tail.read(run.folder / SOCKETS_CSV)

    def snapshot(self, max_age_s: float = MAX_AGE_S) -> Snapshot:
        run = self.session.run or self.session.last_run
        if run is None:
            return Snapshot()
        now = time.monotonic()
        status = str(run.record.status)
        if (
            self._source is run
            and self._snapshot.status == status
            and (status != Status.RUNNING or now - self._snapshot.taken < max_age_s)
        ):  # a finished run's figures do not change; a run that just finished gets them at once
            return self._snapshot
        try:
            self._snapshot = self._take(run)
        except Exception as e:  # a live view must never break the test it shows
            log.warning("the live connection figures could not be computed: %s", e)
            return self._snapshot
        self._snapshot.taken, self._source = now, run
        return self._snapshot

    def _take(self, run: Any) -> Snapshot:
        import pandas as pd

        from analysis.compare import verdicts
        from analysis.load import LoadError, framed, load_runs, run_row
        from analysis.metrics import by_host, combined, records, summarize_all

        folder: Path = run.folder
        if run.record.status is not Status.RUNNING:  # finished: exactly what the report reads
            loaded = load_runs([folder])
            if loaded.skipped:
                raise LoadError(str(loaded.skipped[0]))
            runs, stats, samples, failures = loaded.runs, loaded.stats, loaded.samples, loaded.failures
            record = run.record
        else:
            record = self._live_record(run)
            env = self.session.environment
            total = env.stats.total
            stats = pd.DataFrame([{
                "run_id": folder.name, "requests": total.num_requests, "failures": total.num_failures,
                "rps": total.total_rps, "p50_ms": total.get_response_time_percentile(0.5),
                "p95_ms": total.get_response_time_percentile(0.95), "p99_ms": total.get_response_time_percentile(0.99),
            }])  # fmt: skip
            target = self._live_target(run)
            runs = pd.DataFrame([run_row(record, target, folder.name, str(folder))])
            samples = self._tail.read(folder / SOCKETS_CSV)
            errors = [{"Method": e.method, "Name": e.name, "Error": str(e.error), "Occurrences": e.occurrences}
                      for e in env.stats.errors.values()]  # fmt: skip
            failures_frame = pd.DataFrame(errors, columns=["Method", "Name", "Error", "Occurrences"])
            samples, failures = framed(folder.name, samples, failures_frame)
        summary, hosts = summarize_all(runs, stats, samples, failures)
        verdict = verdicts(summary, runs)
        row = {k: _clean(v) for k, v in summary.iloc[0].to_dict().items()} if len(summary) else {}
        parts = by_host(samples)  # several hosts: "now" is the sum of each host's last sample
        latest = combined(parts).iloc[-1] if len(parts) > 1 else samples.iloc[-1] if len(samples) else None
        last = {k: _clean(v) for k, v in latest.to_dict().items()} if latest is not None else {}
        return Snapshot(
            run_id=folder.name,
            status=str(record.status),
            status_reason=str(record.status_reason or ""),
            folder=str(folder),
            summary=row,
            verdict=str(verdict["verdict"].iloc[0]) if len(verdict) else "",
            why=str(verdict["why"].iloc[0]) if len(verdict) else "",
            by_name=self._by_name(record, row),
            last_sample=last,
            tcp_tw_reuse=record.kernel.tcp_tw_reuse,
            hosts=[{k: _clean(v) for k, v in h.items()} for h in records(hosts)] if len(hosts) > 1 else [],
        )

    def _live_record(self, run: Any) -> RunRecord:
        record = copy.copy(run.record)
        env = self.session.environment
        record.client_connections = self.session.connection_totals()
        record.requests, record.failures = env.stats.total.num_requests, env.stats.total.num_failures
        record.last_request_ts = env.stats.total.last_request_timestamp
        record.duration_s = round(time.monotonic() - run.started_mono, 3)
        return record

    def _live_target(self, run: Any) -> TargetCounts | None:
        try:
            counts = self.session.servers.target_counts()
        except OSError:
            return None
        return counts.minus(run.target_baseline) if counts is not None else None

    @staticmethod
    def _by_name(record: RunRecord, row: dict[str, Any]) -> list[dict[str, Any]]:
        """The Connections tab's rows: one per request name (connections.csv's), then the total (the summary's)."""
        conns = record.client_connections
        rows = [_tab_row(r) for r in by_name_rows(conns)]
        if conns is not None:
            requests = row.get("requests") or 0
            opened = row.get("connections_opened")
            new_conn = sum(r["new_connection_requests"] for r in by_name_rows(conns)) if conns.by_name else None
            rows.append(_tab_row({
                "name": "Total",
                "requests": requests,
                "connections_opened": opened,
                "connections_per_request": row.get("connections_per_request"),
                "reuse_pct": (100.0 * (requests - new_conn) / requests) if requests and new_conn is not None else None,
                "closed_by_client": conns.closed_by_client or 0,
                "reset_by_client": conns.reset_by_client or 0,
                "closed_by_server": row.get("server_closes") or conns.closed_by_server or 0,
                "discarded": conns.discarded,
                "connect_errors_by_errno": conns.connect_errors_by_errno,
                "connect_ms_mean": row.get("connect_ms_mean"),
                "tls_ms_mean": row.get("tls_ms_mean"),
            }))  # fmt: skip
        return rows


def _whole(value: Any) -> Any:
    """A count as an integer, though the summary may hold it as a float; None stays None."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _tab_row(r: dict[str, Any]) -> dict[str, Any]:
    per_request, reuse = _clean(r.get("connections_per_request")), _clean(r.get("reuse_pct"))
    connect_ms, tls_ms = _clean(r.get("connect_ms_mean")), _clean(r.get("tls_ms_mean"))
    errnos = r.get("connect_errors_by_errno") or {}
    return {
        "name": r["name"],
        "requests": _whole(r["requests"]),
        "connections": _whole(_clean(r["connections_opened"])),
        "per_request": None if per_request is None else round(per_request, 3),
        "reuse_pct": None if reuse is None else round(reuse, 1),
        "closed_by_client": _whole(r["closed_by_client"] + r["reset_by_client"]),
        "closed_by_server": _whole(r["closed_by_server"]),
        "discarded": _whole(r["discarded"]),
        "connect_errors": (
            ", ".join(f"errno {code} x {n}" for code, n in sorted(errnos.items())) or str(r.get("connect_errors", 0))
        ),  # fmt: skip
        "connect_ms": None if connect_ms is None else round(connect_ms, 2),
        "tls_ms": None if tls_ms is None else round(tls_ms, 2),
    }


class SamplesTail:
    """sockets.csv as it grows: each read parses only the rows added since the last one."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.offset = 0
        self.header = ""
        self.frame: Any = None

    def read(self, path: Path) -> Any:
        import pandas as pd

        from analysis.load import samples_from_text

        if path != self.path:
            self.path, self.offset, self.header, self.frame = path, 0, "", samples_from_text("")
        try:
            with open(path, "rb") as f:
                f.seek(self.offset)
                added = f.read()
        except OSError:
            return self.frame
        complete = added[: added.rfind(b"\n") + 1]  # a row being written waits for the next read
        if not complete:
            return self.frame
        self.offset += len(complete)
        whole = complete.decode()
        if not self.header:
            self.header, _, whole = whole.partition("\n")
            self.header += "\n"
        if whole:
            rows = samples_from_text(self.header + whole)
            self.frame = rows if self.frame.empty else pd.concat([self.frame, rows], ignore_index=True)
        return self.frame
