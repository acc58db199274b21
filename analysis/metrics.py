"""Stage 2, metrics: one summary row per run (``reports/summary.csv``).

Every figure is defined once, here, and the columns with their meanings are
:data:`keepalive_lab.schema.SUMMARY`. The terminal tables, the report, the web UI and the gate
all read these rows. The main definitions:

``connections_opened``, ``connections_source``
    the best exact source: the target's accept count (``target``), else the client pool's count
    (``client``), else the ``active_opens`` delta of an isolated run (``kernel``). The target
    counts a connection once its TLS handshake is done, so when handshakes failed the client's
    count of TCP connections comes first.
``client_closes`` (and per request)
    connections the client closed while the server still held them open, during the load; the
    idle pooled connections closed when a pool shuts down are the end of reuse, not churn. From
    the client's pool, else from the kernel (the run's own sockets entering client TIME_WAIT).
    A run *churns* when it closes more than :data:`REUSE_MAX` connections per request.
``churn_per_s``
    the rate at which the run leaves TIME_WAIT on the client, in steady state: from its first
    connection to its last request (or to its first errno 99, when it ran out of ports). Counted
    by the sidecar (the run's own client sockets entering TIME_WAIT, idle closes at pool shutdown
    left out), else from the client's closes. The initial pool fill opens connections but leaves
    no TIME_WAIT, so it is not churn; a run whose server closes first has none on the client.
``projected_port_use_pct``, ``seconds_to_exhaustion``
    ``churn_per_s`` x 60 s (Linux's fixed TIME_WAIT length) against the port range; the range
    runs out after ``port_range / churn_per_s`` seconds when that is 100 % or more. With
    ``tcp_tw_reuse`` on for the destination, ``connect()`` also takes ports whose TIME_WAIT is over
    1 s old, so the range runs out only above ``tw_reuse_limit_per_s`` = range / 1 s.
``server_churn_per_s``, ``projected_server_tw_pct``
    the same on the server side, against ``net.ipv4.tcp_max_tw_buckets``.

Every division is guarded: a run with no request, no connection or no duration gets empty
figures, never an error.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from keepalive_lab.schema import SUMMARY_COLUMNS

TIME_WAIT_S = 60
REUSE_MAX = 0.1  # client closes per request at or below which a run reuses its connections
ERRNO_99_PATTERN = r"Errno 99\b|Cannot assign requested address|EADDRNOTAVAIL"
STALE_PATTERN = (
    r"RemoteDisconnected|ConnectionResetError|Connection reset|BrokenPipe|Broken pipe|Connection aborted"
    r"|ConnectionAborted|connection closed|HTTPConnectionClosed"
)
LOOPBACK_PREFIXES = ("http://127.", "https://127.", "http://localhost", "https://localhost", "http://[::1]",
                     "https://[::1]")  # fmt: skip


def _num(value: Any) -> float:
    """A number of a run, NaN when missing."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _div(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) and not math.isnan(a) else math.nan


def connections(runs: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """``connections_opened`` and ``connections_source`` per run, by DESIGN's precedence."""
    kernel = pd.Series(np.nan, index=runs["run_id"])
    if len(samples):
        grouped = samples.groupby("run_id")["active_opens"]
        kernel = (grouped.max() - grouped.min()).reindex(runs["run_id"])
    out = pd.DataFrame({"run_id": runs["run_id"].to_numpy()})
    target = pd.to_numeric(runs["target_accepted"], errors="coerce").to_numpy(dtype=float)
    client = pd.to_numeric(runs["client_opened"], errors="coerce").to_numpy(dtype=float)
    tls_failed = pd.to_numeric(runs["client_tls_errors"], errors="coerce").fillna(0).to_numpy() > 0
    target = np.where(tls_failed & ~np.isnan(client), np.nan, target)
    kern = np.where(runs["isolated"].to_numpy(dtype=bool), kernel.to_numpy(dtype=float), np.nan)
    out["connections_opened"] = np.where(~np.isnan(target), target, np.where(~np.isnan(client), client, kern))
    out["connections_source"] = np.where(
        ~np.isnan(target), "target", np.where(~np.isnan(client), "client", np.where(~np.isnan(kern), "kernel", ""))
    )
    return out


def failures_matching(failures: pd.DataFrame, pattern: str, column: str) -> pd.DataFrame:
    """Per run, the occurrences of failures whose error matches ``pattern``."""
    if not len(failures):
        return pd.DataFrame(columns=["run_id", column])
    hit = failures["error"].astype(str).str.contains(pattern, regex=True)
    occ = pd.to_numeric(failures["occurrences"], errors="coerce").fillna(0).where(hit, 0)
    return occ.groupby(failures["run_id"]).sum().rename(column).reset_index()


def _at_or_after(s: pd.DataFrame, column: str, ts: float) -> float:
    """``column`` at the first sample taken at or after ``ts`` (the last sample when none is)."""
    later = s[s["ts"] >= ts]
    row = later.iloc[0] if len(later) else s.iloc[-1]
    return _num(row[column])


def sample_figures(run: dict[str, Any], s: pd.DataFrame) -> dict[str, float]:
    """The figures of one run that come from its socket samples (``s``, sorted by time)."""
    out = dict.fromkeys(
        ("peak_client_time_wait", "peak_server_time_wait", "peak_ports_in_use", "preexisting_client_time_wait",
         "peak_host_ports_in_use", "kernel_churned", "kernel_server_entered", "sampled_port_range"),
        math.nan,
    )  # fmt: skip
    if not len(s):
        return out
    out["peak_client_time_wait"] = _num(s["client_time_wait"].max())
    out["peak_server_time_wait"] = _num(s["server_time_wait"].max())
    out["peak_ports_in_use"] = _num(s["ports_in_use"].max())
    out["preexisting_client_time_wait"] = _num(s["preexisting_client_time_wait"].iloc[0])
    out["peak_host_ports_in_use"] = _num(s["host_ports_in_use"].max())
    out["sampled_port_range"] = _num(s["port_range"].max())
    start, end = load_window(run, s)
    if not math.isnan(end):
        for column, key in (("client_time_wait_churned", "kernel_churned"),
                            ("server_time_wait_entered", "kernel_server_entered")):  # fmt: skip
            if s[column].notna().any():
                out[key] = _at_or_after(s, column, end) - _num(s[column].iloc[0])
    return out


def load_window(run: dict[str, Any], s: pd.DataFrame | None = None) -> tuple[float, float]:
    """(start, end) of the run's load, Unix seconds: its first connection (else its first sample) to
    its last request, or to its first errno 99 when it ran out of ports."""
    start = _num(run.get("first_connect_ts"))
    if math.isnan(start) and s is not None and len(s):
        start = _num(s["ts"].iloc[0])
    end = _num(run.get("first_addr_not_available_ts"))
    if math.isnan(end):
        end = _num(run.get("last_request_ts"))
    return start, end


def run_figures(run: dict[str, Any], stats: dict[str, Any], s: pd.DataFrame) -> dict[str, Any]:
    """Every summary figure of one run but the connection count and the failure counts."""
    f = sample_figures(run, s)
    requests = _num(stats.get("requests"))
    start, end = load_window(run, s)
    seconds = end - start if end > start else math.nan
    client_counted = _num(run.get("client_closed_by_client"))
    if not math.isnan(client_counted):
        client_closes = client_counted + (_num(run.get("client_reset_by_client")) or 0)
    else:
        client_closes = f["kernel_churned"]
    if not math.isnan(f["kernel_churned"]):
        churn, churn_source = _div(f["kernel_churned"], seconds), "kernel"
    elif not math.isnan(client_counted):
        churn, churn_source = _div(client_counted, seconds), "client"
    else:
        churn, churn_source = math.nan, ""
    port_range = f["sampled_port_range"] if not math.isnan(f["sampled_port_range"]) else _num(run.get("port_range"))
    pct = _div(churn * TIME_WAIT_S * 100, port_range)
    reuse = run.get("tcp_tw_reuse")
    host = run.get("host") if isinstance(run.get("host"), str) else ""
    reuses_tw = reuse == 1 or (reuse == 2 and host.startswith(LOOPBACK_PREFIXES))
    server_closes = _num(run.get("target_closed_by_server"))
    if math.isnan(server_closes):
        server_closes = _num(run.get("client_closed_by_server"))
    server_churn = _div(f["kernel_server_entered"], seconds)
    buckets = _num(run.get("tcp_max_tw_buckets"))
    peak_client, peak_server = f["peak_client_time_wait"], f["peak_server_time_wait"]
    tw = peak_client + peak_server
    return {
        "client_closes": client_closes,
        "client_closes_per_request": _div(client_closes, requests),
        "server_closes": server_closes,
        "churn_per_s": churn,
        "churn_source": churn_source,
        "peak_client_time_wait": peak_client,
        "peak_server_time_wait": peak_server,
        "peak_ports_in_use": f["peak_ports_in_use"],
        "port_range": port_range,
        "peak_port_use_pct": _div(f["peak_ports_in_use"] * 100, port_range),
        "preexisting_client_time_wait": f["preexisting_client_time_wait"],
        "peak_host_ports_in_use": f["peak_host_ports_in_use"],
        "projected_port_use_pct": pct,
        "seconds_to_exhaustion": _div(port_range, churn) if pct >= 100 else math.nan,
        "tw_reuse_limit_per_s": port_range if reuses_tw else math.nan,
        "server_time_wait_pct": _div(peak_server * 100, tw),
        "server_churn_per_s": server_churn,
        "tcp_max_tw_buckets": buckets,
        "projected_server_tw_pct": _div(server_churn * TIME_WAIT_S * 100, buckets),
    }


def exhaustion(run: dict[str, Any]) -> dict[str, float]:
    """For a run that hit errno 99: when, and after how many connections."""
    t0, t99 = _num(run.get("first_connect_ts")), _num(run.get("first_addr_not_available_ts"))
    observed = t99 - t0 if not (math.isnan(t0) or math.isnan(t99)) else math.nan
    return {
        "observed_seconds_to_exhaustion": observed,
        "connections_before_exhaustion": _num(run.get("opened_before_addr_not_available")),
    }


def summarize(runs: pd.DataFrame, stats: pd.DataFrame, samples: pd.DataFrame, failures: pd.DataFrame) -> pd.DataFrame:
    """The summary frame: one row per run, :data:`SUMMARY_COLUMNS`."""
    if runs.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    df = runs[["run_id", "scenario", "status", "duration_s", "start"]].merge(stats, on="run_id")
    df = df.merge(connections(runs, samples), on="run_id")
    for pattern, column in ((ERRNO_99_PATTERN, "addr_not_available_errors"), (STALE_PATTERN, "connection_errors")):
        df = df.merge(failures_matching(failures, pattern, column), on="run_id", how="left")
        df[column] = pd.to_numeric(df[column], errors="coerce").fillna(0).astype(int)
    by_id = {r["run_id"]: r for r in runs.to_dict("records")}
    stats_by_id = {r["run_id"]: r for r in stats.to_dict("records")}
    per_run = dict(tuple(samples.groupby("run_id"))) if len(samples) else {}
    rows = []
    for run_id in df["run_id"]:
        run = by_id[run_id]
        s = per_run.get(run_id, pd.DataFrame(columns=samples.columns)).sort_values("ts")
        rows.append({"run_id": run_id, **run_figures(run, stats_by_id[run_id], s), **exhaustion(run),
                     "tls_errors": _num(run.get("client_tls_errors"))})  # fmt: skip
    df = df.merge(pd.DataFrame(rows), on="run_id")
    df["connections_per_request"] = (df["connections_opened"] / df["requests"].astype(float)).where(df["requests"] > 0)
    observed = df["observed_seconds_to_exhaustion"]
    df["projection_error_pct"] = ((df["seconds_to_exhaustion"] - observed).abs() / observed * 100).where(observed > 0)
    return df[list(SUMMARY_COLUMNS)].sort_values("start", kind="stable").reset_index(drop=True)
