"""Counting connection pools for Locust's ``FastHttpSession`` (geventhttpclient).

``HTTPClientPool(concurrency)``: a semaphore of ``concurrency`` slots per host. It never opens
more connections than slots, so it always blocks (Go's ``MaxConnsPerHost``); an unread response
keeps its slot, and a caller waits at most ``--pool-wait`` seconds for one. It returns a
response's connection to the pool as soon as the body has arrived, so ``drain close``/``none``
use :func:`no_reuse` to close it instead. HTTPS is counted the same way, the TCP connect apart
from the TLS handshake; certificates are not verified, as with Locust's own ``FastHttpUser``
(``insecure = True``).

Written against geventhttpclient 2.6.1. Its private names are used here and nowhere else:
``HTTPClient._connection_pool`` (the per-host pool that ``HTTPClient`` builds itself, whose class
is switched to the counting one), ``ConnectionPool._create_tcp_socket`` and
``ConnectionPool._connect_socket`` (overridden to count connects), and
``ConnectionPool._semaphore`` (to bound the wait for a slot).
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import gevent
import gevent.socket
import gevent.ssl
from geventhttpclient.client import HTTPClientPool
from geventhttpclient.connectionpool import ConnectionPool, SSLConnectionPool

from keepalive_lab.clients.counts import ConnectionCounts, PoolWait

TAKEN_FROM = "2.6.1"
# (module, dotted attribute): the private names used below, as of geventhttpclient TAKEN_FROM;
# HTTPClient._connection_pool and ConnectionPool._semaphore are attributes of each instance.
PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("geventhttpclient.client", "HTTPClient()._connection_pool"),
    ("geventhttpclient.client", "HTTPClient()._connection_pool._semaphore"),
    ("geventhttpclient.connectionpool", "ConnectionPool._create_tcp_socket"),
    ("geventhttpclient.connectionpool", "ConnectionPool._connect_socket"),
)


class _Counted:
    """A socket that tells its ConnectionCounts (``_lab``) when it is closed, once."""

    _lab: ConnectionCounts | None = None

    def close(self) -> None:
        counts, self._lab = self._lab, None
        if counts is not None:
            counts.record_close(self, client_decided=gevent.getcurrent() in _NO_REUSE)
        super().close()  # type: ignore[misc]


class _CountingSocket(_Counted, gevent.socket.socket):
    pass


class _CountingSSLSocket(_Counted, gevent.ssl.SSLSocket):
    pass


class _CountingTcp(ConnectionPool):
    """The TCP part of geventhttpclient's per-host pool, counting into ``counts``."""

    counts: ConnectionCounts
    wait_s: float | None  # None: no bound of the suite's (a locustfile's own pool)
    released_at = 0.0  # monotonic time a slot was last given back

    # geventhttpclient 2.6.1 private: ConnectionPool._create_tcp_socket(family, socktype, protocol).
    def _create_tcp_socket(self, family: int, socktype: int, protocol: int) -> gevent.socket.socket:
        return _CountingSocket(family, socktype, protocol)

    # geventhttpclient 2.6.1 private: ConnectionPool._connect_socket(sock, address) -> sock; for
    # HTTPS, SSLConnectionPool._connect_socket calls this first, then makes the TLS handshake.
    def _connect_socket(self, sock: Any, address: Any) -> Any:
        started = time.perf_counter()
        try:
            sock = ConnectionPool._connect_socket(self, sock, address)
        except OSError as exc:
            self.counts.record_connect_error(exc)
            raise
        sock._lab_connect_s = time.perf_counter() - started
        self.counts.record_connect(sock, sock._lab_connect_s)
        sock._lab = self.counts
        return sock

    def get_socket(self) -> Any:
        # geventhttpclient 2.6.1 private: ConnectionPool._semaphore, acquired without a bound.
        if not self._semaphore.locked():  # a free slot: get_socket() takes it without waiting
            return super().get_socket()
        # Take a slot with a bound and hand it back: get_socket() then takes it without waiting
        # (greenlets do not switch in between).
        if self.wait_s is None:  # a locustfile's own pool: it waits as geventhttpclient makes it
            return super().get_socket()
        wait = PoolWait(self.counts, self.size, self.wait_s, self.released_at)
        try:
            acquired = self._semaphore.acquire(timeout=self.wait_s)
        except gevent.GreenletExit:  # the test ended while this user waited
            wait.cut(self.released_at)
            raise
        if not acquired:
            raise wait.timed_out()
        self._semaphore.release()
        return super().get_socket()

    def return_socket(self, sock: Any) -> None:
        # geventhttpclient hands a response's socket back as soon as the body has arrived, which
        # for a small body happens while the headers are read: before the user could decide not
        # to drain. A greenlet marked by no_reuse() gets its sockets closed instead of pooled.
        self._note_release()
        if gevent.getcurrent() in _NO_REUSE:
            self.release_socket(sock)
        else:
            super().return_socket(sock)

    def release_socket(self, sock: Any) -> None:
        self._note_release()
        super().release_socket(sock)

    def _note_release(self) -> None:
        if not self.counts.users_stopping:
            self.released_at = time.monotonic()

    def close(self) -> None:
        self.counts.shutting_down = True
        try:
            super().close()
        finally:
            self.counts.shutting_down = False


class _CountingConnectionPool(_CountingTcp):
    pass


class _CountingSSLConnectionPool(SSLConnectionPool, _CountingTcp):
    """HTTPS: SSLConnectionPool's handshake on top of the counted TCP connect."""

    def _connect_socket(self, sock: Any, address: Any) -> Any:
        opened = self.counts.opened
        started = time.perf_counter()
        try:
            tls = super()._connect_socket(sock, address)  # _CountingTcp's connect, then the handshake
        except Exception as exc:
            if self.counts.opened > opened:  # the TCP connection was made: the TLS handshake failed
                self.counts.record_tls_error(exc)
                sock._lab = None
                self.counts.closed_by_client += 1  # the pool closes it
            raise
        self.counts.record_tls(max(0.0, time.perf_counter() - started - getattr(sock, "_lab_connect_s", 0.0)))
        # The TLS socket took the TCP socket's descriptor; it is the one that will be closed. A
        # locustfile's own TLS context makes plain SSLSockets: they gain the counted close.
        sock._lab = None
        if type(tls) is gevent.ssl.SSLSocket:
            tls.__class__ = _CountingSSLSocket
        tls._lab = self.counts
        return tls


_NO_REUSE: weakref.WeakSet[Any] = weakref.WeakSet()


def no_reuse() -> None:
    """From now on, the calling greenlet's connections are closed, not pooled, after each response."""
    _NO_REUSE.add(gevent.getcurrent())


def unverified_context() -> gevent.ssl.SSLContext:
    """Locust's FastHttpUser default: TLS without certificate or host name checks."""
    context = gevent.ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = gevent.ssl.CERT_NONE
    context.sslsocket_class = _CountingSSLSocket
    return context


class CountingHTTPClientPool(HTTPClientPool):
    """An ``HTTPClientPool`` (FastHttpUser's ``client_pool``) whose connections count into ``counts``."""

    counts: ConnectionCounts
    wait_s: float | None

    def __init__(self, counts: ConnectionCounts, wait_s: float | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.counts = counts
        self.wait_s = wait_s

    def get_client(self, url: Any) -> Any:
        client = super().get_client(url)
        _count_client(client, self.counts, self.wait_s)
        return client


def _count_client(client: Any, counts: ConnectionCounts, wait_s: float | None) -> None:
    # geventhttpclient 2.6.1 private: HTTPClient._connection_pool, built by HTTPClient.__init__.
    pool = client._connection_pool
    classes = _COUNTING if wait_s is not None else _MEASURED
    if type(pool) in classes:
        # HTTPClient builds its ConnectionPool itself; give that instance the counting behaviour.
        pool.__class__ = classes[type(pool)]
        pool.counts, pool.wait_s = counts, wait_s


def count_client_pool(pool: HTTPClientPool, counts: ConnectionCounts) -> None:
    """Count an ``HTTPClientPool`` the locustfile made (or FastHttpSession made) into ``counts``, as it is.

    Its settings (``concurrency``, timeouts, TLS context) stay; its per-host clients, those it
    holds and those it makes from now on, count their connects and closes, and nothing more per
    request. Waits are geventhttpclient's own.
    """
    if isinstance(pool, CountingHTTPClientPool) or isinstance(pool.clients, _CountingClients):
        return
    # HTTPClientPool.clients: the per-host clients it made; a new one is stored there, once.
    pool.clients = _CountingClients(counts, pool.clients)


class _MeasuredConnectionPool(_CountingConnectionPool):
    """A locustfile's own pool: connects and closes counted, and nothing else added per request."""

    get_socket = ConnectionPool.get_socket
    return_socket = ConnectionPool.return_socket
    release_socket = ConnectionPool.release_socket


class _MeasuredSSLConnectionPool(_CountingSSLConnectionPool):
    get_socket = ConnectionPool.get_socket
    return_socket = ConnectionPool.return_socket
    release_socket = ConnectionPool.release_socket


_COUNTING = {ConnectionPool: _CountingConnectionPool, SSLConnectionPool: _CountingSSLConnectionPool}
_MEASURED = {ConnectionPool: _MeasuredConnectionPool, SSLConnectionPool: _MeasuredSSLConnectionPool}


class _CountingClients(dict):
    """An ``HTTPClientPool``'s ``clients`` (host, port) -> HTTPClient: each client it gains counts."""

    def __init__(self, counts: ConnectionCounts, clients: dict) -> None:
        super().__init__()
        self.counts = counts
        for key, client in clients.items():
            self[key] = client

    def __setitem__(self, key: Any, client: Any) -> None:
        _count_client(client, self.counts, None)
        super().__setitem__(key, client)


def counting_client_pool(pool_size: int, counts: ConnectionCounts, wait_s: float, timeout_s: float = 60.0) -> Any:
    """A FastHttpUser ``client_pool`` with ``pool_size`` slots per host, counting into ``counts``."""
    return CountingHTTPClientPool(
        counts,
        wait_s,
        concurrency=pool_size,
        network_timeout=timeout_s,
        connection_timeout=timeout_s,
        insecure=True,
        ssl_context_factory=unverified_context,
    )
