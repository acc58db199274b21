"""``/metrics``: the run's connections in the Prometheus text format (``prometheus_client``).

Served by the web UI, and in headless runs on ``--metrics-port``. Each value is read at scrape
time from where the run folder's own figures come from: Locust's stats, the client's counts (as
``run.json``'s ``client_connections``) and the sidecar's last sample of ``sockets.csv``. Counters
start again at each test. Labels: ``scenario`` and ``host`` (the sampled host's name).

========================================== ==========================================================
metric                                     meaning
========================================== ==========================================================
``keepalive_requests_total``               requests made (Locust's total)
``keepalive_connections_opened_total``     connections the client opened
``keepalive_connections_closed_total``     closed, ``by="client"`` (every close the client made
                                           first, those at the end included) or ``by="server"``
``keepalive_connection_discards_total``    closed because they came back to a full pool
``keepalive_connect_errors_total``         failed connects, by ``errno`` (99: no free port)
``keepalive_tls_errors_total``             failed TLS handshakes
``keepalive_time_wait``                    the run's own TIME_WAIT sockets, by ``side``
``keepalive_ports_in_use``                 the run's own client ports in use
``keepalive_port_range``                   the ephemeral port range's size
``keepalive_tcp_active_opens_total``       the kernel's ActiveOpens (node_exporter's
                                           ``node_netstat_Tcp_ActiveOpens``), whole namespace
========================================== ==========================================================
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric

from keepalive_lab.schema import SOCKETS_CSV

LABELS = ("scenario", "host")


def last_sample(path: Any) -> dict[str, str]:
    """The last whole row of a sockets.csv being written (read from its end), or {}."""
    try:
        with open(path, "rb") as f:
            header = f.readline().decode().rstrip("\n").split(",")
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 8192))
            lines = [line for line in f.read().decode(errors="replace").split("\n")[:-1] if line]
    except OSError:
        return {}
    if not lines or lines[-1].split(",") == header:
        return {}
    values = lines[-1].split(",")
    return dict(zip(header, values, strict=False)) if len(values) == len(header) else {}


class ConnectionsCollector:
    """Collects the session's figures at each scrape."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def collect(self) -> Iterator[Metric]:
        session = self.session
        run = session.run or session.last_run
        scenario = run.config.scenario if run is not None else ""
        sample = last_sample(run.folder / SOCKETS_CSV) if run is not None else {}
        labels = [scenario, sample.get("host") or socket.gethostname()]
        totals = session.connection_totals()
        stats = session.environment.stats.total

        def counter(name: str, doc: str, value: float, extra: tuple[str, ...] = (), rows: Any = None) -> Metric:
            family = CounterMetricFamily(name, doc, labels=[*LABELS, *extra])
            for extra_values, v in rows if rows is not None else [((), value)]:
                family.add_metric([*labels, *extra_values], v)
            return family

        def gauge(name: str, doc: str, column: str, extra: tuple[str, ...] = (), rows: Any = None) -> Metric | None:
            family = GaugeMetricFamily(name, doc, labels=[*LABELS, *extra])
            for extra_values, col in rows if rows is not None else [((), column)]:
                if sample.get(col, "") != "":
                    family.add_metric([*labels, *extra_values], float(sample[col]))
            return family

        by_client = (totals.closed_by_client or 0) + (totals.reset_by_client or 0) + (totals.closed_at_end or 0)
        yield counter("keepalive_requests", "Requests made", stats.num_requests)
        yield counter("keepalive_connections_opened", "Connections the client opened", totals.opened)
        yield counter("keepalive_connections_closed", "Connections closed, by who closed first", 0, ("by",),
                      [(("client",), by_client), (("server",), totals.closed_by_server or 0)])  # fmt: skip
        yield counter("keepalive_connection_discards", "Connections closed on return to a full pool", totals.discarded)
        yield counter("keepalive_connect_errors", "Failed connects, by errno", 0, ("errno",),
                      [((code,), n) for code, n in totals.connect_errors_by_errno.items()])  # fmt: skip
        yield counter("keepalive_tls_errors", "Failed TLS handshakes", totals.tls_errors)
        yield gauge("keepalive_time_wait", "The run's own TIME_WAIT sockets, by side", "", ("side",),
                    [(("client",), "client_time_wait"), (("server",), "server_time_wait")])  # fmt: skip
        yield gauge("keepalive_ports_in_use", "The run's own client ports in use", "ports_in_use")
        yield gauge("keepalive_port_range", "Size of net.ipv4.ip_local_port_range", "port_range")
        if sample.get("active_opens", "") != "":
            yield counter("keepalive_tcp_active_opens", "The kernel's TCP ActiveOpens (namespace)",
                          float(sample["active_opens"]))  # fmt: skip


def registry_for(session: Any) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ConnectionsCollector(session))  # type: ignore[arg-type]
    return registry


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The metrics as Prometheus text, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


def serve(registry: CollectorRegistry, host: str, port: int) -> Any:
    """Serve ``/metrics`` on ``host:port`` from a gevent WSGI server (headless runs); returns it."""
    from gevent.pywsgi import WSGIServer
    from prometheus_client import make_wsgi_app

    server = WSGIServer((host, port), make_wsgi_app(registry), log=None)
    server.start()
    return server
