"""The client-side connection counts of one process for one test, taken where the client decides.

The counts stay exact against any server, including ones the suite cannot see into (nginx,
someone's service):

``opened``
    TCP connections established (``connect()`` returned), HTTPS ones included; the TLS
    handshake that follows is counted apart (``tls_errors`` when it fails).
``closed_by_client``
    connections the client closed while the server still held them open (an unread body
    closed, a pool-full discard, a failed TLS handshake): the client sends the first FIN and
    holds the TIME_WAIT.
``reset_by_client``
    the same, with response bytes still unread in the socket: Linux then sends a reset, which
    leaves no TIME_WAIT on either side.
``closed_by_server``
    connections the server had already closed (its FIN had arrived, or it had announced
    ``Connection: close``) when the client closed them: the TIME_WAIT is the server's.
``closed_at_end``
    connections closed because their user or the test ended: idle pooled connections when their
    pool shuts down, requests cut short by the test's end. The end of reuse, not churn.
``discarded``
    of the client's closes, those of connections that came back to a full pool (Go: more busy
    connections than ``MaxIdleConnsPerHost``).
``connect_errors``, ``tls_errors``
    failed ``connect()`` calls, by errno (99 is EADDRNOTAVAIL: no ephemeral port left), and
    failed TLS handshakes, by the TLS library's reason.
``pool_timeouts``
    requests that waited ``--pool-wait`` seconds for a connection of a full blocking pool and
    failed.

:meth:`ConnectionCounts.snapshot` gives them as ``run.json``'s ``client_connections``
(:class:`keepalive_lab.schema.ClientConnections`). Each connection opened and each close at the end is
also told to the sidecar (:mod:`keepalive_lab.feed`), which then counts exactly this run's own
sockets.
"""

from __future__ import annotations

import array
import collections
import copy
import dataclasses
import errno
import fcntl
import socket
import ssl
import termios
import time
from dataclasses import dataclass, field
from typing import Any

import gevent

from keepalive_lab.feed import Sender
from keepalive_lab.schema import ClientConnections, RequestNameCounts, histogram_add

_TCP_ESTABLISHED = 1


def tcp_state(sock: Any) -> int | None:
    """The socket's TCP state (Linux numbering: 1 ESTABLISHED, 8 CLOSE_WAIT...), or None."""
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    except (OSError, AttributeError, ValueError):
        return None


def unread_bytes(sock: Any) -> int:
    """Bytes received and not read yet (closing such a socket sends a reset)."""
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
        return buf[0]
    except (OSError, AttributeError, ValueError):
        return 0


def errno_of(exc: BaseException) -> int:
    """The errno behind an exception (urllib3 and requests wrap the OSError), 0 when none."""
    err: BaseException | None = exc
    seen = 0
    while err is not None and seen < 10:
        code = getattr(err, "errno", None)
        if isinstance(code, int) and not isinstance(err, ssl.SSLError):
            return code
        err = err.__cause__ or err.__context__
        seen += 1
    return 0


def tls_reason(exc: BaseException) -> str:
    """The TLS library's reason for a failed handshake (e.g. CERTIFICATE_VERIFY_FAILED)."""
    err: BaseException | None = exc
    while err is not None:
        if isinstance(err, ssl.SSLError):
            return str(getattr(err, "reason", None) or getattr(err, "verify_message", None) or type(err).__name__)
        err = err.__cause__ or err.__context__
    return type(exc).__name__


@dataclass
class ConnectionCounts:
    """Plain ints, updated from greenlets (cooperative: no lock needed)."""

    opened: int = 0
    closed_by_client: int = 0
    reset_by_client: int = 0
    closed_by_server: int = 0
    closed_at_end: int = 0
    discarded: int = 0
    connect_errors: int = 0
    connect_errors_by_errno: collections.Counter[int] = field(default_factory=collections.Counter)
    tls_errors: int = 0
    tls_errors_by_reason: collections.Counter[str] = field(default_factory=collections.Counter)
    pool_timeouts: int = 0
    pool_timeout_users: set[int] = field(default_factory=set)
    pool_waits_cut: int = 0
    first_connect_ts: float | None = None
    first_addr_not_available_ts: float | None = None
    opened_before_addr_not_available: int | None = None
    connect_ms: dict[str, Any] = field(default_factory=dict)  # TCP connect times, a histogram
    tls_ms: dict[str, Any] = field(default_factory=dict)  # TLS handshake times, a histogram
    by_name: dict[str, RequestNameCounts] = field(default_factory=dict)
    feed: Sender = field(default_factory=Sender, repr=False)
    # Per greenlet: what happened during its request in progress, and the name of its last request
    # (a close after a response belongs to that request: an unread body, a discard).
    _during: dict[int, RequestNameCounts] = field(default_factory=dict, repr=False)
    _last_name: dict[int, str] = field(default_factory=dict, repr=False)
    # Set while a pool shuts down: the connections it closes are idle ones, not churn.
    shutting_down: bool = field(default=False, repr=False)
    # Set once users start to stop: connections they give back then are no progress for waiters.
    users_stopping: bool = field(default=False, repr=False)

    def reset(self) -> None:
        """Zero every count for a new test, keeping this object (pools hold it) and its feed."""
        feed = self.feed
        fresh = ConnectionCounts(feed=feed)
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(fresh, f.name))

    def _now(self) -> RequestNameCounts:
        """The counts of the current greenlet's request in progress."""
        key = id(gevent.getcurrent())
        during = self._during.get(key)
        if during is None:
            during = self._during[key] = RequestNameCounts()
        return during

    def _last(self) -> RequestNameCounts:
        """The counts of the request name the current greenlet's last response belongs to."""
        name = self._last_name.get(id(gevent.getcurrent()))
        return self._now() if name is None else self.by_name[name]

    def on_request(self, name: str) -> None:
        """Locust's request event, fired in the user's greenlet when a request ends: what happened
        during it (connections opened, connect errors) goes to its name."""
        key = id(gevent.getcurrent())
        entry = self.by_name.get(name)
        if entry is None:
            entry = self.by_name[name] = RequestNameCounts()
        during = self._during.pop(key, None)
        entry.requests += 1
        if during is not None:
            entry.add(during)
            entry.new_connection_requests += (
                1 if during.opened or during.connect_errors else 0
            )  # a failed connect reused none
        self._last_name[key] = name

    def record_connect(self, sock: Any, connect_s: float | None = None) -> None:
        """A TCP connection made (``connect_s``: how long ``connect()`` took)."""
        self.opened += 1
        during = self._now()
        during.opened += 1
        if connect_s is not None:
            histogram_add(self.connect_ms, connect_s * 1000)
            histogram_add(during.connect_ms, connect_s * 1000)
        if self.first_connect_ts is None:
            self.first_connect_ts = time.time()
        self.feed.opened(sock)

    def record_connect_error(self, exc: BaseException) -> None:
        self.connect_errors += 1
        code = errno_of(exc)
        self.connect_errors_by_errno[code] += 1
        during = self._now()
        during.connect_errors += 1
        during.connect_errors_by_errno[str(code)] = during.connect_errors_by_errno.get(str(code), 0) + 1
        if code == errno.EADDRNOTAVAIL and self.first_addr_not_available_ts is None:
            # The moment the ephemeral ports ran out, and how many connections it took.
            self.first_addr_not_available_ts = time.time()
            self.opened_before_addr_not_available = self.opened

    def record_tls(self, handshake_s: float) -> None:
        """A TLS handshake completed in ``handshake_s`` (after the TCP connect)."""
        histogram_add(self.tls_ms, handshake_s * 1000)
        histogram_add(self._now().tls_ms, handshake_s * 1000)

    def record_tls_error(self, exc: BaseException) -> None:
        self.tls_errors += 1
        self.tls_errors_by_reason[tls_reason(exc)] += 1

    def record_close(self, sock: Any, server_announced: bool = False, client_decided: bool = False) -> None:
        """A connection the client closes now: say who closed it first (see the module docstring).

        ``server_announced``: the server said ``Connection: close``. ``client_decided``: the
        client closes it on purpose (a discard, an undrained body), whatever its state.
        """
        if self.shutting_down or self.users_stopping:
            self.closed_at_end += 1
            self.feed.closed_at_end(sock)
            return
        state = tcp_state(sock)
        name = self._last()
        if server_announced or (not client_decided and state not in (_TCP_ESTABLISHED, None)):
            self.closed_by_server += 1
            name.closed_by_server += 1
        elif unread_bytes(sock) > 0:
            self.reset_by_client += 1
            name.reset_by_client += 1
        else:
            self.closed_by_client += 1
            name.closed_by_client += 1

    def record_discard(self) -> None:
        """A connection came back to a full pool and is closed (the close is recorded apart)."""
        self.discarded += 1
        self._last().discarded += 1

    def snapshot(self) -> ClientConnections:
        return ClientConnections(
            opened=self.opened,
            closed=self.closed_by_client + self.reset_by_client + self.closed_by_server + self.closed_at_end,
            closed_by_client=self.closed_by_client,
            reset_by_client=self.reset_by_client,
            closed_by_server=self.closed_by_server,
            closed_at_end=self.closed_at_end,
            discarded=self.discarded,
            connect_errors=self.connect_errors,
            connect_errors_by_errno={str(k): v for k, v in sorted(self.connect_errors_by_errno.items())},
            tls_errors=self.tls_errors,
            tls_errors_by_reason=dict(sorted(self.tls_errors_by_reason.items())),
            pool_timeouts=self.pool_timeouts,
            pool_timeout_users=len(self.pool_timeout_users),
            pool_waits_cut=self.pool_waits_cut,
            first_connect_ts=self.first_connect_ts,
            first_addr_not_available_ts=self.first_addr_not_available_ts,
            opened_before_addr_not_available=self.opened_before_addr_not_available,
            connect_ms=copy.deepcopy(self.connect_ms),
            tls_ms=copy.deepcopy(self.tls_ms),
            by_name={name: copy.deepcopy(counts.to_dict()) for name, counts in sorted(self.by_name.items())},
        )


class PoolWait:
    """A user's wait for a connection of a full blocking pool: bounded, and told apart when cut.

    ``released_at`` is the pool's last return of a connection (monotonic seconds), users stopping
    at the end left out. A wait that the end of the test cuts short, after a second or more in
    which the pool gave nothing back, is a stuck user: its pool's connections are all held and
    nobody reads them.
    """

    def __init__(self, counts: ConnectionCounts, pool_size: int, wait_s: float, released_at: float) -> None:
        self.counts, self.pool_size, self.wait_s = counts, pool_size, wait_s
        self.released_at = released_at
        self.started = time.monotonic()

    def timed_out(self) -> PoolTimeout:
        self.counts.pool_timeouts += 1
        self.counts.pool_timeout_users.add(id(gevent.getcurrent()))
        return PoolTimeout(self.pool_size, self.wait_s)

    def cut(self, released_at: float) -> None:
        if time.monotonic() - self.started >= 1.0 and released_at <= self.started:
            self.counts.pool_waits_cut += 1


class PoolTimeout(OSError):
    """No connection of a full blocking pool became free within ``--pool-wait`` seconds.

    An OSError (ETIME), so that both clients report it as the request's failure, as they do a
    failed connect, and neither retries it.
    """

    def __init__(self, pool_size: int, wait_s: float) -> None:
        super().__init__(
            errno.ETIME,
            f"no free connection in the pool of {pool_size} after {wait_s:g} s (--pool-wait): every connection "
            "is held, e.g. by responses whose bodies are never read",
        )
