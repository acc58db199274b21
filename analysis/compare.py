"""Stage 3, compare: a plain-language verdict per run, and why.

:func:`verdicts` returns one row per run: ``verdict`` (what happened, in numbers), ``why`` (the
setting or peer that caused it), ``time_wait_side`` (``client``, ``server`` or ``none``) and
``churns`` (True when the run opens more than :data:`REUSE_MAX` connections per request).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

REUSE_MAX = 0.1  # connections per request at or below which a run counts as reusing connections
PEER_CAUSES = {
    "http.server": "HTTP/1.0",
    "nginx-close": "nginx keepalive_timeout 0",
    "nginx-low-requests": "nginx keepalive_requests 3",
}


def _text(value: Any) -> str:
    """A string field of a run; missing values (None, NaN) read as empty."""
    return value if isinstance(value, str) else ""


def _count(value: Any) -> float:
    """A count field of a run; missing values (None, NaN) read as 0."""
    return 0 if value is None or pd.isna(value) else value


def _n(value: float) -> str:
    return f"{int(round(value)):,}"


def _plural(value: float, noun: str) -> str:
    return f"{_n(value)} {noun}{'' if round(value) == 1 else 's'}"


def _secs(value: float) -> str:
    return f"{value:.2f} s" if value < 10 else f"{value:,.0f} s"


def _per_request(cpr: float) -> str:
    return "1 connection per request" if round(cpr, 2) == 1 else f"{cpr:.2f} connections per request"


def time_wait_side(client_tw: float, server_tw: float) -> str:
    client_tw = 0 if pd.isna(client_tw) else client_tw
    server_tw = 0 if pd.isna(server_tw) else server_tw
    if client_tw == server_tw == 0:
        return "none"
    return "client" if client_tw >= server_tw else "server"


def server_close_cause(run: dict[str, Any], row: pd.Series) -> str | None:
    """Why the server closes connections, or None when it does not (the client closes, or reuse)."""
    settings = run.get("settings") or {}
    mode = _text(run.get("target_mode"))
    accepted = _count(run.get("target_accepted"))
    by_server = _count(run.get("target_closed_by_server"))
    if accepted and by_server >= 0.9 * accepted:
        if not settings.get("keep_alive", True):
            return "the client asks for Connection: close"
        if mode == "http10":
            return "HTTP/1.0"
        if mode.startswith("close-after:"):
            return f"after {mode.split(':')[1]} requests each"
        if mode.startswith("idle-timeout:"):
            return f"when idle for {mode.split(':')[1]} s"
        return "Connection: close"
    peer = _text(run.get("peer"))
    if peer in PEER_CAUSES:
        return PEER_CAUSES[peer]
    share = row.get("server_time_wait_pct")
    if not accepted and not pd.isna(share) and share >= 50 and row["connections_per_request"] > REUSE_MAX:
        return "it holds most TIME_WAIT sockets"
    return None


def stale_keepalive(run: dict[str, Any]) -> tuple[float, float] | None:
    """(idle timeout, think time) when the server drops idle connections before the client reuses them."""
    mode = _text(run.get("target_mode"))
    think = (run.get("settings") or {}).get("think_time_s") or 0
    if mode.startswith("idle-timeout:") and float(mode.split(":")[1]) <= think:
        return float(mode.split(":")[1]), float(think)
    return None


def verdict(row: pd.Series, run: dict[str, Any] | None = None) -> str:
    """One sentence with the run's numbers."""
    run = run or {}
    opened, requests, cpr = row["connections_opened"], row["requests"], row["connections_per_request"]
    if pd.isna(opened) or pd.isna(cpr):
        return f"{_n(requests)} requests; connections not counted (no target, pool or isolated kernel count)"
    stale = stale_keepalive(run)
    cause = server_close_cause(run, row)
    observed = row.get("observed_seconds_to_exhaustion")
    if observed is not None and not pd.isna(observed):
        text = (
            f"ran out of ephemeral ports after {_secs(observed)} and "
            f"{_plural(row['connections_before_exhaustion'], 'connection')}: the {_n(row['port_range'])}-port range"
        )
        projected = row.get("seconds_to_exhaustion")
        if projected is not None and not pd.isna(projected):
            text += (
                f" (projected {_secs(projected)} at {_n(row['churn_per_s'])} new connections/s, "
                f"{row['projection_error_pct']:.0f}% apart)"
            )
        text += f"; then {_plural(row['addr_not_available_errors'], 'connect')} failed with errno 99"
        if row.get("status", "completed") != "completed":
            text = f"[{row['status']}] " + text
        return text
    if stale:
        idle, think = stale
        errors = row.get("connection_errors", 0)
        text = (f"stale keep-alive: the server closes connections idle for {idle:g} s, before the client's next "
                f"request {think:g} s later: {_plural(opened, 'connection')} for {_plural(requests, 'request')}, "
                f"{_plural(errors, 'request')} failed on a closed connection")  # fmt: skip
    elif cpr <= REUSE_MAX:
        text = f"reuses connections: {_plural(opened, 'connection')} for {_plural(requests, 'request')}"
    elif cause is not None:
        every = "every connection" if cpr >= 0.9 else "connections"
        text = f"the server closes {every} ({cause}): {_per_request(cpr)}, TIME_WAIT on the server"
        share = row.get("server_time_wait_pct")
        if not pd.isna(share) and share < 100:
            text += f" ({share:.0f}%; the client closed first on the rest)"
    else:
        text = f"opens {cpr:.2f} connections per request"
        secs, pct, rng = row["seconds_to_exhaustion"], row["projected_port_use_pct"], row["port_range"]
        if not pd.isna(secs):
            text += f": at this rate the {_n(rng)}-port range runs out in {_secs(secs)}"
        elif not pd.isna(pct):
            text += f": at this rate it holds {pct:.1f}% of the {_n(rng)}-port range in TIME_WAIT"
    if row.get("addr_not_available_errors", 0):
        text += f"; {_n(row['addr_not_available_errors'])} connects failed with errno 99 (no free port)"
    if row.get("status", "completed") != "completed":
        text = f"[{row['status']}] " + text
    return text


def why(run: dict[str, Any], row: pd.Series) -> str:
    """The cause, from the run's settings and counters; empty when connections are reused."""
    settings = run.get("settings") or {}
    reasons = []
    if stale_keepalive(run):
        reasons.append("urllib3 and geventhttpclient test a pooled connection before reusing it and reconnect "
                       "when the server has closed it; a close that races the request fails it")  # fmt: skip
    drain = settings.get("drain")
    if drain in ("none", "close") and row["connections_per_request"] > REUSE_MAX:
        how = "leaves each body unread" if drain == "none" else "closes each body unread"
        reasons.append(f"the client {how} (drain {drain}), so no connection goes back to the pool")
    discarded = _count(run.get("client_discarded"))
    if discarded and drain == "full":
        reasons.append(
            f"{_n(discarded)} connections came back to a full pool of {settings.get('pool_size')} "
            f"(more busy users than pool slots) and were closed"
        )
    reuse = run.get("tcp_tw_reuse")
    loopback = _text(run.get("host")).startswith(("http://127.", "http://localhost", "http://[::1]"))
    if row["connections_per_request"] > REUSE_MAX and (reuse == 1 or (reuse == 2 and loopback)):
        reasons.append(
            f"tcp_tw_reuse={reuse} lets connect() take a port whose TIME_WAIT is over 1 s old, so the range "
            f"runs out only when churn exceeds {_n(row['port_range'])} new connections/s; the projection assumes "
            "no reuse"
        )
    side = time_wait_side(row["peak_client_time_wait"], row["peak_server_time_wait"])
    if reasons and side != "none":
        reasons.append(f"TIME_WAIT on the {side}")
    if side == "client" and row["connections_per_request"] > REUSE_MAX and not reasons:
        reasons.append("the client closes first, so TIME_WAIT holds the client's ephemeral ports")
    return "; ".join(reasons)


def verdicts(summary: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: run_id, verdict, why, time_wait_side, churns."""
    by_id = {r["run_id"]: r for r in runs.to_dict("records")}
    rows = []
    for _, row in summary.iterrows():
        run = by_id.get(row["run_id"], {})
        cpr = row["connections_per_request"]
        rows.append({
            "run_id": row["run_id"],
            "verdict": verdict(row, run),
            "why": why(run, row),
            "time_wait_side": time_wait_side(row["peak_client_time_wait"], row["peak_server_time_wait"]),
            "churns": bool(not pd.isna(cpr) and cpr > REUSE_MAX),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=["run_id", "verdict", "why", "time_wait_side", "churns"])
