"""Counting connection pools, one module per client library, and the pool a scenario gets.

:mod:`keepalive_lab.clients.urllib3_pool` serves ``--client requests`` (Locust's ``HttpSession``)
and :mod:`keepalive_lab.clients.gevent_pool` ``--client fasthttp`` (``FastHttpSession``). Both
count into one :class:`~keepalive_lab.clients.counts.ConnectionCounts` per process.
"""

from __future__ import annotations

from typing import Any

from urllib3 import PoolManager

from keepalive_lab.clients.counts import ConnectionCounts
from keepalive_lab.clients.gevent_pool import counting_client_pool
from keepalive_lab.clients.urllib3_pool import close_pool_manager, counting_pool_manager
from keepalive_lab.config import ClientType, PoolFull, ScenarioConfig


def make_pool(cfg: ScenarioConfig, counts: ConnectionCounts) -> Any:
    """The counting pool for a scenario: a urllib3 ``PoolManager`` or a geventhttpclient ``HTTPClientPool``."""
    if cfg.client_type is ClientType.FASTHTTP:
        return counting_client_pool(cfg.pool_size, counts, cfg.pool_wait_s)
    return counting_pool_manager(cfg.pool_size, cfg.pool_full is PoolFull.BLOCK, counts, cfg.pool_wait_s)


def close_pool(pool: Any) -> None:
    """Close every idle connection a pool holds."""
    if isinstance(pool, PoolManager):
        close_pool_manager(pool)
    else:
        pool.close()
