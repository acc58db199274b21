"""The Linux facts a run depends on, read from /proc (each read costs microseconds).

All of these are per network namespace: a run inside ``unshare --net`` sees its own port range,
its own ``tcp_tw_reuse``, its own sockets and counters.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from keepalive_lab.netns import namespace_of

PROC_NET = Path("/proc/net")
PROC_SYS = Path("/proc/sys/net/ipv4")
DEFAULT_PORT_RANGE = (32768, 60999)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def port_range() -> tuple[int, int]:
    """``net.ipv4.ip_local_port_range`` as (low, high), inclusive."""
    text = _read(PROC_SYS / "ip_local_port_range")
    if not text:
        return DEFAULT_PORT_RANGE
    lo, hi = (int(x) for x in text.split())
    return lo, hi


def port_range_size(bounds: tuple[int, int] | None = None) -> int:
    """How many ephemeral ports the range holds (28,232 by default)."""
    lo, hi = bounds or port_range()
    return hi - lo + 1


def tw_reuse() -> int | None:
    """``net.ipv4.tcp_tw_reuse``: 0 off, 1 on, 2 loopback only."""
    text = _read(PROC_SYS / "tcp_tw_reuse")
    return int(text) if text else None


def max_tw_buckets() -> int | None:
    """``net.ipv4.tcp_max_tw_buckets``: past it the kernel destroys TIME_WAIT sockets early."""
    text = _read(PROC_SYS / "tcp_max_tw_buckets")
    return int(text) if text else None


def listening(port: int) -> bool:
    """True when a TCP socket of this namespace listens on ``port`` (read from /proc, no connection made)."""
    needle = f":{port:04X} "
    for name in ("tcp", "tcp6"):
        for line in (_read(PROC_NET / name) or "").splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A" and (fields[1] + " ").endswith(needle):
                return True
    return False


def interfaces() -> list[str]:
    """Network interfaces of this namespace, from /proc/net/dev."""
    text = _read(PROC_NET / "dev") or ""
    return [line.split(":", 1)[0].strip() for line in text.splitlines()[2:] if ":" in line]


def netns_isolated() -> bool:
    """True in a private lab namespace (``unshare --net``): loopback is its only interface."""
    return interfaces() == ["lo"]


def snmp_tcp() -> dict[str, int]:
    """The ``Tcp:`` counters of /proc/net/snmp (ActiveOpens, PassiveOpens, AttemptFails, ...)."""
    text = _read(PROC_NET / "snmp") or ""
    rows = [line.split()[1:] for line in text.splitlines() if line.startswith("Tcp:")]
    if len(rows) < 2:
        return {}
    return {name: int(value) for name, value in zip(rows[0], rows[1], strict=False)}


def sockstat_tw() -> int:
    """TIME_WAIT sockets in this namespace, from the ``TCP:`` line of /proc/net/sockstat."""
    text = _read(PROC_NET / "sockstat") or ""
    for line in text.splitlines():
        if line.startswith("TCP:"):
            fields = line.split()[1:]
            pairs = dict(zip(fields[::2], fields[1::2], strict=False))
            return int(pairs.get("tw", 0))
    return 0


def facts() -> dict[str, Any]:
    """The kernel facts recorded in every ``run.json``."""
    bounds = port_range()
    return {
        "ip_local_port_range": list(bounds),
        "port_range": port_range_size(bounds),
        "tcp_tw_reuse": tw_reuse(),
        "tcp_max_tw_buckets": max_tw_buckets(),
        "hostname": socket.gethostname(),
        "isolated": netns_isolated(),
        "netns_id": namespace_of(),
    }


def baseline() -> dict[str, int]:
    """The namespace's cumulative counters at a test's start, so a run that shares them can subtract."""
    snmp = snmp_tcp()
    return {
        "active_opens": snmp.get("ActiveOpens", 0),
        "passive_opens": snmp.get("PassiveOpens", 0),
        "attempt_fails": snmp.get("AttemptFails", 0),
        "estab_resets": snmp.get("EstabResets", 0),
        "tw_total": sockstat_tw(),
    }
