"""Stage 3, compare: a plain-language verdict per run, and why.

:func:`verdicts` returns one row per run: ``verdict`` (what happened, in numbers), ``why`` (the
setting or peer that caused it), ``time_wait_side`` (``client``, ``server`` or ``none``) and
``churns`` (True when the run opens more than :data:`REUSE_MAX` connections per request).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

REUSE_MAX = 0.1  # connections per request at or below which a run counts as reusing connections


def _n(value: float) -> str:
    return f"{int(round(value)):,}"


def _plural(value: float, noun: str) -> str:
    return f"{_n(value)} {noun}{'' if round(value) == 1 else 's'}"


def time_wait_side(client_tw: float, server_tw: float) -> str:
    client_tw = 0 if pd.isna(client_tw) else client_tw
    server_tw = 0 if pd.isna(server_tw) else server_tw
    if client_tw == server_tw == 0:
        return "none"
    return "client" if client_tw >= server_tw else "server"


def verdict(row: pd.Series) -> str:
    """One sentence with the run's numbers."""
    opened, requests, cpr = row["connections_opened"], row["requests"], row["connections_per_request"]
    if pd.isna(opened) or pd.isna(cpr):
        return f"{_n(requests)} requests; connections not counted (no target, pool or isolated kernel count)"
    if cpr <= REUSE_MAX:
        text = f"reuses connections: {_plural(opened, 'connection')} for {_plural(requests, 'request')}"
    else:
        text = f"opens {cpr:.2f} connections per request"
        secs, pct, rng = row["seconds_to_exhaustion"], row["projected_port_use_pct"], row["port_range"]
        if not pd.isna(secs):
            text += f": at this rate the {_n(rng)}-port range runs out in {_n(secs)} s"
        elif not pd.isna(pct):
            text += f": at this rate it holds {pct:.1f}% of the {_n(rng)}-port range in TIME_WAIT"
    if row.get("addr_not_available_errors", 0):
        text += f"; {_n(row['addr_not_available_errors'])} connects failed with errno 99 (no free port)"
    if row.get("status", "completed") != "completed":
        text = f"[{row['status']}] " + text
    return text


def why(run: dict[str, Any], summary: pd.Series) -> str:
    """The cause, from the run's settings and counters; empty when connections are reused."""
    settings = run.get("settings") or {}
    reasons = []
    accepted = run.get("target_accepted")
    by_server = run.get("target_closed_by_server") or 0
    mode = run.get("target_mode") or ""
    if accepted and by_server >= 0.9 * accepted and by_server > 0:
        if not settings.get("keep_alive", True):
            reasons.append("the client sends 'Connection: close', so the server closes every connection")
        elif mode == "http10":
            reasons.append("the server closes every connection (HTTP/1.0)")
        elif mode.startswith("close-after"):
            reasons.append(f"the server closes each connection after {mode.split(':')[1]} requests")
        elif mode.startswith("idle-timeout"):
            reasons.append(f"the server closes connections idle for {mode.split(':')[1]} s")
        else:
            reasons.append("the server closes every connection (Connection: close)")
    drain = settings.get("drain")
    if drain in ("none", "close") and summary["connections_per_request"] > REUSE_MAX:
        how = "leaves each body unread" if drain == "none" else "closes each body unread"
        reasons.append(f"the client {how} (drain {drain}), so no connection goes back to the pool")
    discarded = run.get("client_discarded") or 0
    if discarded and drain == "full":
        reasons.append(
            f"{_n(discarded)} connections came back to a full pool of {settings.get('pool_size')} "
            f"(more busy users than pool slots) and were closed"
        )
    side = time_wait_side(summary["peak_client_time_wait"], summary["peak_server_time_wait"])
    if reasons and side != "none":
        reasons.append(f"TIME_WAIT on the {side}")
    return "; ".join(reasons)


def verdicts(summary: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: run_id, verdict, why, time_wait_side, churns."""
    by_id = {r["run_id"]: r for r in runs.to_dict("records")}
    rows = []
    for _, row in summary.iterrows():
        cpr = row["connections_per_request"]
        rows.append(
            {
                "run_id": row["run_id"],
                "verdict": verdict(row),
                "why": why(by_id.get(row["run_id"], {}), row),
                "time_wait_side": time_wait_side(row["peak_client_time_wait"], row["peak_server_time_wait"]),
                "churns": bool(not pd.isna(cpr) and cpr > REUSE_MAX),
            }
        )
    return pd.DataFrame(rows, columns=["run_id", "verdict", "why", "time_wait_side", "churns"])
