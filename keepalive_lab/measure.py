"""Measure a locustfile's own ``HttpUser`` and ``FastHttpUser`` classes, as written.

Import it from the locustfile (``import keepalive_lab.measure``), or add the suite's
``locustfiles/measure.py`` to ``-f``::

    locust -f mine.py,locustfiles/measure.py --host https://example.test

Every HttpUser and FastHttpUser of the run then gets the suite's connection counts (per request
name, with connect and TLS handshake times), the socket sidecar, a run folder, the report and the
web UI's Connections tab. Nothing of the class is replaced: its client, its ``pool_manager`` or
``client_pool``, ``concurrency``, timeouts, TLS settings, ``wait_time`` and tasks stay as
written; the client's connection pools only gain counting. The suite's LabUser scenarios in the
same run keep working, and the options that only act on them (``--drain``, ``--think-time``...)
are refused when no LabUser runs.
"""

from __future__ import annotations

from locust import FastHttpUser, HttpUser

from keepalive_lab import plugin
from keepalive_lab.users import LabUser

plugin.register(LabUser)
plugin.register(HttpUser)
plugin.register(FastHttpUser)
