"""Counting connection pools for Locust's ``HttpSession`` (requests over urllib3).

``HTTPConnectionPool(maxsize, block)``: ``block=False`` opens extra connections when all are busy
and discards them when they come back to a full pool (Go's ``MaxIdleConnsPerHost``);
``block=True`` never has more than ``maxsize`` and makes callers wait, at most ``--pool-wait``
seconds (Go's ``MaxConnsPerHost``). HTTPS is counted the same way: the TCP connect apart from
the TLS handshake. Certificates are verified, as Locust's ``HttpUser`` does by default.

Written against urllib3 2.8.0. Its private methods are overridden here and nowhere else:
``HTTPConnection._new_conn()`` (the TCP connect, before any TLS), ``HTTPConnectionPool._get_conn``
(to bound the wait of a blocking pool) and ``HTTPConnectionPool._put_conn`` (to see a connection
come back to a full pool, where urllib3 closes it with "Connection pool is full, discarding
connection").
"""

from __future__ import annotations

import time
from typing import Any

from gevent import GreenletExit
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ClosedPoolError, EmptyPoolError

from keepalive_lab.clients.counts import ConnectionCounts, PoolWait

TAKEN_FROM = "2.8.0"
# (module, dotted attribute): the private names overridden below, as of urllib3 TAKEN_FROM.
PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("urllib3.connection", "HTTPConnection._new_conn"),
    ("urllib3.connectionpool", "HTTPConnectionPool._get_conn"),
    ("urllib3.connectionpool", "HTTPConnectionPool._put_conn"),
)


class PoolWaitExceeded(EmptyPoolError, ClosedPoolError):
    """``--pool-wait`` passed. As an EmptyPoolError, urllib3 gives no slot back for it (none was
    taken); as a ClosedPoolError, requests reports it as the request's ConnectionError."""


def _counting_connection(base: type[HTTPConnection], counts: ConnectionCounts) -> type[HTTPConnection]:
    class CountingConnection(base):  # type: ignore[valid-type,misc]
        _tcp_open = False
        _tcp_s = 0.0
        _in_getresponse = False

        # urllib3 2.8.0 private: HTTPConnection._new_conn() makes the TCP connection (no TLS yet).
        def _new_conn(self) -> Any:
            started = time.perf_counter()
            try:
                sock = super()._new_conn()
            except Exception as exc:
                counts.record_connect_error(exc)
                raise
            self._tcp_s = time.perf_counter() - started
            counts.record_connect(sock, self._tcp_s)
            self._tcp_open = True
            return sock

        def connect(self) -> None:
            self._tcp_open = False
            started = time.perf_counter()
            try:
                super().connect()
            except Exception as exc:
                if self._tcp_open:  # the TCP connection was made: the TLS handshake failed
                    counts.record_tls_error(exc)
                raise
            if self._tcp_open and isinstance(self, HTTPSConnection):
                counts.record_tls(max(0.0, time.perf_counter() - started - self._tcp_s))

        def getresponse(self, *args: Any, **kwargs: Any) -> Any:
            # http.client closes the connection inside getresponse() exactly when the response
            # says it will close (Connection: close, HTTP/1.0): the server's decision.
            self._in_getresponse = True
            try:
                return super().getresponse(*args, **kwargs)
            finally:
                self._in_getresponse = False

        def close(self) -> None:
            if self.sock is not None:
                counts.record_close(self.sock, server_announced=self._in_getresponse)
            super().close()

    return CountingConnection


def _counting_pool(
    base: type[HTTPConnectionPool], conn_cls: type, counts: ConnectionCounts, wait_s: float | None
) -> type:
    """``wait_s`` None: a blocking pool waits as urllib3 makes it (a locustfile's own pool)."""

    class CountingPool(base):  # type: ignore[valid-type,misc]
        ConnectionCls = conn_cls
        released_at = 0.0  # monotonic time a connection last came back

        # urllib3 2.8.0 private: HTTPConnectionPool._get_conn(timeout=None) waits forever when
        # blocking; requests never passes a pool timeout.
        def _get_conn(self, timeout: float | None = None) -> Any:
            if wait_s is None or not self.block or self.pool is None or not self.pool.empty():
                return super()._get_conn(timeout=timeout)
            wait = PoolWait(counts, self.pool.maxsize, wait_s, self.released_at)
            try:
                return super()._get_conn(timeout=wait_s if timeout is None else timeout)
            except EmptyPoolError:
                raise PoolWaitExceeded(self, str(wait.timed_out())) from None
            except GreenletExit:  # the test ended while this user waited
                wait.cut(self.released_at)
                raise

        # urllib3 2.8.0 private: HTTPConnectionPool._put_conn(conn) closes conn when the pool is full.
        def _put_conn(self, conn: Any) -> None:
            if conn is None and self.pool is not None and self.pool.full():
                # A user killed while it waited in _get_conn took no slot, but urlopen's cleanup
                # gives one back; in a full blocking pool that would raise FullPoolError.
                return
            if not counts.users_stopping:
                self.released_at = time.monotonic()
            # A connection the server closed was already closed by http.client (sock None):
            # coming back to a full pool, it is no discard and leaves no TIME_WAIT.
            if conn is not None and self.pool is not None and self.pool.full() and conn.sock is not None:
                counts.record_discard()
            super()._put_conn(conn)

        def close(self) -> None:
            counts.shutting_down = True
            try:
                super().close()
            finally:
                counts.shutting_down = False

    return CountingPool


def counting_pool_manager(pool_size: int, block: bool, counts: ConnectionCounts, wait_s: float) -> PoolManager:
    """A urllib3 ``PoolManager`` (Locust's ``pool_manager``) whose pools count into ``counts``."""
    manager = PoolManager(num_pools=10, maxsize=pool_size, block=block)
    http = _counting_connection(HTTPConnection, counts)
    https = _counting_connection(HTTPSConnection, counts)
    manager.pool_classes_by_scheme = {
        "http": _counting_pool(HTTPConnectionPool, http, counts, wait_s),
        "https": _counting_pool(HTTPSConnectionPool, https, counts, wait_s),
    }
    return manager


_COUNTED: dict[tuple[type, int], type] = {}  # (a pool or connection class, id(counts)) -> its counting class


def _counting_class(cls: type, counts: ConnectionCounts) -> type:
    key = (cls, id(counts))
    if key not in _COUNTED:
        if issubclass(cls, HTTPConnectionPool):
            conn = _counting_class(cls.ConnectionCls, counts)
            _COUNTED[key] = _counting_pool(cls, conn, counts, None)
        else:
            _COUNTED[key] = _counting_connection(cls, counts)
        _COUNTED[(_COUNTED[key], id(counts))] = _COUNTED[key]  # counting twice is counting once
    return _COUNTED[key]


def count_pool_manager(manager: PoolManager, counts: ConnectionCounts) -> None:
    """Count a ``PoolManager`` the locustfile made (or requests made for it) into ``counts``, as it is.

    Its settings (``maxsize``, ``block``, TLS options, retries) stay; only its pool classes gain
    counting subclasses, for the pools it makes from now on and for those it already holds. A
    manager already counted is left alone.
    """
    if getattr(manager, "_keepalive_lab_counts", None) is counts:
        return
    manager.pool_classes_by_scheme = {
        scheme: _counting_class(cls, counts) for scheme, cls in manager.pool_classes_by_scheme.items()
    }
    for key in list(manager.pools.keys()):
        pool = manager.pools.get(key)
        if pool is not None and type(pool) in (HTTPConnectionPool, HTTPSConnectionPool):
            pool.__class__ = _counting_class(type(pool), counts)
            pool.ConnectionCls = _counting_class(pool.ConnectionCls, counts)
    manager._keepalive_lab_counts = counts


def close_pool_manager(manager: PoolManager) -> None:
    """Close every idle connection the manager's pools hold, now."""
    # PoolManager.clear() only forgets its pools; close each one so its sockets close now.
    for key in manager.pools.keys():
        host_pool = manager.pools.get(key)
        if host_pool is not None:
            host_pool.close()
    manager.clear()
