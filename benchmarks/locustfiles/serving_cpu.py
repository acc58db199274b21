"""Added to a benchmarked run (``-f locustfiles/concurrent.py,benchmarks/locustfiles/serving_cpu.py``):
how much of the Locust process's CPU time, while its test runs, goes to answering HTTP requests
to the web UI and to ``/metrics``.

Every answer gevent's WSGI server gives (Locust's web UI and the suite's ``/metrics`` port both use
it) is timed with the process's CPU clock, by request path. The figure is an upper bound: were an
answer to wait on a socket, the users' work done meanwhile would be counted with it. At the test's
end the totals, and the process's CPU time over the test, go as JSON to the file named by
``KEEPALIVE_BENCH_SERVING``.
"""

from __future__ import annotations

from locust import events

import json
import os
import time
from collections import defaultdict

from gevent import pywsgi

SPENT: dict[str, float] = defaultdict(float)
COUNT: dict[str, int] = defaultdict(int)
WINDOW: dict[str, float] = {}


_answer = pywsgi.WSGIHandler.handle_one_response


def _timed(handler: pywsgi.WSGIHandler) -> None:
    if "start" not in WINDOW or "end" in WINDOW:
        return _answer(handler)
    started = time.process_time()
    try:
        return _answer(handler)
    finally:
        group = handler.path.split("?", 1)[0] if handler.path else ""
        SPENT[group] += time.process_time() - started
        COUNT[group] += 1


pywsgi.WSGIHandler.handle_one_response = _timed


@events.test_start.add_listener
def _start(**_: object) -> None:
    WINDOW["start"] = time.process_time()


@events.test_stop.add_listener
def _stop(**_: object) -> None:
    WINDOW["end"] = time.process_time()
    out = os.environ.get("KEEPALIVE_BENCH_SERVING")
    if out:
        with open(out, "w") as f:
            json.dump({"cpu_s": WINDOW["end"] - WINDOW["start"], "spent_s": SPENT, "answers": COUNT}, f)
