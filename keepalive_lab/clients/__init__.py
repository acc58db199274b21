"""Counting connection pools, one module per client library, the pool a scenario gets, and the
counting of a locustfile's own clients.

:mod:`keepalive_lab.clients.urllib3_pool` serves ``--client requests`` (Locust's ``HttpSession``)
and :mod:`keepalive_lab.clients.gevent_pool` ``--client fasthttp`` (``FastHttpSession``). Both
count into one :class:`~keepalive_lab.clients.counts.ConnectionCounts` per process.
"""

from __future__ import annotations

from typing import Any

from geventhttpclient.client import HTTPClientPool
from urllib3 import PoolManager

from keepalive_lab.clients.counts import ConnectionCounts
from keepalive_lab.clients.gevent_pool import count_client_pool, counting_client_pool
from keepalive_lab.clients.urllib3_pool import close_pool_manager, count_pool_manager, counting_pool_manager
from keepalive_lab.config import ClientType, PoolFull, ScenarioConfig


def make_pool(cfg: ScenarioConfig, counts: ConnectionCounts) -> Any:
    """The counting pool for a scenario: a urllib3 ``PoolManager`` or a geventhttpclient ``HTTPClientPool``."""
    if cfg.client_type is ClientType.FASTHTTP:
        return counting_client_pool(cfg.pool_size, counts, cfg.pool_wait_s, cfg.request_timeout_s)
    return counting_pool_manager(cfg.pool_size, cfg.pool_full is PoolFull.BLOCK, counts, cfg.pool_wait_s)


def close_pool(pool: Any) -> None:
    """Close every idle connection a pool holds."""
    if isinstance(pool, PoolManager):
        close_pool_manager(pool)
    else:
        pool.close()


def count_user_client(user: Any, counts: ConnectionCounts) -> bool:
    """Count the connections of a locustfile's own HttpUser or FastHttpUser, as it built its client.

    ``HttpSession``: the urllib3 ``PoolManager`` of each of its adapters (the user's own
    ``pool_manager`` or the one requests made). ``FastHttpSession``: its ``HTTPClientPool`` (the
    user's own ``client_pool`` or the one it made). Nothing is replaced; False when the client
    is of neither kind.
    """
    client = getattr(user, "client", None)
    counted = False
    for adapter in getattr(client, "adapters", {}).values():  # requests.Session
        manager = getattr(adapter, "poolmanager", None)
        if isinstance(manager, PoolManager):
            count_pool_manager(manager, counts)
            counted = True
    pool = getattr(getattr(client, "client", None), "clientpool", None)  # FastHttpSession's user agent
    if isinstance(pool, HTTPClientPool):
        count_client_pool(pool, counts)
        counted = True
    return counted
