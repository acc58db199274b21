"""The suite in Locust's web UI: its start-form fields are checked before a test starts.

A bad value in the form gets the same one line as on the command line, shown in the UI, and the
test does not start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keepalive_lab.config import ConfigError
from keepalive_lab.options import check_values


def check_start_form(web_ui: Any, host: Callable[[], str | None]) -> None:
    """Refuse a ``/swarm`` request whose suite fields do not parse; ``host()`` is the current host."""
    from flask import jsonify, request

    @web_ui.app.before_request
    def check_swarm_form() -> Any:
        if request.path != "/swarm" or request.method != "POST":
            return None
        try:
            check_values(request.form)
        except ConfigError as e:
            return jsonify({"success": False, "message": str(e), "host": host()})
        return None


def on_stop_button(web_ui: Any, stopped: Callable[[], None]) -> None:
    """Call ``stopped()`` when the user presses STOP (the run is then ``stopped``, not ``completed``)."""
    from flask import request

    @web_ui.app.before_request
    def note_stop() -> None:
        if request.path == "/stop":
            stopped()
