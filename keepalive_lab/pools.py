"""Connection pools that count, exactly, the connections a client opens, closes and discards.

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

requests (urllib3)
    ``HTTPConnectionPool(maxsize, block)``. ``block=False`` opens extra connections when all are
    busy and discards them when they come back to a full pool; ``block=True`` never has more than
    ``maxsize`` and makes callers wait, at most :data:`POOL_WAIT_S`.
fasthttp (geventhttpclient)
    ``HTTPClientPool(concurrency)``: a semaphore of ``concurrency`` slots per host. It never opens
    more connections than slots, so it always blocks (Go's ``MaxConnsPerHost``); an unread
    response keeps its slot. It returns a response's connection to the pool as soon as the body
    has arrived, so ``drain close``/``none`` use :func:`no_reuse` to close it instead.
"""

from __future__ import annotations

import collections
import errno
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import gevent.socket
from geventhttpclient.client import HTTPClientPool
from geventhttpclient.connectionpool import ConnectionPool
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection

# How long a caller waits for a connection of a full blocking pool before its request fails.
# It keeps a mistake (drain none with a blocking pool) from hanging a test forever.
POOL_WAIT_S = 10.0
COUNT_FIELDS = ("opened", "closed", "discarded", "connect_errors")


@dataclass
class ConnectionCounts:
    """Client-side connection counts of one process for one test (plain ints: greenlets are cooperative)."""

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
        err = exc
        while err is not None and getattr(err, "errno", None) is None:
            err = err.__cause__ or err.__context__
        code = getattr(err, "errno", None) or 0
        self.connect_errors_by_errno[code] += 1
        if code == errno.EADDRNOTAVAIL and self.first_addr_not_available_ts is None:
            # The moment the ephemeral ports ran out, and how many connections it took.
            self.first_addr_not_available_ts = time.time()
            self.opened_before_addr_not_available = self.opened

    def as_dict(self) -> dict[str, Any]:
        return {
            "opened": self.opened,
            "closed": self.closed,
            "discarded": self.discarded,
            "connect_errors": self.connect_errors,
            "connect_errors_by_errno": {str(k): v for k, v in sorted(self.connect_errors_by_errno.items())},
            "first_connect_ts": self.first_connect_ts,
            "first_addr_not_available_ts": self.first_addr_not_available_ts,
            "opened_before_addr_not_available": self.opened_before_addr_not_available,
        }

    @staticmethod
    def total(parts: list[dict[str, Any]]) -> dict[str, Any]:
        """Sum ``as_dict()`` records from several processes (Locust workers)."""
        out: dict[str, Any] = {name: 0 for name in COUNT_FIELDS}
        errnos: collections.Counter[str] = collections.Counter()
        for part in parts:
            for name in COUNT_FIELDS:
                out[name] += int(part.get(name, 0))
            errnos.update({k: int(v) for k, v in part.get("connect_errors_by_errno", {}).items()})
        out["connect_errors_by_errno"] = dict(sorted(errnos.items()))
        for key in ("first_connect_ts", "first_addr_not_available_ts"):
            stamps = [p[key] for p in parts if p.get(key) is not None]
            out[key] = min(stamps) if stamps else None
        before = [p["opened_before_addr_not_available"] for p in parts if p.get("opened_before_addr_not_available")]
        out["opened_before_addr_not_available"] = sum(before) if before else None
        return out


def _counting_connection(base: type[HTTPConnection], counts: ConnectionCounts) -> type[HTTPConnection]:
    class CountingConnection(base):  # type: ignore[valid-type,misc]
        def connect(self) -> None:
            try:
                super().connect()
            except Exception as exc:
                counts.record_connect_error(exc)
                raise
            counts.record_connect()

        def close(self) -> None:
            if self.sock is not None:
                counts.closed += 1
            super().close()

    return CountingConnection


def _counting_pool(base: type[HTTPConnectionPool], conn_cls: type, counts: ConnectionCounts) -> type:
    class CountingPool(base):  # type: ignore[valid-type,misc]
        ConnectionCls = conn_cls

        def _get_conn(self, timeout: float | None = None) -> Any:
            return super()._get_conn(timeout=POOL_WAIT_S if timeout is None else timeout)

        def _put_conn(self, conn: Any) -> None:
            if conn is not None and self.pool is not None and self.pool.full():
                counts.discarded += 1
            super()._put_conn(conn)

    return CountingPool


def requests_pool_manager(pool_size: int, block: bool, counts: ConnectionCounts) -> PoolManager:
    """A urllib3 ``PoolManager`` for Locust's ``HttpSession`` whose pools count into ``counts``."""
    manager = PoolManager(num_pools=10, maxsize=pool_size, block=block)
    manager.pool_classes_by_scheme = {
        "http": _counting_pool(HTTPConnectionPool, _counting_connection(HTTPConnection, counts), counts),
        "https": _counting_pool(HTTPSConnectionPool, _counting_connection(HTTPSConnection, counts), counts),
    }
    return manager


class _CountingSocket(gevent.socket.socket):
    """A gevent socket that counts its own close() once, when it was connected."""

    counts: ConnectionCounts | None = None

    def close(self) -> None:
        counts, self.counts = self.counts, None
        if counts is not None:
            counts.closed += 1
        super().close()


class _CountingConnectionPool(ConnectionPool):
    """geventhttpclient's per-host pool, counting connects and connect errors into ``counts``."""

    counts: ConnectionCounts

    def _create_tcp_socket(self, family: int, socktype: int, protocol: int) -> gevent.socket.socket:
        return _CountingSocket(family, socktype, protocol)

    def _connect_socket(self, sock: Any, address: Any) -> Any:
        try:
            sock = super()._connect_socket(sock, address)
        except OSError as exc:
            self.counts.record_connect_error(exc)
            raise
        self.counts.record_connect()
        sock.counts = self.counts
        return sock

    def return_socket(self, sock: Any) -> None:
        # geventhttpclient hands a response's socket back as soon as the body has arrived, which
        # for a small body happens while the headers are read: before the user could decide not
        # to drain. A greenlet marked by no_reuse() gets its sockets closed instead of pooled.
        if gevent.getcurrent() in _NO_REUSE:
            self.release_socket(sock)
        else:
            super().return_socket(sock)


_NO_REUSE: weakref.WeakSet[Any] = weakref.WeakSet()


def no_reuse() -> None:
    """fasthttp: from now on, the calling greenlet's connections are closed, not pooled, after each response."""
    _NO_REUSE.add(gevent.getcurrent())


class CountingHTTPClientPool(HTTPClientPool):
    """An ``HTTPClientPool`` (FastHttpUser's ``client_pool``) whose connections count into ``counts``."""

    def __init__(self, counts: ConnectionCounts, **kw: Any) -> None:
        super().__init__(**kw)
        self.counts = counts

    def get_client(self, url: Any) -> Any:
        client = super().get_client(url)
        pool = client._connection_pool
        if type(pool) is ConnectionPool:
            # HTTPClient builds its ConnectionPool itself; give that instance the counting behaviour.
            pool.__class__ = _CountingConnectionPool
            pool.counts = self.counts
        return client


def fasthttp_client_pool(pool_size: int, counts: ConnectionCounts, timeout_s: float = 60.0) -> HTTPClientPool:
    """A FastHttpUser ``client_pool`` with ``pool_size`` slots per host, counting into ``counts``."""
    return CountingHTTPClientPool(
        counts, concurrency=pool_size, network_timeout=timeout_s, connection_timeout=timeout_s, insecure=True
    )


def close_pool(pool: Any) -> None:
    """Close every idle connection a pool holds (urllib3 ``PoolManager`` or ``HTTPClientPool``)."""
    if isinstance(pool, PoolManager):
        # PoolManager.clear() only forgets its pools; close each one so its sockets close now.
        for key in pool.pools.keys():
            host_pool = pool.pools.get(key)
            if host_pool is not None:
                host_pool.close()
        pool.clear()
    else:
        pool.close()
