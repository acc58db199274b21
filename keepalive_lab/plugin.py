"""The suite's Locust event listeners, each a few lines that hand over to the part that does the job.

:func:`register` adds them once, and each call names a base whose subclasses are measured:
``LabUser`` registers itself when :mod:`keepalive_lab.users` is imported, which every scenario
does, and :mod:`keepalive_lab.measure` adds Locust's ``HttpUser`` and ``FastHttpUser``:

``init_command_line_parser``
    the suite's options (:mod:`keepalive_lab.options`), shown with the locustfile's defaults.
``init``
    the settings resolved and checked once, before any load (a bad value: one line, exit 2);
    the embedded target or peer started when no ``--host`` is given; the web-UI form checked;
    the master/worker messages (:mod:`keepalive_lab.workers`).
``test_start`` / ``test_stop``
    one run folder per test (:mod:`keepalive_lab.run`), through the process's
    :class:`~keepalive_lab.session.Session`.
``quitting`` / ``quit`` (and the other events that do not name their Environment)
    bound to the session at ``init``: a test cut short by Ctrl-C or SIGTERM is finished and
    marked ``interrupted``; the target or peer is stopped.
"""

from __future__ import annotations

from locust import events

import logging
import signal
import sys
from typing import Any

import gevent

from keepalive_lab import console, metrics, webui
from keepalive_lab.config import ConfigError
from keepalive_lab.options import add_arguments, apply_default_users
from keepalive_lab.session import session_of


def concrete_subclasses(base: type) -> list[type]:
    """Every non-abstract subclass of ``base`` defined so far (a locustfile's scenarios, once imported)."""
    found, todo = [], list(base.__subclasses__())
    while todo:
        cls = todo.pop(0)
        todo.extend(cls.__subclasses__())
        if not cls.__dict__.get("abstract", False):
            found.append(cls)
    return found


# The classes whose subclasses the suite measures: LabUser, and with keepalive_lab.measure
# imported, Locust's HttpUser and FastHttpUser.
_BASES: list[type] = []


def _measured(environment: Any) -> list[type]:
    return [c for c in environment.user_classes if issubclass(c, tuple(_BASES))]


def _lab_classes() -> list[type]:
    """The concrete LabUser scenarios defined so far (the options show their defaults)."""
    return [c for base in _BASES for c in concrete_subclasses(base) if getattr(c, "builds_client", False)]


def _exit_one_line(message: str) -> None:
    sys.stderr.write(f"locust: error: {message}\n")
    sys.stderr.flush()
    sys.exit(2)


def on_init_command_line_parser(parser: Any, **_: Any) -> None:
    classes = list(dict.fromkeys(_lab_classes()))
    add_arguments(parser, classes[0] if len(classes) == 1 else None, lab_users=bool(classes))


def _nothing_measured(environment: Any) -> None:
    others = [c.__name__ for c in environment.user_classes]
    if others:
        sys.stderr.write(
            f"keepalive-lab: nothing to measure: {', '.join(others)} {'is' if len(others) == 1 else 'are'} not among "
            "the suite's LabUser scenarios, so no run folder is written; add locustfiles/measure.py to -f (or "
            "'import keepalive_lab.measure' in the locustfile) to measure HttpUser and FastHttpUser classes as "
            "written\n"
        )


def on_init(environment: Any, runner: Any = None, web_ui: Any = None, **_: Any) -> None:
    classes = _measured(environment)
    if not classes:
        _nothing_measured(environment)
        return
    session = session_of(environment)
    session.user_classes = classes
    try:
        session.resolve_configs()
    except ConfigError as e:
        _exit_one_line(str(e))
    if session.runs_users:
        session.count_own_clients()
    apply_default_users(environment.parsed_options, classes)
    # Pool-full discards are counted exactly; urllib3's warning per discard would flood the log.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    # Events that do not name their Environment get listeners bound to this session.
    events_ = environment.events
    events_.spawning_complete.add_listener(lambda **_: session.all_spawned.set())
    if session.runs_users:  # each request's share of the connections, by its name
        events_.request.add_listener(lambda name, **_: session.counts.on_request(name))
    events_.report_to_master.add_listener(lambda data, **_: session.link.add_counts(data, session.counts))
    events_.worker_report.add_listener(lambda client_id, data, **_: session.link.take_counts(client_id, data))
    # Locust fires quitting before it stops a running test only on Ctrl-C, SIGTERM, or when a
    # greenlet crashed (Locust then shuts down by itself). Locust's own SIGTERM handler runs
    # after this one, which only notes the signal.
    received: list[str] = []
    gevent.signal_handler(signal.SIGTERM, lambda: received.append("SIGTERM"))
    events_.quitting.add_listener(lambda **_: session.on_quitting(received[0] if received else None))
    events_.quit.add_listener(lambda **_: session.servers.stop())
    if session.writes_runs and not environment.host and all(getattr(c, "host", None) is None for c in classes):
        session.start_server()
    if not session.writes_runs:
        return
    registry = metrics.registry_for(session)
    session.live.warm()  # the live figures and the run's end use the report's computation
    if web_ui is not None:
        webui.install(web_ui, session, lambda: environment.host, session.prepare_server,
                      lambda: metrics.exposition(registry))  # fmt: skip
    opts = environment.parsed_options
    if getattr(opts, "metrics_port", 0):
        metrics.serve(registry, opts.metrics_host, opts.metrics_port)
    if getattr(opts, "headless", False) and not getattr(opts, "only_summary", False):
        gevent.spawn(console.print_lines, session)


def on_test_start(environment: Any, **_: Any) -> None:
    classes = _measured(environment)
    if classes:
        session = session_of(environment)
        session.user_classes = classes
        session.on_test_start()


def on_test_stop(environment: Any, **_: Any) -> None:
    if _measured(environment):
        session_of(environment).on_test_stop()


def register(base: type) -> None:
    """Measure the user classes derived from ``base`` too; the listeners are added once."""
    if base in _BASES:
        return
    _BASES.append(base)
    if len(_BASES) == 1:
        events.init_command_line_parser.add_listener(on_init_command_line_parser)
        events.init.add_listener(on_init)
        events.test_start.add_listener(on_test_start)
        events.test_stop.add_listener(on_test_stop)
