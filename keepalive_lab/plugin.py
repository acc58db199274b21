"""The suite's Locust event listeners, each a few lines that hand over to the part that does the job.

:func:`register` adds them for the user classes derived from a base (``LabUser`` registers
itself when :mod:`keepalive_lab.users` is imported, which every locustfile does):

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

import functools
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


def _measured(environment: Any, base: type) -> list[type]:
    return [c for c in environment.user_classes if issubclass(c, base)]


def _exit_one_line(message: str) -> None:
    sys.stderr.write(f"locust: error: {message}\n")
    sys.stderr.flush()
    sys.exit(2)


def on_init_command_line_parser(parser: Any, base: type, **_: Any) -> None:
    classes = concrete_subclasses(base)
    add_arguments(parser, classes[0] if len(classes) == 1 else None)


def on_init(environment: Any, base: type, runner: Any = None, web_ui: Any = None, **_: Any) -> None:
    classes = _measured(environment, base)
    if not classes:
        return
    session = session_of(environment)
    session.user_classes = classes
    try:
        session.resolve_configs()
    except ConfigError as e:
        _exit_one_line(str(e))
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


def on_test_start(environment: Any, base: type, **_: Any) -> None:
    classes = _measured(environment, base)
    if classes:
        session = session_of(environment)
        session.user_classes = classes
        session.on_test_start()


def on_test_stop(environment: Any, base: type, **_: Any) -> None:
    if _measured(environment, base):
        session_of(environment).on_test_stop()


def register(base: type) -> None:
    """Add the suite's listeners for the user classes derived from ``base``."""
    events.init_command_line_parser.add_listener(functools.partial(on_init_command_line_parser, base=base))
    events.init.add_listener(functools.partial(on_init, base=base))
    events.test_start.add_listener(functools.partial(on_test_start, base=base))
    events.test_stop.add_listener(functools.partial(on_test_stop, base=base))
