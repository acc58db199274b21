"""Stage 3, compare: a plain-language verdict per run, and why.

:func:`verdicts` returns one row per run: ``verdict`` (what happened, in numbers, one sentence),
``why`` (the setting or peer that caused it), ``time_wait_side`` (``client``, ``server`` or
``none``), ``churns`` (True when the client closes more than
:data:`~analysis.metrics.REUSE_MAX` connections per request), ``severity`` (3 out of ports to 0
reuses) and ``short`` (the verdict in at most 12 words). :func:`regressions` sets each scenario's
newest run against its previous one, or a baseline's. Every number comes from the summary row
(:mod:`analysis.metrics`); nothing is computed again here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from analysis.metrics import REUSE_MAX, records
from keepalive_lab.schema import SUMMARY_NUMERIC

PEER_CAUSES = {
    "http.server": "HTTP/1.0",
    "nginx-close": "nginx keepalive_timeout 0",
    "nginx-low-requests": "nginx keepalive_requests 3",
}
SERVER_CLOSES_MIN = 0.5  # server closes per request from which "the server closes connections"


def _text(value: Any) -> str:
    """A string field of a run; missing values (None, NaN) read as empty."""
    return value if isinstance(value, str) else ""


def _count(value: Any) -> float:
    """A count field of a run; missing values (None, NaN) read as 0."""
    return 0 if value is None or pd.isna(value) else value


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _n(value: Any) -> str:
    return "?" if _missing(value) else f"{int(round(value)):,}"


def _plural(value: Any, noun: str) -> str:
    return f"{_n(value)} {noun}{'' if not _missing(value) and round(value) == 1 else 's'}"


def _secs(value: Any) -> str:
    if _missing(value):
        return "? s"
    return f"{value:.2f} s" if value < 10 else f"{value:,.0f} s"


def _per_request(value: float, what: str = "connection") -> str:
    return f"1 {what} per request" if round(value, 2) == 1 else f"{value:.2f} {what}s per request"


def time_wait_side(client_tw: float, server_tw: float) -> str:
    client_tw = 0 if pd.isna(client_tw) else client_tw
    server_tw = 0 if pd.isna(server_tw) else server_tw
    if client_tw == server_tw == 0:
        return "none"
    return "client" if client_tw >= server_tw else "server"


def server_close_cause(run: dict[str, Any]) -> str:
    """Why the server closes connections, in a few words."""
    settings = run.get("settings") or {}
    mode = _text(run.get("target_mode"))
    if not settings.get("keep_alive", True):
        return "the client asks for Connection: close"
    if mode == "http10":
        return "HTTP/1.0"
    if mode.startswith("close-after:"):
        return f"after {mode.split(':')[1]} requests each"
    if mode.startswith("idle-timeout:"):
        return f"when idle for {mode.split(':')[1]} s"
    peer = _text(run.get("peer"))
    if peer in PEER_CAUSES:
        return PEER_CAUSES[peer]
    return "Connection: close" if mode == "close" else "its own choice"


def stale_keepalive(run: dict[str, Any]) -> tuple[float, float] | None:
    """(idle timeout, think time) when the server drops idle connections before the client reuses them."""
    mode = _text(run.get("target_mode"))
    think = (run.get("settings") or {}).get("think_time_s") or 0
    if mode.startswith("idle-timeout:") and float(mode.split(":")[1]) <= think:
        return float(mode.split(":")[1]), float(think)
    return None


def port_range_of(row: Mapping[str, Any]) -> str:
    """``the 28,232-port range``, or with several client hosts ``host b's 200-port range`` (the limiting one)."""
    host = _text(row.get("limiting_host"))
    size = f"{_n(row['port_range'])}-port range"
    return f"host {host}'s {size}" if host else f"the {size}"


def _projection(row: Mapping[str, Any]) -> str:
    """What the client's churn does to its ports: one clause, or nothing when it is sustainable."""
    secs, pct = row["seconds_to_exhaustion"], row["projected_port_use_pct"]
    limit = row.get("tw_reuse_limit_per_s")
    if not pd.isna(secs):
        if not pd.isna(limit) and row["churn_per_s"] < limit:
            return (f"; with no TIME_WAIT reuse {port_range_of(row)} would run out in {_secs(secs)}, but "
                    f"tcp_tw_reuse lets it hold up to {_n(limit)} new connections/s")  # fmt: skip
        return f"; at {_n(row['churn_per_s'])} new connections/s {port_range_of(row)} runs out in {_secs(secs)}"
    if not pd.isna(pct) and pct >= 1:
        return f"; at this rate it holds {pct:.0f}% of {port_range_of(row)} in TIME_WAIT"
    return ""


def verdict(row: Mapping[str, Any], run: dict[str, Any] | None = None) -> str:
    """One sentence with the run's numbers."""
    run = run or {}
    opened, requests = row["connections_opened"], row["requests"]
    status = row.get("status", "completed")
    prefix = "" if status == "completed" else f"[{status}] "
    if pd.isna(opened):
        return prefix + f"{_n(requests)} requests; connections not counted (no target, pool or isolated kernel count)"
    if not requests:
        return prefix + f"no request was made; {_plural(opened, 'connection')} opened"
    if not opened and row.get("failures") == requests:
        return prefix + f"no connection opened: every request failed ({_plural(requests, 'request')})"
    observed = row.get("observed_seconds_to_exhaustion")
    if observed is not None and not pd.isna(observed):
        text = (
            f"ran out of ephemeral ports after {_secs(observed)} and "
            f"{_plural(row['connections_before_exhaustion'], 'connection')}: {port_range_of(row)}"
        )
        projected = row.get("seconds_to_exhaustion")
        if projected is not None and not pd.isna(projected):
            text += (
                f" (projected {_secs(projected)} at {_n(row['churn_per_s'])} new connections/s, "
                f"{row['projection_error_pct']:.0f}% apart)"
            )
        return prefix + text + f"; then {_plural(row['addr_not_available_errors'], 'connect')} failed with errno 99"
    closes = row.get("client_closes_per_request")
    server_per_request = _count(row.get("server_closes")) / requests
    stale = stale_keepalive(run)
    if stale:
        idle, think = stale
        errors = row.get("connection_errors", 0)
        text = (f"stale keep-alive: the server closes connections idle for {idle:g} s, before the client's next "
                f"request {think:g} s later: {_plural(opened, 'connection')} for {_plural(requests, 'request')}, "
                f"{_plural(errors, 'request')} failed on a closed connection")  # fmt: skip
    elif server_per_request >= SERVER_CLOSES_MIN and not (not pd.isna(closes) and closes > server_per_request):
        every = "every connection" if server_per_request >= 0.9 else "connections"
        text = (f"the server closes {every} ({server_close_cause(run)}): "
                f"{_per_request(row['connections_per_request'])}, TIME_WAIT on the server")  # fmt: skip
        share = row.get("server_time_wait_pct")
        if not pd.isna(share) and share < 100:
            text += f" ({share:.0f}%; the client closed first on the rest)"
    elif not pd.isna(closes) and closes > REUSE_MAX:
        text = f"churns: the client closes {_per_request(closes)}" + _projection(row)
    else:
        text = f"reuses connections: {_plural(opened, 'connection')} for {_plural(requests, 'request')}"
    server_pct = row.get("projected_server_tw_pct")
    if server_pct is not None and not pd.isna(server_pct) and server_pct >= 100:
        text += (f"; the server's TIME_WAIT would pass tcp_max_tw_buckets ({_n(row['tcp_max_tw_buckets'])}), "
                 "and the kernel would destroy TIME_WAIT sockets early")  # fmt: skip
    if row.get("addr_not_available_errors", 0):
        text += f"; {_n(row['addr_not_available_errors'])} connects failed with errno 99 (no free port)"
    return prefix + text


def connection_cost(row: Mapping[str, Any]) -> str:
    """What a new connection cost and what reuse saved, in ms and s; empty when no connect was timed."""
    connect, tls, saved = row.get("connect_ms_mean"), row.get("tls_ms_mean"), row.get("reuse_saved_s")
    if connect is None or pd.isna(connect):
        return ""
    text = f"each new connection cost {connect:.2f} ms to connect"
    if tls is not None and not pd.isna(tls):
        text += f" plus {tls:.2f} ms of TLS"
    if saved is not None and not pd.isna(saved):
        text += f"; reuse saved {saved:.2f} s over the run"
    return text


def why(run: dict[str, Any], row: Mapping[str, Any]) -> str:
    """The cause, from the settings that acted and the counters; empty when connections are reused."""
    settings = run.get("settings") or {}
    closes = row.get("client_closes_per_request")
    churns = bool(not pd.isna(closes) and closes > REUSE_MAX)
    reasons = []
    if stale_keepalive(run):
        reasons.append("urllib3 and geventhttpclient test a pooled connection before reusing it and reconnect "
                       "when the server has closed it; a close that races the request fails it")  # fmt: skip
    drain = settings.get("drain")
    if drain in ("none", "close") and churns:
        how = "leaves each body unread" if drain == "none" else "closes each body unread"
        reasons.append(f"the client {how} (drain {drain}), so no connection goes back to the pool")
    discarded = _count(run.get("client_discarded"))
    if discarded and churns and drain == "full":
        reasons.append(
            f"{_n(discarded)} connections came back to a full pool of {settings.get('pool_size')} "
            f"(more busy users than pool slots) and were closed"
        )
    side = time_wait_side(row["peak_client_time_wait"], row["peak_server_time_wait"])
    if reasons and side != "none":
        reasons.append(f"TIME_WAIT on the {side}")
    if side == "client" and churns and not reasons:
        reasons.append("the client closes first, so TIME_WAIT holds the client's ephemeral ports")
    return "; ".join(reasons)


VERDICT_COLUMNS = ("run_id", "verdict", "why", "time_wait_side", "churns", "cost", "severity", "short")


def verdicts(summary: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: :data:`VERDICT_COLUMNS` (``severity`` and ``short`` are defined below)."""
    by_id = {r["run_id"]: r for r in records(runs)}
    rows = []
    for row in records(summary):
        run = by_id.get(row["run_id"], {})
        closes = row["client_closes_per_request"]
        rows.append({
            "run_id": row["run_id"],
            "verdict": verdict(row, run),
            "why": why(run, row),
            "time_wait_side": time_wait_side(row["peak_client_time_wait"], row["peak_server_time_wait"]),
            "churns": bool(not pd.isna(closes) and closes > REUSE_MAX),
            "cost": connection_cost(row),
            "severity": severity(row, run),
            "short": short_verdict(row, run),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))


# -- the first screen: a short verdict and a severity per run ----------------------------------

SEVERITIES = (
    (3, "out of ports", "ran out of ports (errno 99), or failed"),
    (2, "will run out", "the churn runs a port range (or the server's TIME_WAIT table) out if it lasts"),
    (1, "churns", "churns connections, the server closes them, or the run did not complete"),
    (0, "reuses", "reuses its connections"),
)
SEVERITY_NAMES = {level: name for level, name, _ in SEVERITIES}


def severity(row: Mapping[str, Any], run: dict[str, Any] | None = None) -> int:
    """How bad a run is, 3 (out of ports, or failed) to 0 (reuses): the first screen's order and colour."""
    run = run or {}
    if not _missing(row.get("observed_seconds_to_exhaustion")) or row.get("status") == "failed":
        return 3
    limit, churn = row.get("tw_reuse_limit_per_s"), row.get("churn_per_s")
    reuse_holds = not _missing(limit) and not _missing(churn) and churn < limit
    server_pct = row.get("projected_server_tw_pct")
    if (not _missing(row.get("seconds_to_exhaustion")) and not reuse_holds) or (
        not _missing(server_pct) and server_pct >= 100
    ):
        return 2
    closes, requests = row.get("client_closes_per_request"), row.get("requests") or 0
    server_per_request = _count(row.get("server_closes")) / requests if requests else 0
    churns = not _missing(closes) and closes > REUSE_MAX
    if churns or server_per_request >= SERVER_CLOSES_MIN or stale_keepalive(run) or row.get("status") != "completed":
        return 1
    return 0


def short_verdict(row: Mapping[str, Any], run: dict[str, Any] | None = None) -> str:
    """The run in at most 12 words (the full sentence is :func:`verdict`)."""
    run = run or {}
    opened, requests = row.get("connections_opened"), row.get("requests")
    if _missing(opened):
        return "connections not counted"
    if not requests:
        return "no request was made"
    if not opened and row.get("failures") == requests:
        return "no connection opened: every request failed"
    if not _missing(row.get("observed_seconds_to_exhaustion")):
        host = _text(row.get("limiting_host"))
        return f"ran out of ports after {_secs(row['observed_seconds_to_exhaustion'])}" + (
            f" on {host}" if host else ""
        )
    if stale_keepalive(run):
        return "stale keep-alive: the server drops idle connections first"
    server_per_request = _count(row.get("server_closes")) / requests
    closes = row.get("client_closes_per_request")
    if server_per_request >= SERVER_CLOSES_MIN and not (not _missing(closes) and closes > server_per_request):
        return f"the server closes connections ({server_close_cause(run)})"
    if not _missing(closes) and closes > REUSE_MAX:
        secs, limit = row.get("seconds_to_exhaustion"), row.get("tw_reuse_limit_per_s")
        if not _missing(secs) and (_missing(limit) or row["churn_per_s"] >= limit):
            return f"churns: the port range runs out in {_secs(secs)}"
        return f"churns: the client closes {_per_request(closes)}"
    return f"reuses: {_plural(opened, 'connection')} for {_plural(requests, 'request')}"


# -- against earlier runs: did this change make the client open more connections? ---------------

# The metrics compared, and whether a rise is worse (True) or better (False).
REGRESSION_METRICS: tuple[tuple[str, bool], ...] = (
    ("connections_per_request", True),
    ("connections_opened", True),
    ("client_closes_per_request", True),
    ("churn_per_s", True),
    ("peak_client_time_wait", True),
    ("peak_ports_in_use", True),
    ("projected_port_use_pct", True),
    ("addr_not_available_errors", True),
    ("p95_ms", True),
    ("rps", False),
)
HIGHER_IS_BETTER = ("rps", "reuse_pct", "reuse_saved_s", "requests")
REGRESSION_COLUMNS = ("scenario", "run_id", "previous_run_id", "metric", "previous", "current", "delta", "delta_pct",
                      "worse", "material")  # fmt: skip
MATERIAL_PCT = 5.0  # a change smaller than this share of the previous value is run-to-run noise, not news


def previous_runs(summary: pd.DataFrame, baseline: pd.DataFrame | None = None) -> dict[str, dict[str, Any]]:
    """For each scenario's newest run, the run it is compared with: the newest run of that scenario in
    ``baseline`` when given, else the scenario's run before the newest."""
    out: dict[str, dict[str, Any]] = {}
    ordered = summary.sort_values("start", kind="stable")
    base = baseline.sort_values("start", kind="stable") if baseline is not None and len(baseline) else None
    for scenario, runs in ordered.groupby("scenario", sort=False):
        if base is not None:
            earlier = base[base["scenario"] == scenario]
            if len(earlier):
                out[str(scenario)] = records(earlier.tail(1))[0]
            continue
        if len(runs) > 1:
            out[str(scenario)] = records(runs.iloc[[-2]])[0]
    return out


def regressions(summary: pd.DataFrame, baseline: pd.DataFrame | None = None, every: bool = True) -> pd.DataFrame:
    """Each scenario's newest run against its previous one (:func:`previous_runs`), metric by metric:
    the values, the change (``delta``, and ``delta_pct`` of the previous value), whether it is
    worse, and whether it is ``material`` (at least :data:`MATERIAL_PCT` % of the previous value,
    or from 0). Every numeric column of summary.csv (the gate bounds any), or only
    :data:`REGRESSION_METRICS` (what the page shows) when not ``every``."""
    previous = previous_runs(summary, baseline)
    shown = dict(REGRESSION_METRICS)
    metrics = [(m, shown.get(m, m not in HIGHER_IS_BETTER)) for m in SUMMARY_NUMERIC] if every else REGRESSION_METRICS
    latest = summary.sort_values("start", kind="stable").groupby("scenario", sort=False).tail(1)
    rows = []
    for now in records(latest):
        before = previous.get(str(now["scenario"]))
        if before is None:
            continue
        for metric, rise_is_worse in metrics:
            a, b = before.get(metric), now.get(metric)
            if _missing(a) or _missing(b):
                continue
            delta = float(b) - float(a)
            pct = delta / abs(float(a)) * 100 if a else (0.0 if delta == 0 else math.inf)
            worse = delta > 0 if rise_is_worse else delta < 0
            material = delta != 0 and abs(pct) >= MATERIAL_PCT
            rows.append((now["scenario"], now["run_id"], before["run_id"], metric, float(a), float(b), delta, pct,
                         worse, material))  # fmt: skip
    return pd.DataFrame(rows, columns=list(REGRESSION_COLUMNS))
