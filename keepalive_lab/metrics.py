"""``/metrics``: the run's connections in the Prometheus text format (``prometheus_client``).

Served by the web UI, and in headless runs on ``--metrics-port``. Each value is read at scrape
time from where the run folder's own figures come from: Locust's stats, the client's counts (as
``run.json``'s ``client_connections``) and the sidecar's last sample of ``sockets.csv``. Counters
start again at each test. Labels: ``scenario`` and ``host``: the host's name as in
``sockets.csv``. With workers on several hosts, each host has its own series: its workers' counts
(``run.json``'s ``hosts``) and its own sidecar's last sample.

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

from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric

from keepalive_lab.netns import host_label
from keepalive_lab.schema import SOCKETS_CSV, ClientConnections

LABELS = ("scenario", "host")


TAIL_BYTES = 65536  # enough for the last row of every host: a row is about 150 bytes


def last_samples(path: Any) -> dict[str, dict[str, str]]:
    """Each host's last whole row of a sockets.csv being written (read from its end), by host."""
    try:
        with open(path, "rb") as f:
            header = f.readline().decode().rstrip("\n").split(",")
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            lines = [line for line in f.read().decode(errors="replace").split("\n")[:-1] if line]
    except OSError:
        return {}
    out: dict[str, dict[str, str]] = {}
    for line in lines:
        values = line.split(",")
        if len(values) == len(header) and values != header:
            row = dict(zip(header, values, strict=True))
            out[row.get("host", "")] = row
    return out


class ConnectionsCollector:
    """Collects the session's figures at each scrape."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def per_host(self) -> dict[str, tuple[ClientConnections, float]]:
        """Each host's client counts and requests: this process's, or with workers each host's workers'."""
        session = self.session
        if not session.link.is_master:
            return {host_label(): (session.connection_totals(), session.environment.stats.total.num_requests)}
        parts: dict[str, list[ClientConnections]] = {}
        requests: dict[str, float] = {}
        for worker, counts in session.link.counts_by_worker.items():
            host = session.link.host_of(worker)
            parts.setdefault(host, []).append(counts)
            requests[host] = requests.get(host, 0) + session.link.last_report.get(worker, (0.0, 0))[1]
        return {host: (ClientConnections.total(p), requests[host]) for host, p in parts.items()}

    def collect(self) -> Iterator[Metric]:
        session = self.session
        run = session.run or session.last_run
        scenario = run.config.scenario if run is not None else ""
        samples = last_samples(run.folder / SOCKETS_CSV) if run is not None else {}
        counts = self.per_host()

        def counter(name: str, doc: str, value: Any, extra: tuple[str, ...] = ()) -> Metric:
            """``value(counts)``: this host's value, or its (extra label values, value) rows."""
            family = CounterMetricFamily(name, doc, labels=[*LABELS, *extra])
            for host, (totals, requests) in counts.items():
                got = value(totals, requests)
                for extra_values, v in got if isinstance(got, list) else [((), got)]:
                    family.add_metric([scenario, host, *extra_values], v)
            return family

        def gauge(
            name: str, doc: str, columns: list[tuple[tuple[str, ...], str]], extra: tuple[str, ...] = ()
        ) -> Metric:
            family = GaugeMetricFamily(name, doc, labels=[*LABELS, *extra])
            for host, sample in samples.items():
                for extra_values, column in columns:
                    if sample.get(column, "") != "":
                        family.add_metric([scenario, host, *extra_values], float(sample[column]))
            return family

        def by_client(t: ClientConnections) -> int:
            return (t.closed_by_client or 0) + (t.reset_by_client or 0) + (t.closed_at_end or 0)

        yield counter("keepalive_requests", "Requests made", lambda t, r: r)
        yield counter("keepalive_connections_opened", "Connections the client opened", lambda t, r: t.opened)
        yield counter("keepalive_connections_closed", "Connections closed, by who closed first",
                      lambda t, r: [(("client",), by_client(t)), (("server",), t.closed_by_server or 0)],
                      ("by",))  # fmt: skip
        yield counter("keepalive_connection_discards", "Connections closed on return to a full pool",
                      lambda t, r: t.discarded)  # fmt: skip
        yield counter("keepalive_connect_errors", "Failed connects, by errno",
                      lambda t, r: [((code,), n) for code, n in t.connect_errors_by_errno.items()],
                      ("errno",))  # fmt: skip
        yield counter("keepalive_tls_errors", "Failed TLS handshakes", lambda t, r: t.tls_errors)
        yield gauge("keepalive_time_wait", "The run's own TIME_WAIT sockets, by side",
                    [(("client",), "client_time_wait"), (("server",), "server_time_wait")], ("side",))  # fmt: skip
        yield gauge("keepalive_ports_in_use", "The run's own client ports in use", [((), "ports_in_use")])
        yield gauge("keepalive_port_range", "Size of net.ipv4.ip_local_port_range", [((), "port_range")])
        active = CounterMetricFamily("keepalive_tcp_active_opens", "The kernel's TCP ActiveOpens (namespace)",
                                     labels=list(LABELS))  # fmt: skip
        for host, sample in samples.items():
            if sample.get("active_opens", "") != "":
                active.add_metric([scenario, host], float(sample["active_opens"]))
        yield active


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
