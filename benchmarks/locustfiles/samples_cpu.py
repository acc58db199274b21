"""Added to a benchmarked master (``-f locustfiles/concurrent.py,benchmarks/locustfiles/samples_cpu.py``):
what the workers' sidecar samples cost the master's process.

Every message the master's RPC server receives is timed with the process's CPU clock (receiving
and decoding it); those of type ``keepalive_lab_samples`` are added up, and so is the suite's
handler of each (appending the rows to ``sockets.csv``). At the test's end the totals, the number
of such messages and rows, and the test's wall time go as JSON to the file named by
``KEEPALIVE_BENCH_SAMPLES``.
"""

from __future__ import annotations

from locust import events
from locust.rpc import zmqrpc

import json
import os
import time

from keepalive_lab.workers import MSG_SAMPLES

TOTALS = {"cpu_s": 0.0, "messages": 0, "rows": 0}
WINDOW: dict[str, float] = {}
_receive = zmqrpc.Server.recv_from_client


def _timed_receive(server: zmqrpc.Server):  # type: ignore[no-untyped-def]
    started = time.process_time()
    addr, msg = _receive(server)
    if msg.type == MSG_SAMPLES:
        TOTALS["cpu_s"] += time.process_time() - started
    return addr, msg


zmqrpc.Server.recv_from_client = _timed_receive


@events.init.add_listener
def _init(environment, **_: object) -> None:  # type: ignore[no-untyped-def]
    runner = environment.runner
    if runner is None or MSG_SAMPLES not in getattr(runner, "custom_messages", {}):
        return
    listener, concurrent = runner.custom_messages[MSG_SAMPLES]

    def timed(msg, **kwargs):  # type: ignore[no-untyped-def]
        started = time.process_time()
        try:
            return listener(msg, **kwargs)
        finally:
            TOTALS["cpu_s"] += time.process_time() - started
            TOTALS["messages"] += 1
            TOTALS["rows"] += str(msg.data.get("text") or "").count("\n")

    runner.custom_messages[MSG_SAMPLES] = (timed, concurrent)


@events.test_start.add_listener
def _start(**_: object) -> None:
    WINDOW["start"] = time.monotonic()


@events.test_stop.add_listener
def _stop(**_: object) -> None:
    out = os.environ.get("KEEPALIVE_BENCH_SAMPLES")
    if out and "start" in WINDOW:
        with open(out, "w") as f:
            json.dump({**TOTALS, "wall_s": time.monotonic() - WINDOW["start"]}, f)
