"""Counting connection pools for Locust's ``HttpSession`` (requests over urllib3).

``HTTPConnectionPool(maxsize, block)``: ``block=False`` opens extra connections when all are busy
and discards them when they come back to a full pool (Go's ``MaxIdleConnsPerHost``);
``block=True`` never has more than ``maxsize`` and makes callers wait, at most
:data:`POOL_WAIT_S` (Go's ``MaxConnsPerHost``).

Written against urllib3 2.8.0. Two private methods of ``HTTPConnectionPool`` are overridden
here and nowhere else: ``_get_conn(timeout)`` (to bound the wait of a blocking pool) and
``_put_conn(conn)`` (to see a connection come back to a full pool, where urllib3 closes it with
"Connection pool is full, discarding connection").
"""

from __future__ import annotations

from typing import Any

from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection

from keepalive_lab.clients.counts import ConnectionCounts

TAKEN_FROM = "2.8.0"
# (module, dotted attribute): the private names overridden below, as of urllib3 TAKEN_FROM.
PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("urllib3.connectionpool", "HTTPConnectionPool._get_conn"),
    ("urllib3.connectionpool", "HTTPConnectionPool._put_conn"),
)

# How long a caller waits for a connection of a full blocking pool before its request fails.
# It keeps a mistake (drain none with a blocking pool) from hanging a test forever.
POOL_WAIT_S = 10.0


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

        # urllib3 2.8.0 private: HTTPConnectionPool._get_conn(timeout=None) waits forever when
        # blocking; requests never passes a pool timeout.
        def _get_conn(self, timeout: float | None = None) -> Any:
            return super()._get_conn(timeout=POOL_WAIT_S if timeout is None else timeout)

        # urllib3 2.8.0 private: HTTPConnectionPool._put_conn(conn) closes conn when the pool is full.
        def _put_conn(self, conn: Any) -> None:
            if conn is not None and self.pool is not None and self.pool.full():
                counts.discarded += 1
            super()._put_conn(conn)

    return CountingPool


def counting_pool_manager(pool_size: int, block: bool, counts: ConnectionCounts) -> PoolManager:
    """A urllib3 ``PoolManager`` (Locust's ``pool_manager``) whose pools count into ``counts``."""
    manager = PoolManager(num_pools=10, maxsize=pool_size, block=block)
    manager.pool_classes_by_scheme = {
        "http": _counting_pool(HTTPConnectionPool, _counting_connection(HTTPConnection, counts), counts),
        "https": _counting_pool(HTTPSConnectionPool, _counting_connection(HTTPSConnection, counts), counts),
    }
    return manager


def close_pool_manager(manager: PoolManager) -> None:
    """Close every idle connection the manager's pools hold, now."""
    # PoolManager.clear() only forgets its pools; close each one so its sockets close now.
    for key in manager.pools.keys():
        host_pool = manager.pools.get(key)
        if host_pool is not None:
            host_pool.close()
    manager.clear()
