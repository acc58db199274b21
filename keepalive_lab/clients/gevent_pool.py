"""Counting connection pools for Locust's ``FastHttpSession`` (geventhttpclient).

``HTTPClientPool(concurrency)``: a semaphore of ``concurrency`` slots per host. It never opens
more connections than slots, so it always blocks (Go's ``MaxConnsPerHost``); an unread response
keeps its slot. It returns a response's connection to the pool as soon as the body has arrived,
so ``drain close``/``none`` use :func:`no_reuse` to close it instead.

Written against geventhttpclient 2.6.1. Its private names are used here and nowhere else:
``HTTPClient._connection_pool`` (the per-host ``ConnectionPool`` that ``HTTPClient`` builds
itself, whose class is switched to the counting one), and ``ConnectionPool._create_tcp_socket``
and ``ConnectionPool._connect_socket`` (overridden to count connects and closes).
"""

from __future__ import annotations

import weakref
from typing import Any

import gevent
import gevent.socket
from geventhttpclient.client import HTTPClientPool
from geventhttpclient.connectionpool import ConnectionPool

from keepalive_lab.clients.counts import ConnectionCounts

TAKEN_FROM = "2.6.1"
# (module, dotted attribute): the private names used below, as of geventhttpclient TAKEN_FROM;
# HTTPClient._connection_pool is an attribute of each instance.
PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("geventhttpclient.client", "HTTPClient()._connection_pool"),
    ("geventhttpclient.connectionpool", "ConnectionPool._create_tcp_socket"),
    ("geventhttpclient.connectionpool", "ConnectionPool._connect_socket"),
)


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

    # geventhttpclient 2.6.1 private: ConnectionPool._create_tcp_socket(family, socktype, protocol).
    def _create_tcp_socket(self, family: int, socktype: int, protocol: int) -> gevent.socket.socket:
        return _CountingSocket(family, socktype, protocol)

    # geventhttpclient 2.6.1 private: ConnectionPool._connect_socket(sock, address) -> sock.
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
    """From now on, the calling greenlet's connections are closed, not pooled, after each response."""
    _NO_REUSE.add(gevent.getcurrent())


class CountingHTTPClientPool(HTTPClientPool):
    """An ``HTTPClientPool`` (FastHttpUser's ``client_pool``) whose connections count into ``counts``."""

    def __init__(self, counts: ConnectionCounts, **kw: Any) -> None:
        super().__init__(**kw)
        self.counts = counts

    def get_client(self, url: Any) -> Any:
        client = super().get_client(url)
        # geventhttpclient 2.6.1 private: HTTPClient._connection_pool, built by HTTPClient.__init__.
        pool = client._connection_pool
        if type(pool) is ConnectionPool:
            # HTTPClient builds its ConnectionPool itself; give that instance the counting behaviour.
            pool.__class__ = _CountingConnectionPool
            pool.counts = self.counts
        return client


def counting_client_pool(pool_size: int, counts: ConnectionCounts, timeout_s: float = 60.0) -> HTTPClientPool:
    """A FastHttpUser ``client_pool`` with ``pool_size`` slots per host, counting into ``counts``."""
    return CountingHTTPClientPool(
        counts, concurrency=pool_size, network_timeout=timeout_s, connection_timeout=timeout_s, insecure=True
    )
