"""Measure your own locustfile: add this file to ``-f``, and leave yours unchanged.

    locust -f mine.py,locustfiles/measure.py                 # web UI
    locust -f mine.py,locustfiles/measure.py --headless -u 10 -t 30s --host http://127.0.0.1:8080

Every HttpUser and FastHttpUser in ``mine.py`` is counted as written (see keepalive_lab.measure):
connections per request name, connect and TLS times, TIME_WAIT and ports from the sidecar, one
run folder per test. This file defines no user class of its own.
"""

import keepalive_lab.measure  # noqa: F401
