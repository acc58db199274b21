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
Several client hosts (Locust workers on other machines, each host sampled by its own sidecar)
    ports run out per host, so each host gets its own figures (:func:`host_figures`, one row of
    ``hosts.csv`` each). The run's TIME_WAIT figures are the hosts' sums at each moment; its churn,
    port figures and projection are those of ``limiting_host``: the first host to hit errno 99,
    else the one with the highest projected port use.

Every division is guarded: a run with no request, no connection or no duration gets empty
figures, never an error.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

from keepalive_lab.schema import HOSTS_COLUMNS, SUMMARY_COLUMNS, histogram_mean_ms

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
    per_run = dict(tuple(samples.groupby("run_id", observed=True))) if len(samples) else {}
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


def reuse_pct(run: dict[str, Any], requests: float, per_request: float) -> float:
    """The share of requests that reused a connection, %."""
    new_requests = _num(run.get("client_new_connection_requests"))
    if requests > 0 and not math.isnan(new_requests):
        return 100.0 * max(0.0, requests - new_requests) / requests
    return math.nan if math.isnan(per_request) else 100.0 * max(0.0, 1.0 - per_request)


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


# -- several client hosts ----------------------------------------------------------------------

# Sample columns that add up across hosts: socket counts and the sidecar's cumulative counters.
_ADDITIVE = (
    "client_established", "client_time_wait", "client_close_wait", "client_other", "server_established",
    "server_time_wait", "server_close_wait", "server_other", "ports_in_use", "client_time_wait_churned",
    "client_time_wait_at_end", "server_time_wait_entered", "preexisting_client_time_wait",
    "preexisting_server_time_wait", "preexisting_ports_in_use", "host_client_time_wait", "host_server_time_wait",
    "host_ports_in_use", "active_opens", "passive_opens", "attempt_fails", "estab_resets", "tw_total",
)  # fmt: skip


def by_host(s: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """A run's samples per host, in the order the hosts first appear, each host's in time order.
    Rows grouped host by host (as :mod:`analysis.load` leaves them) are sliced, not copied."""
    if not len(s):
        return {}
    codes, names = pd.factorize(s["host"])
    if len(names) == 1:  # one host: the common case
        parts = {str(names[0]): s}
    else:
        starts = np.flatnonzero(np.diff(codes)) + 1
        if len(starts) == len(names) - 1:  # each host's rows together: slices
            bounds = [0, *starts.tolist(), len(s)]
            parts = {str(names[codes[a]]): s.iloc[a:b] for a, b in zip(bounds, bounds[1:], strict=False)}
        else:
            parts = {str(h): s[codes == i] for i, h in enumerate(names)}
    return {h: p if p["ts"].is_monotonic_increasing else p.sort_values("ts", kind="stable") for h, p in parts.items()}


def combined(parts: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Several hosts' samples as one timeline: at each sample time, each host's latest sample, summed
    (a host counts from its first sample on)."""
    times = np.unique(np.concatenate([p["ts"].to_numpy(dtype=float) for p in parts.values()]))
    # Each host's latest sample at each time (-1: none yet), found once for every column.
    latest = [np.searchsorted(p["ts"].to_numpy(dtype=float), times, side="right") - 1 for p in parts.values()]
    total = pd.DataFrame({"ts": times})
    for column in _ADDITIVE:
        columns = [pd.to_numeric(p[column], errors="coerce").to_numpy() for p in parts.values()]
        dtype = np.result_type(*columns)  # counts stay whole numbers of their own width; a gap makes floats
        summed = np.zeros(len(times), dtype=dtype)
        for values, at in zip(columns, latest, strict=True):
            taken = values[np.clip(at, 0, None)]
            summed += np.where(at >= 0, np.nan_to_num(taken) if dtype.kind == "f" else taken, 0).astype(dtype)
        total[column] = summed
    total["port_range"] = max(_peak(p, "port_range") for p in parts.values())
    return total


def _host_entries(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    entries = run.get("hosts")
    return {str(h.get("host")): h for h in entries if isinstance(h, dict)} if isinstance(entries, list) else {}


def host_figures(run: dict[str, Any], s: pd.DataFrame, entry: dict[str, Any] | None, errno99: float) -> dict[str, Any]:
    """One host's row of ``hosts.csv``: its own churn, ports and projection against its own range.

    ``entry``: the host's counts in run.json (None for a run without workers, whose counts are the
    run's); ``errno99``: its connects that failed with errno 99.
    """
    own = dict(run)
    if entry is not None:
        own["first_addr_not_available_ts"] = entry.get("first_addr_not_available_ts")
        own["opened_before_addr_not_available"] = entry.get("opened_before_addr_not_available")
        kernel = entry.get("kernel") or {}
        if "port_range" in kernel:
            own["port_range"] = kernel["port_range"]
    f = sample_figures(own, s)
    start, end = load_window(own, s)
    churn = _div(f["kernel_churned"], end - start if end > start else math.nan)
    port_range = f["sampled_port_range"] if not math.isnan(f["sampled_port_range"]) else _num(own.get("port_range"))
    pct = _div(churn * TIME_WAIT_S * 100, port_range)
    t0, t99 = _num(run.get("first_connect_ts")), _num(own.get("first_addr_not_available_ts"))
    return {
        "workers": len(entry.get("workers") or []) if entry is not None else 1,
        "connections_opened": _num(entry.get("opened")) if entry is not None else _num(run.get("client_opened")),
        "churn_per_s": churn,
        "peak_client_time_wait": f["peak_client_time_wait"],
        "peak_ports_in_use": f["peak_ports_in_use"],
        "port_range": port_range,
        "projected_port_use_pct": pct,
        "seconds_to_exhaustion": _div(port_range, churn) if pct >= 100 else math.nan,
        "addr_not_available_errors": errno99,
        "observed_seconds_to_exhaustion": t99 - t0 if not (math.isnan(t0) or math.isnan(t99)) else math.nan,
        "first_addr_not_available_ts": t99,
        "opened_before_addr_not_available": _num(own.get("opened_before_addr_not_available")),
    }


def hosts_of(run: dict[str, Any], s: pd.DataFrame, parts: dict[str, pd.DataFrame], errno99_by_host: dict[str, int],
             errno99: int) -> list[dict]:  # fmt: skip
    """Every host of one run with its figures (:func:`host_figures`): the sampled ones (``parts``: its
    samples ``s`` :func:`by_host`) and those with workers."""
    entries = _host_entries(run)
    names = list(dict.fromkeys([*parts, *entries]))
    single = len(names) <= 1 and not entries
    rows = []
    for name in names:
        entry = entries.get(name)
        if entry is not None and entry.get("addr_not_available") is not None:
            errors = float(entry["addr_not_available"])
        else:
            errors = float(errno99 if single else errno99_by_host.get(name, 0))
        part = parts.get(name, s.iloc[:0])
        rows.append({"run_id": run["run_id"], "host": name, **host_figures(run, part, entry, errors)})
    return rows


def limiting(hosts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The host whose ports run out first: the first to hit errno 99, else the highest projected use."""
    if not hosts:
        return None
    ran_out = [h for h in hosts if not math.isnan(h["first_addr_not_available_ts"])]
    if ran_out:
        return min(ran_out, key=lambda h: h["first_addr_not_available_ts"])

    def key(h: dict[str, Any]) -> tuple[bool, float, float]:  # a host with no client cannot run out
        pct, peak = h["projected_port_use_pct"], _div(h["peak_ports_in_use"], h["port_range"])
        return (h["workers"] > 0, -1.0 if math.isnan(pct) else pct, -1.0 if math.isnan(peak) else peak)

    return max(hosts, key=key)


def _several_hosts(row: dict[str, Any], run: dict[str, Any], hosts: list[dict[str, Any]]) -> None:
    """A run on several client hosts: its port figures, projection and exhaustion are its limiting host's."""
    worst = limiting(hosts)
    assert worst is not None
    row["limiting_host"] = worst["host"]
    for key in ("churn_per_s", "peak_ports_in_use", "port_range", "projected_port_use_pct", "seconds_to_exhaustion",
                "observed_seconds_to_exhaustion"):  # fmt: skip
        row[key] = worst[key]
    row["connections_before_exhaustion"] = worst["opened_before_addr_not_available"]
    row["peak_port_use_pct"] = _div(worst["peak_ports_in_use"] * 100, worst["port_range"])
    if not math.isnan(_num(row.get("tw_reuse_limit_per_s"))):
        row["tw_reuse_limit_per_s"] = worst["port_range"]


def summarize(
    runs: pd.DataFrame, stats: pd.DataFrame, samples: pd.DataFrame | dict[str, pd.DataFrame], failures: pd.DataFrame
) -> pd.DataFrame:
    """The summary frame: one row per run that has stats, :data:`SUMMARY_COLUMNS`."""
    return summarize_all(runs, stats, samples, failures)[0]


def per_run(samples: pd.DataFrame | dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Samples by run id: a frame of several runs grouped, or the per-run frames as they are."""
    if isinstance(samples, dict):
        return samples
    return dict(tuple(samples.groupby("run_id", observed=True))) if len(samples) else {}


def summarize_all(
    runs: pd.DataFrame, stats: pd.DataFrame, samples: pd.DataFrame | dict[str, pd.DataFrame], failures: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The summary frame and the hosts frame (one row per run and host, :data:`HOSTS_COLUMNS`).

    ``samples``: every run's samples in one frame, or by run id (:attr:`analysis.load.Loaded.samples_by_run`).
    """
    if runs.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS)), pd.DataFrame(columns=list(HOSTS_COLUMNS))
    # Built a run at a time from plain dicts: a row per run, whether 1 (the web UI's live view,
    # every 2 s) or hundreds (a report), without a pandas merge per column group.
    matched = {column: failures_matching(failures, pattern)
               for pattern, column in ((ERRNO_99_PATTERN, "addr_not_available_errors"),
                                       (STALE_PATTERN, "connection_errors"))}  # fmt: skip
    errno99_by_host = _errno99_by_host(failures)
    stats_by_id = {r["run_id"]: r for r in records(stats)}
    by_run = per_run(samples)
    empty = next(iter(by_run.values())).iloc[:0] if by_run else pd.DataFrame(columns=["ts", "host"])
    rows, host_rows = [], []
    for run in records(runs):
        run_id = run["run_id"]
        if run_id not in stats_by_id:
            continue
        s = by_run[run_id] if run_id in by_run else empty
        parts = by_host(s)
        if len(parts) == 1:
            s = next(iter(parts.values()))  # in time order
        several = len(parts) > 1 or bool(_host_entries(run))
        errno99 = matched["addr_not_available_errors"].get(run_id, 0)
        hosts = hosts_of(run, s, parts, errno99_by_host.get(run_id, {}), errno99) if several else []
        several = len(hosts) > 1
        row = {key: run[key] for key in ("run_id", "scenario", "status", "duration_s", "start")}
        row.update(stats_by_id[run_id])
        row["connections_opened"], row["connections_source"] = connection_count(run, s)
        for column, counts in matched.items():
            row[column] = counts.get(run_id, 0)
        row.update(run_figures(run, stats_by_id[run_id], combined(parts) if len(parts) > 1 else s), **exhaustion(run))
        row["client_hosts"] = sum(1 for h in hosts if h["workers"]) if several else 1
        row["limiting_host"] = ""
        if several:
            _several_hosts(row, run, hosts)
        row["tls_errors"] = _num(run.get("client_tls_errors"))
        requests, observed = _num(row["requests"]), row["observed_seconds_to_exhaustion"]
        row.update(connection_cost(run, requests))
        row["connections_per_request"] = row["connections_opened"] / requests if requests > 0 else math.nan
        row["reuse_pct"] = reuse_pct(run, requests, row["connections_per_request"])
        row["projection_error_pct"] = (
            abs(row["seconds_to_exhaustion"] - observed) / observed * 100 if observed > 0 else math.nan
        )
        rows.append(row)
        if not hosts and parts:  # one host: its row holds the run's own figures, computed once above
            own = {k: row[k] for k in HOSTS_COLUMNS if k not in ("run_id", "host", "workers", "connections_opened")}
            hosts = [{"run_id": run_id, "host": next(iter(parts)), "workers": 1,
                      "connections_opened": _num(run.get("client_opened")), **own}]  # fmt: skip
        host_rows.extend(hosts)
    host_frame = pd.DataFrame(host_rows, columns=list(HOSTS_COLUMNS))
    if not rows:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS)), host_frame
    df = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    return (df.sort_values("start", kind="stable").reset_index(drop=True) if len(df) > 1 else df), host_frame


def _errno99_by_host(failures: pd.DataFrame) -> dict[str, dict[str, int]]:
    """run -> host -> failures with errno 99 (failures.csv's Host column)."""
    out: dict[str, dict[str, int]] = {}
    if not len(failures) or "host" not in failures.columns:
        return out
    found = re.compile(ERRNO_99_PATTERN)
    for run_id, error, host, n in zip(failures["run_id"].tolist(), failures["error"].astype(str).tolist(),
                                      failures["host"].tolist(), failures["occurrences"].tolist(),
                                      strict=True):  # fmt: skip
        if isinstance(host, str) and found.search(error):
            out.setdefault(run_id, {})[host] = out.setdefault(run_id, {}).get(host, 0) + int(_num(n) or 0)
    return out
