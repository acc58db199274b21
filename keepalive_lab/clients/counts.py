"""The client-side connection counts of one process for one test.

The counts are taken where the client makes the decision, so they stay exact against any server,
including ones the suite cannot see into (nginx, someone's service):

``opened``
    TCP connections established (``connect()`` returned).
``closed``
    connections the client closed itself: an unread body closed, a pool-full discard, the server's
    ``Connection: close`` honoured, or the pool shut at the end of the test.
``discarded``
    connections closed only because they came back to a full pool (Go: more busy connections than
    ``MaxIdleConnsPerHost``); each one leaves a TIME_WAIT on the client.
``connect_errors``
    ``connect()`` failures, by errno (99 is EADDRNOTAVAIL: no ephemeral port left).

:meth:`ConnectionCounts.snapshot` gives them as ``run.json``'s ``client_connections``
(:class:`keepalive_lab.schema.ClientConnections`).
"""

from __future__ import annotations

import collections
import errno
import time
from dataclasses import dataclass, field

from keepalive_lab.schema import ClientConnections


@dataclass
class ConnectionCounts:
    """Plain ints, updated from greenlets (cooperative: no lock needed)."""

    opened: int = 0
    closed: int = 0
    discarded: int = 0
    connect_errors: int = 0
    connect_errors_by_errno: collections.Counter[int] = field(default_factory=collections.Counter)
    first_connect_ts: float | None = None
    first_addr_not_available_ts: float | None = None
    opened_before_addr_not_available: int | None = None

    def record_connect(self) -> None:
        self.opened += 1
        if self.first_connect_ts is None:
            self.first_connect_ts = time.time()

    def record_connect_error(self, exc: BaseException) -> None:
        self.connect_errors += 1
        err: BaseException | None = exc
        while err is not None and getattr(err, "errno", None) is None:
            err = err.__cause__ or err.__context__
        code = getattr(err, "errno", None) or 0
        self.connect_errors_by_errno[code] += 1
        if code == errno.EADDRNOTAVAIL and self.first_addr_not_available_ts is None:
            # The moment the ephemeral ports ran out, and how many connections it took.
            self.first_addr_not_available_ts = time.time()
            self.opened_before_addr_not_available = self.opened

    def snapshot(self) -> ClientConnections:
        return ClientConnections(
            opened=self.opened,
            closed=self.closed,
            discarded=self.discarded,
            connect_errors=self.connect_errors,
            connect_errors_by_errno={str(k): v for k, v in sorted(self.connect_errors_by_errno.items())},
            first_connect_ts=self.first_connect_ts,
            first_addr_not_available_ts=self.first_addr_not_available_ts,
            opened_before_addr_not_available=self.opened_before_addr_not_available,
        )
