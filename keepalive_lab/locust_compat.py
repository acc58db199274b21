"""Every Locust name the suite uses that is private or undocumented, behind a small function.

Written against Locust 2.47.0. Each function names the Locust internals it relies on, and
:data:`PRIVATE_NAMES` lists them so that a test fails, naming the installed Locust version, the
day one of them disappears. Nothing else in the suite touches these names.
"""

from __future__ import annotations

from locust import log as locust_log
from locust.html import get_html_report
from locust.rpc import Message
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV, StatsCSVFileWriter

import csv
import io
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent

TAKEN_FROM = "2.47.0"
# (module, dotted attribute): the private or undocumented names below, as of Locust TAKEN_FROM.
PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("locust.rpc", "Message"),
    ("locust.runners", "MasterRunner.clients"),
    ("locust.runners", "WorkerNodes.all"),
    ("locust.runners", "WorkerRunner._send_stats"),
    ("locust.runners", "Runner.target_user_count"),
    ("locust.log", "unhandled_greenlet_exception"),
    ("locust.html", "get_html_report"),
    ("locust.runners", "WorkerNodes.missing"),
    ("locust.runners", "WorkerNode.user_classes_count"),
    ("locust.runners", "MasterRunner.heartbeat_worker"),
    ("locust.stats", "StatsCSV._failures_data_rows"),
    ("locust.stats", "StatsCSVFileWriter._stats_history_data_rows"),
    ("locust.stats", "StatsCSVFileWriter.stats_history_file_name"),
    ("locust.stats", "StatsCSVFileWriter.close_files"),
)


def worker_ids(runner: Any) -> list[str]:
    """The ids of the workers connected to a master (``MasterRunner.clients.all``)."""
    return [client.id for client in runner.clients.all]


def answering_worker_ids(runner: Any) -> list[str]:
    """The workers of a master that still answer: connected and not marked missing (no heartbeat for
    ``HEARTBEAT_LIVENESS`` seconds)."""
    missing = {client.id for client in runner.clients.missing}
    return [client.id for client in runner.clients.all if client.id not in missing]


def worker_user_counts(runner: Any) -> dict[str, int]:
    """Each connected worker's users, as a master last heard them (``WorkerNode.user_classes_count``,
    which Locust empties when it marks the worker missing)."""
    return {client.id: sum(client.user_classes_count.values()) for client in runner.clients.all}


def before_master_start(runner: Any, hook: Callable[[], None]) -> None:
    """Call ``hook()`` each time the master's ``start()`` is about to run. Locust also calls it during
    a test to move a lost worker's users to the others (``MasterRunner.heartbeat_worker``), so the
    hook can tell the workers first: messages to a worker arrive in the order they were sent."""
    original = runner.start

    def start(*args: Any, **kwargs: Any) -> Any:
        hook()
        return original(*args, **kwargs)

    runner.start = start


def stop_worker_users(runner: Any) -> None:
    """Tell every worker to stop its users now, as ``MasterRunner.stop()`` does (a raw ``"stop"`` message)."""
    for worker in worker_ids(runner):
        runner.server.send_to_client(Message("stop", None, worker))


def send_stats_now(runner: Any) -> None:
    """Make a worker send its stats report (and the ``report_to_master`` data) at once, not on its timer."""
    runner._send_stats()


def target_user_count(runner: Any) -> int:
    """How many users the current test asks for (``Runner.target_user_count``)."""
    return int(runner.target_user_count or 0)


def greenlet_crashed() -> bool:
    """True once an unhandled exception has killed a Locust greenlet (``locust.log.unhandled_greenlet_exception``)."""
    return bool(locust_log.unhandled_greenlet_exception)


def html_report(environment: Any) -> str:
    """Locust's own HTML report of the test (what ``--html`` writes)."""
    return get_html_report(environment, show_download_link=False)


def csv_text(write_rows: Callable[[Any], None]) -> str:
    """A CSV as text; ``write_rows(csv_writer)`` fills it (Locust's ``StatsCSV`` methods fit)."""
    buf = io.StringIO()
    write_rows(csv.writer(buf))
    return buf.getvalue()


def stats_csv_files(environment: Any, host_of: Callable[[str], dict[str, int]] | None = None) -> dict[str, str]:
    """Locust's ``stats.csv``, ``failures.csv`` and ``exceptions.csv`` as ``--csv`` writes them, as text.

    With ``host_of`` (a Locust error key -> occurrences per host), ``failures.csv`` gets a last
    column, :data:`keepalive_lab.schema.FAILURES_HOST_COLUMN`: each error's row becomes one row
    per host it happened on. Locust writes one row per error in the order of their keys
    (``StatsCSV._failures_data_rows``, ``sort_stats``), which is how rows and keys are matched.
    """
    writer = StatsCSV(environment, PERCENTILES_TO_REPORT)
    failures = csv_text(writer.failures_csv)
    if host_of is not None:
        from keepalive_lab.schema import FAILURES_HOST_COLUMN

        header, *rows = list(csv.reader(io.StringIO(failures)))
        occurrences = header.index("Occurrences")
        out = [[*header, FAILURES_HOST_COLUMN]]
        for key, row in zip(sorted(environment.stats.errors), rows, strict=False):
            for host, n in sorted(host_of(key).items()):
                out.append([*row[:occurrences], str(n), *row[occurrences + 1 :], host])
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(out)
        failures = buf.getvalue()
    return {
        "stats.csv": csv_text(writer.requests_csv),
        "failures.csv": failures,
        "exceptions.csv": csv_text(writer.exceptions_csv),
    }


class StatsHistory:
    """Locust's ``stats_history.csv``, written once a second by Locust's own CSV writer during a test.

    The writer keeps hidden files in the run folder; :meth:`finish` writes the last row and moves
    the history into place, and removes the rest.
    """

    def __init__(self, environment: Any, folder: Path) -> None:
        self._base = str(folder / ".locust")
        self._writer = StatsCSVFileWriter(environment, PERCENTILES_TO_REPORT, self._base, full_history=False)
        self._greenlet = gevent.spawn(self._writer.stats_writer)

    def finish(self, destination: Path) -> None:
        self._greenlet.kill(block=True)
        writer = self._writer
        writer._stats_history_data_rows(writer.stats_history_csv_writer, time.time())
        writer.close_files()
        os.replace(writer.stats_history_file_name(), destination)
        for suffix in ("_stats.csv", "_failures.csv", "_exceptions.csv"):
            Path(self._base + suffix).unlink(missing_ok=True)
