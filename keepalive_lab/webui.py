"""The suite in Locust's web UI: the start form's fields are checked, and the server is ready,
before a test starts.

A bad value in the form gets the same one line as on the command line, shown in the UI, and the
test does not start. When the form changes the embedded target's or the peer's settings, the
server is restarted before Locust reads the form, and the form's host becomes the new server's
URL: the test loads the server it names, and the UI's header shows it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from keepalive_lab.config import ConfigError
from keepalive_lab.options import check_values


def check_start_form(
    web_ui: Any, host: Callable[[], str | None], prepare: Callable[[Mapping[str, str]], str | None]
) -> None:
    """Refuse a ``/swarm`` request whose suite fields do not parse; ``host()`` is the current host.

    ``prepare(form)`` readies the server the form names and returns its URL, or None when the form
    names the user's own host.
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
