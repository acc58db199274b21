"""Run inside a private network namespace by test_sidecar.py: make sockets in known states, then
print one JSON line with the samples of both samplers.

    python sockets_scenario.py MODE N
MODE: client-closes | server-closes | established | mixed
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time

from keepalive_lab import kernel
from keepalive_lab.schema import SOCKET_STATE_COLUMNS as SOCKET_COLUMNS
from keepalive_lab.sidecar import Attribution, NetlinkSampler, PsutilSampler, sample

PORT = 8080


def wait_settled(sampler, port, attribution, key, want, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    row = sample(sampler, port, attribution)
    while getattr(row, key) != want and time.monotonic() < deadline:
        time.sleep(0.02)
        row = sample(sampler, port, attribution)
    return row


def main() -> None:
    mode, n = sys.argv[1], int(sys.argv[2])
    srv = socket.socket()
    srv.bind(("127.0.0.1", PORT))
    srv.listen(1024)
    netlink, ps = NetlinkSampler(), PsutilSampler()
    # Baselines taken before any connection: every socket made below is the run's own.
    by_netlink, by_psutil, by_netlink_again = (Attribution(s.exact_keys) for s in (netlink, ps, netlink))
    sample(netlink, PORT, by_netlink), sample(ps, PORT, by_psutil), sample(netlink, PORT, by_netlink_again)
    before = kernel.snmp_tcp()
    accepted, clients = [], []
    for _ in range(n):
        clients.append(socket.create_connection(("127.0.0.1", PORT)))
        accepted.append(srv.accept()[0])
    if mode == "client-closes":
        for c in clients:
            c.close()
        for a in accepted:
            a.recv(1)
            a.close()
        key, want = "client_time_wait", n
    elif mode == "server-closes":
        for a in accepted:
            a.close()
        for c in clients:
            c.recv(1)
            c.close()
        key, want = "server_time_wait", n
    elif mode == "established":
        key, want = "client_established", n
    else:  # mixed: a third each of TIME_WAIT on the client, CLOSE_WAIT on the client, ESTABLISHED
        third = n // 3
        for c, a in zip(clients[:third], accepted[:third], strict=True):
            c.close()
            a.recv(1)
            a.close()
        for a in accepted[third : 2 * third]:
            a.close()  # the client never closes: CLOSE_WAIT on the client, FIN_WAIT2 on the server
        key, want = "client_close_wait", third
    row = wait_settled(netlink, PORT, by_netlink, key, want)
    after = kernel.snmp_tcp()
    print(
        json.dumps(
            {
                "netlink": {c: getattr(row, c) for c in SOCKET_COLUMNS},
                "psutil": {c: getattr(sample(ps, PORT, by_psutil), c) for c in SOCKET_COLUMNS},
                "netlink_again": {c: getattr(sample(netlink, PORT, by_netlink_again), c) for c in SOCKET_COLUMNS},
                "active_opens": after["ActiveOpens"] - before["ActiveOpens"],
                "passive_opens": after["PassiveOpens"] - before["PassiveOpens"],
                "tw_total": row.tw_total,
            }
        )
    )
    threading.Event().wait(0)


if __name__ == "__main__":
    main()
