"""The suite in Locust's web UI: the Connections tab, live charts, downloads, ``/metrics``, the form.

Built on Locust's own extension points (Locust 2.47's React UI reads ``extended_tabs``,
``extended_tables`` and ``extended_csv_files`` from its template arguments, and each tab's rows
from the ``extended_stats`` of the ``/stats/requests`` JSON it polls every 2 s):

Connections tab
    a row per request name and a total: requests, connections opened, per request, reuse %,
    closed by the client and by the server, discards, connect errors by errno. Above the table a
    panel (a small script added to Locust's page, since the table holds text only) gives the
    report's one-line verdict, the sockets (TIME_WAIT per side, ESTABLISHED, ports in use against
    the range, churn, projection, tcp_tw_reuse), with several client hosts a row per host (its
    own ports against its own range), and a link to the live charts. The same rows are in
    ``/stats/requests`` under ``extended_stats``, key ``connections``; the total row also carries
    the verdict and the socket figures.
``/keepalive-lab/charts``
    TIME_WAIT per side and ports in use against the range, over time, with the report's offline
    plotly (no network).
Download data
    the current (or last) run's ``run.json``, ``sockets.csv`` and its HTML report, built when the
    test stops.
``/metrics``
    Prometheus (see :mod:`keepalive_lab.metrics`).
the start form
    the suite's fields in their order, each labelled in words with its unit and default; a bad
    value or an impossible combination is refused in the form, with the same one line as on the
    command line, and the server the form names is ready before Locust reads the form.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from keepalive_lab.config import ConfigError
from keepalive_lab.options import check_values
from keepalive_lab.schema import CONNECTIONS_CSV, REPORT_HTML, RUN_JSON, SOCKETS_CSV

TAB = "connections"
PREFIX = "/keepalive-lab"
COLUMNS = (
    ("name", "Name"),
    ("requests", "Requests"),
    ("connections", "Connections opened"),
    ("per_request", "Connections per request"),
    ("reuse_pct", "Reuse %"),
    ("closed_by_client", "Closed by the client"),
    ("closed_by_server", "Closed by the server"),
    ("discarded", "Discarded (pool full)"),
    ("connect_errors", "Connect errors"),
    ("connect_ms", "TCP connect, ms (mean)"),
    ("tls_ms", "TLS handshake, ms (mean)"),
)
DOWNLOADS = (
    (RUN_JSON, "Download this run's run.json (keepalive-lab)"),
    (SOCKETS_CSV, "Download this run's sockets.csv (keepalive-lab)"),
    (
        CONNECTIONS_CSV,
        "Download this run's connections per request name, connections.csv (keepalive-lab, when the test stops)",
    ),
    (REPORT_HTML, "Download this run's connection report (keepalive-lab, built when the test stops)"),
)
SOCKET_FIGURES = (
    "peak_client_time_wait", "peak_server_time_wait", "peak_ports_in_use", "port_range", "peak_port_use_pct",
    "churn_per_s", "projected_port_use_pct", "seconds_to_exhaustion", "tw_reuse_limit_per_s",
    "preexisting_client_time_wait", "client_closes_per_request", "connections_per_request",
)  # fmt: skip
MAX_CHART_POINTS = 2000


def _static(name: str) -> str:
    return importlib.resources.files("keepalive_lab").joinpath("web", name).read_text(encoding="utf-8")


def install(
    web_ui: Any,
    session: Any,
    host: Callable[[], str | None],
    prepare: Callable[[Mapping[str, str]], str | None],
    metrics_text: Callable[[], tuple[bytes, str]],
) -> None:
    """Add the suite to the web UI: tab, panel, charts, downloads, ``/metrics``, form checks."""
    from flask import Blueprint, Response, abort, jsonify, request

    app = web_ui.app
    # The start form shows the suite's fields in their own order: the page's template arguments
    # reach it through Jinja's tojson, which sorts keys unless told not to.
    app.json.sort_keys = False
    app.jinja_env.policies["json.dumps_kwargs"] = {"sort_keys": False}
    web_ui.template_args["extended_tabs"] = [{"title": "Connections", "key": TAB}]
    web_ui.template_args["extended_tables"] = [
        {"key": TAB, "structure": [{"key": key, "title": title} for key, title in COLUMNS]}
    ]
    web_ui.template_args["extended_csv_files"] = [
        {"href": f".{PREFIX}/download/{name}", "title": title} for name, title in DOWNLOADS
    ]
    guard = getattr(web_ui, "auth_required_if_enabled", lambda view: view)
    pages = Blueprint("keepalive_lab", __name__)

    def tab_rows() -> list[dict[str, Any]]:
        snap = session.live.snapshot()
        rows = [dict(row) for row in snap.by_name]
        if rows:  # the total row also carries what scripts want: the verdict and the sockets
            rows[-1].update(status=snap.status, status_reason=snap.status_reason, run_id=snap.run_id,
                            verdict=snap.verdict, hosts=snap.hosts,
                            **{k: snap.summary.get(k) for k in SOCKET_FIGURES})  # fmt: skip
        return rows

    @app.after_request
    def extend(response: Any) -> Any:
        if request.path == "/stats/requests" and response.is_json:
            data = response.get_json()
            data["extended_stats"] = [*data.get("extended_stats", []), {"key": TAB, "data": tab_rows()}]
            response.set_data(json.dumps(data))
        elif request.path == "/" and response.mimetype == "text/html":
            page = response.get_data(as_text=True)
            tag = f'<script src=".{PREFIX}/panel.js" defer></script>'
            response.set_data(page.replace("</body>", tag + "</body>", 1))
        return response

    @pages.route(f"{PREFIX}/panel.js")
    @guard
    def panel_js() -> Any:
        return Response(_static("panel.js"), mimetype="text/javascript")

    @pages.route(f"{PREFIX}/summary.json")
    @guard
    def summary_json() -> Any:
        snap = session.live.snapshot()
        return jsonify({"run_id": snap.run_id, "status": snap.status, "status_reason": snap.status_reason,
                        "folder": snap.folder,
                        "verdict": snap.verdict, "why": snap.why, "summary": snap.summary,
                        "last_sample": snap.last_sample, "tcp_tw_reuse": snap.tcp_tw_reuse,
                        "hosts": snap.hosts})  # fmt: skip

    @pages.route(f"{PREFIX}/charts")
    @guard
    def charts() -> Any:
        return Response(_static("charts.html"), mimetype="text/html")

    @pages.route(f"{PREFIX}/plotly.min.js")
    @guard
    def plotly_js() -> Any:
        return Response(_plotly_js(), mimetype="text/javascript", headers={"Cache-Control": "max-age=86400"})

    @pages.route(f"{PREFIX}/samples.json")
    @guard
    def samples_json() -> Any:
        return jsonify(_series(session.live.samples()))

    @pages.route(f"{PREFIX}/download/<name>")
    @guard
    def download(name: str) -> Any:
        folder = _folder(session)
        if name not in {n for n, _ in DOWNLOADS} or folder is None or not (folder / name).is_file():
            abort(404, f"no {name} yet: it comes with a run (the report when the test stops)")
        mimetype = {".json": "application/json", ".csv": "text/csv", ".html": "text/html"}[Path(name).suffix]
        return Response((folder / name).read_bytes(), mimetype=mimetype,
                        headers={"Content-Disposition": f"attachment; filename={folder.name}-{name}"})  # fmt: skip

    @pages.route("/metrics")
    @guard
    def metrics() -> Any:
        body, content_type = metrics_text()
        return Response(body, content_type=content_type)

    app.register_blueprint(pages)
    check_start_form(web_ui, host, prepare)
    on_stop_button(web_ui, lambda: setattr(session.ending, "stop_requested", True))


def _folder(session: Any) -> Path | None:
    run = session.run or session.last_run
    return run.folder if run is not None else None


_PLOTLY: list[str] = []


def _plotly_js() -> str:
    if not _PLOTLY:
        from plotly.offline import get_plotlyjs

        _PLOTLY.append(get_plotlyjs())
    return _PLOTLY[0]


def _series(samples: Any) -> dict[str, Any]:
    """The chart page's series from sockets.csv so far: seconds since the first sample, by column,
    at most :data:`MAX_CHART_POINTS` evenly spaced rows and the last."""
    if samples is None or not len(samples):
        return {}
    n = len(samples)
    rows = list(range(0, n, max(1, n // MAX_CHART_POINTS)))
    if rows[-1] != n - 1:
        rows.append(n - 1)
    kept = samples.iloc[rows]
    t0 = float(samples["ts"].iloc[0])

    def column(name: str) -> list[float | None]:
        return [None if v != v else float(v) for v in kept[name].astype(float).tolist()]  # NaN: none

    return {
        "t": [round(float(ts) - t0, 3) for ts in kept["ts"].tolist()],
        **{name: column(name) for name in ("client_time_wait", "server_time_wait", "ports_in_use",
                                           "host_ports_in_use", "client_established", "port_range")},
    }  # fmt: skip


def check_start_form(
    web_ui: Any, host: Callable[[], str | None], prepare: Callable[[Mapping[str, str]], str | None]
) -> None:
    """Refuse a ``/swarm`` request whose suite fields do not parse or do not go together; ``host()``
    is the current host.

    ``prepare(form)`` checks the combination (raising ConfigError), readies the server the form
    names and returns its URL, or None when the form names the user's own host.
    """
    from flask import jsonify, request
    from werkzeug.datastructures import ImmutableMultiDict

    @web_ui.app.before_request
    def check_swarm_form() -> Any:
        if request.path != "/swarm" or request.method != "POST":
            return None
        try:
            check_values(request.form)
            url = prepare(request.form)
        except ConfigError as e:
            return jsonify({"success": False, "message": str(e), "host": host()})
        if url is not None:
            form = request.form.copy()
            form["host"] = url
            request.form = ImmutableMultiDict(form)  # Locust's /swarm reads the host from the form
        return None


def on_stop_button(web_ui: Any, stopped: Callable[[], None]) -> None:
    """Call ``stopped()`` when the user presses STOP (the run is then ``stopped``, not ``completed``)."""
    from flask import request

    @web_ui.app.before_request
    def note_stop() -> None:
        if request.path == "/stop" and request.method == "POST":
            stopped()
