"""The connections in the terminal of a headless run: one line at Locust's console-stats interval.

``--only-summary`` silences it, as it does Locust's own table. The figures are the live view's
(:mod:`keepalive_lab.live`), the report's own computation.
"""

from __future__ import annotations

from locust.stats import CONSOLE_STATS_INTERVAL_SEC

import sys
from typing import Any

import gevent

from keepalive_lab.live import Snapshot


def _n(value: Any, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def line(snap: Snapshot) -> str:
    """One line: connections, reuse, closes, TIME_WAIT, ports, churn and the projection."""
    s, last = snap.summary, snap.last_sample
    parts = [
        f"{_n(s.get('requests'))} requests, {_n(s.get('connections_opened'))} connections"
        f" ({_n(s.get('connections_per_request'), 2)} per request)",
        f"client closes {_n(s.get('client_closes_per_request'), 2)} per request",
    ]
    if last:
        parts.append(f"TIME_WAIT client {_n(last.get('client_time_wait'))} server {_n(last.get('server_time_wait'))}")
        parts.append(f"ports in use {_n(last.get('ports_in_use'))} of {_n(last.get('port_range'))}")
    parts.append(f"churn {_n(s.get('churn_per_s'), 1)}/s")
    secs = s.get("seconds_to_exhaustion")
    parts.append(f"projected {_n(s.get('projected_port_use_pct'), 1)}%" + (f", out in {secs:,.0f} s" if secs else ""))
    return "keepalive-lab: " + "; ".join(parts)


def print_lines(session: Any) -> None:
    """Print a line every interval while a test runs (a greenlet of the process that writes runs)."""
    while True:
        gevent.sleep(CONSOLE_STATS_INTERVAL_SEC)
        if session.run is not None:
            snap = session.live.snapshot()
            if snap.summary:
                print(line(snap), file=sys.stdout, flush=True)
