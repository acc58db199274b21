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
import re
from typing import Any

import numpy as np
import pandas as pd

from keepalive_lab.schema import SUMMARY_COLUMNS, histogram_mean_ms

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


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """``frame.to_dict("records")``, Python scalars and all, without its per-cell cost (a live view
    asks for a 1-row frame's records every 2 s)."""
    columns = [frame[c].tolist() for c in frame.columns]
    return [dict(zip(frame.columns, values, strict=True)) for values in zip(*columns, strict=True)]


def _div(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) and not math.isnan(a) else math.nan


def connection_count(run: dict[str, Any], s: pd.DataFrame) -> tuple[float, str]:
    """(``connections_opened``, ``connections_source``) of one run (``s``: its samples), by DESIGN's
    precedence."""
    target, client = _num(run.get("target_accepted")), _num(run.get("client_opened"))
    if not math.isnan(target) and not ((_num(run.get("client_tls_errors")) or 0) > 0 and not math.isnan(client)):
        return target, "target"
    if not math.isnan(client):
        return client, "client"
    if bool(run.get("isolated")) and len(s):
        opens = pd.to_numeric(s["active_opens"], errors="coerce")
        if opens.notna().any():
            return float(opens.max() - opens.min()), "kernel"
    return math.nan, ""


def connections(runs: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """``connections_opened`` and ``connections_source`` per run (:func:`connection_count`)."""
    per_run = dict(tuple(samples.groupby("run_id"))) if len(samples) else {}
    counted = [(run["run_id"], *connection_count(run, per_run.get(run["run_id"], samples.iloc[:0])))
               for run in records(runs)]  # fmt: skip
    return pd.DataFrame(counted, columns=["run_id", "connections_opened", "connections_source"])


def failures_matching(failures: pd.DataFrame, pattern: str) -> dict[str, int]:
    """Per run, the occurrences of failures whose error matches ``pattern`` (Locust's failures are
    one row per distinct error: a few rows, so plain Python)."""
    found = re.compile(pattern)
    out: dict[str, int] = {}
    if not len(failures):
        return out
    occurrences = pd.to_numeric(failures["occurrences"], errors="coerce").fillna(0).astype(int).tolist()
    for run_id, error, n in zip(failures["run_id"].tolist(), failures["error"].astype(str).tolist(), occurrences,
                                strict=True):  # fmt: skip
        if found.search(error):
            out[run_id] = out.get(run_id, 0) + n
    return out


def _at_or_after(s: pd.DataFrame, column: str, ts: float) -> float:
    """``column`` at the first sample taken at or after ``ts`` (the last sample when none is); ``s`` is
    sorted by time."""
    i = int(np.searchsorted(s["ts"].to_numpy(dtype=float), ts, side="left"))
    return _num(s[column].iloc[min(i, len(s) - 1)])


def _peak(s: pd.DataFrame, column: str) -> float:
    values = pd.to_numeric(s[column], errors="coerce").to_numpy(dtype=float)
    return math.nan if np.isnan(values).all() else float(np.nanmax(values))


def sample_figures(run: dict[str, Any], s: pd.DataFrame) -> dict[str, float]:
    """The figures of one run that come from its socket samples (``s``, sorted by time)."""
    out = dict.fromkeys(
        ("peak_client_time_wait", "peak_server_time_wait", "peak_ports_in_use", "preexisting_client_time_wait",
         "peak_host_ports_in_use", "kernel_churned", "kernel_server_entered", "sampled_port_range"),
        math.nan,
    )  # fmt: skip
    if not len(s):
        return out
    out["peak_client_time_wait"] = _peak(s, "client_time_wait")
    out["peak_server_time_wait"] = _peak(s, "server_time_wait")
    out["peak_ports_in_use"] = _peak(s, "ports_in_use")
    out["preexisting_client_time_wait"] = _num(s["preexisting_client_time_wait"].iloc[0])
    out["peak_host_ports_in_use"] = _peak(s, "host_ports_in_use")
    out["sampled_port_range"] = _peak(s, "port_range")
    start, end = load_window(run, s)
    ran_out = not math.isnan(_num(run.get("first_addr_not_available_ts")))
    if not math.isnan(end):
        for column, key in (("client_time_wait_churned", "kernel_churned"),
                            ("server_time_wait_entered", "kernel_server_entered")):  # fmt: skip
            if s[column].notna().any():
                if column == "client_time_wait_churned" and not ran_out:
                    # After its last request a run's client closes only what its end closes, and the
                    # report of such a close can reach the sidecar after the sample that first saw
                    # its TIME_WAIT (the sidecar then moves it out of the churn): the last sample
                    # holds every correction.
                    last = _num(s[column].iloc[-1])
                else:
                    last = _at_or_after(s, column, end)
                out[key] = last - _num(s[column].iloc[0])
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


def connection_cost(run: dict[str, Any], requests: float) -> dict[str, float]:
    """What a new connection cost (mean TCP connect and TLS handshake, ms), and what reuse saved.

    ``reuse_saved_s``: the requests that reused a connection (those during which none was
    opened), times the mean cost of a new one: the time those requests would have spent
    connecting.
    """
    means = [
        histogram_mean_ms(h) if isinstance(h, dict) else None
        for h in (run.get("client_connect_ms"), run.get("client_tls_ms"))
    ]
    connect_ms, tls_ms = (math.nan if m is None else m for m in means)
    new_requests = _num(run.get("client_new_connection_requests"))
    if math.isnan(new_requests):
        new_requests = _num(run.get("client_opened"))
    reused = max(0.0, requests - new_requests) if not math.isnan(new_requests) and requests > 0 else math.nan
    cost_ms = connect_ms + (0.0 if math.isnan(tls_ms) else tls_ms)
    return {"connect_ms_mean": connect_ms, "tls_ms_mean": tls_ms, "reuse_saved_s": reused * cost_ms / 1000}


def exhaustion(run: dict[str, Any]) -> dict[str, float]:
    """For a run that hit errno 99: when, and after how many connections."""
    t0, t99 = _num(run.get("first_connect_ts")), _num(run.get("first_addr_not_available_ts"))
    observed = t99 - t0 if not (math.isnan(t0) or math.isnan(t99)) else math.nan
    return {
        "observed_seconds_to_exhaustion": observed,
        "connections_before_exhaustion": _num(run.get("opened_before_addr_not_available")),
    }


def summarize(runs: pd.DataFrame, stats: pd.DataFrame, samples: pd.DataFrame, failures: pd.DataFrame) -> pd.DataFrame:
    """The summary frame: one row per run that has stats, :data:`SUMMARY_COLUMNS`."""
    if runs.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    # Built a run at a time from plain dicts: a row per run, whether 1 (the web UI's live view,
    # every 2 s) or hundreds (a report), without a pandas merge per column group.
    matched = {column: failures_matching(failures, pattern)
               for pattern, column in ((ERRNO_99_PATTERN, "addr_not_available_errors"),
                                       (STALE_PATTERN, "connection_errors"))}  # fmt: skip
    stats_by_id = {r["run_id"]: r for r in records(stats)}
    per_run = dict(tuple(samples.groupby("run_id"))) if len(samples) else {}
    rows = []
    for run in records(runs):
        run_id = run["run_id"]
        if run_id not in stats_by_id:
            continue
        s = per_run[run_id] if run_id in per_run else samples.iloc[:0]
        if not s["ts"].is_monotonic_increasing:
            s = s.sort_values("ts", kind="stable")
        row = {key: run[key] for key in ("run_id", "scenario", "status", "duration_s", "start")}
        row.update(stats_by_id[run_id])
        row["connections_opened"], row["connections_source"] = connection_count(run, s)
        for column, counts in matched.items():
            row[column] = counts.get(run_id, 0)
        row.update(run_figures(run, stats_by_id[run_id], s), **exhaustion(run))
        row["tls_errors"] = _num(run.get("client_tls_errors"))
        requests, observed = _num(row["requests"]), row["observed_seconds_to_exhaustion"]
        row.update(connection_cost(run, requests))
        row["connections_per_request"] = row["connections_opened"] / requests if requests > 0 else math.nan
        row["projection_error_pct"] = (
            abs(row["seconds_to_exhaustion"] - observed) / observed * 100 if observed > 0 else math.nan
        )
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    df = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    return df.sort_values("start", kind="stable").reset_index(drop=True) if len(df) > 1 else df
