"""The master/worker messages of the suite, in one place.

With ``--processes`` or ``--master``/``--worker``, users run in workers. Each worker counts its
own connections and sends them with every stats report (``report_to_master``, under
:data:`REPORT_KEY`); the master keeps the last counts of each worker. The suite adds three
custom messages (``runner.register_message``):

``keepalive_lab_user_done`` (worker → master)
    a user has made its ``--requests-per-user`` requests; the master ends the test when all have.
``keepalive_lab_flush`` (master → worker)
    send your stats report now: the master is about to write the run folder.
``keepalive_lab_flushed`` (worker → master)
    sent.
``keepalive_lab_run`` (master → worker)
    a test starts: the name its clients report their connections under (:mod:`keepalive_lab.feed`),
    the master's host, and whether the embedded target listens on loopback.
``keepalive_lab_refuse`` (worker → master)
    this worker is on another host than a loopback-only embedded target: the test must not start.
``keepalive_lab_samples`` (worker → master)
    rows of the worker's host sidecar, as ``sockets.csv`` lines; with the first, the host's kernel
    facts; with the last, the sidecar's state (:mod:`keepalive_lab.hostsidecar`).
``keepalive_lab_freeze`` (master → worker)
    a worker was lost: start no more budgeted users than your share so far, so that a user Locust
    moves from the lost worker does not spend a budget twice.

A host is a hostname plus a network namespace (:func:`host_identity`).
"""

from __future__ import annotations

from locust.runners import MasterRunner, WorkerRunner

import socket
import time
from collections.abc import Callable
from typing import Any

import gevent

from keepalive_lab import locust_compat
from keepalive_lab.clients.counts import ConnectionCounts
from keepalive_lab.hostsidecar import HostSidecar, claim
from keepalive_lab.netns import host_label, namespace_of
from keepalive_lab.schema import ClientConnections

MSG_USER_DONE = "keepalive_lab_user_done"
MSG_FLUSH = "keepalive_lab_flush"
MSG_FLUSHED = "keepalive_lab_flushed"
MSG_RUN = "keepalive_lab_run"
MSG_REFUSE = "keepalive_lab_refuse"
MSG_SAMPLES = "keepalive_lab_samples"
MSG_FREEZE = "keepalive_lab_freeze"
REPORT_KEY = "keepalive_lab_connections"
HOST_KEY = "keepalive_lab_host"  # with each report: the worker's host (host_identity)
STOP_TIMEOUT_S = 10.0


def host_identity() -> dict[str, Any]:
    """This process's host: its hostname and network namespace (two namespaces are two hosts)."""
    return {"hostname": socket.gethostname(), "netns": namespace_of(), "label": host_label()}


_IDENTITY: dict[str, Any] = {}


def _identity() -> dict[str, Any]:
    _IDENTITY.update(host_identity())
    return _IDENTITY


class WorkerLink:
    """One Locust process's side of the messages: a master, a worker, or neither (local runner)."""

    def __init__(
        self,
        runner: Any,
        on_users_done: Callable[[int], None],
        on_run: Callable[[str | None], None],
        on_refused: Callable[[str], None] = lambda reason: None,
        on_samples: Callable[[dict[str, Any]], None] = lambda data: None,
        on_freeze: Callable[[], None] = lambda: None,
    ) -> None:
        self.runner = runner
        self.on_run, self.on_refused, self.on_freeze = on_run, on_refused, on_freeze
        self.host_sidecar: HostSidecar | None = None  # a worker that samples its host for the master
        self.user_counts: dict[str, int] = {}  # worker -> its users at its last report
        self.errors_by_worker: dict[str, dict[str, int]] = {}  # worker -> Locust error key -> occurrences
        self.counts_by_worker: dict[str, ClientConnections] = {}
        self.flushed: set[str] = set()  # workers that answered the last MSG_FLUSH
        self.started: list[str] = []  # the workers the current test started with
        self.last_report: dict[str, tuple[float, int]] = {}  # worker -> (time, requests) of its last report
        self.hosts: dict[str, dict[str, Any]] = {}  # worker -> its host_identity()
        if isinstance(runner, MasterRunner):
            runner.register_message(MSG_USER_DONE, lambda msg, **_: on_users_done(int(msg.data["count"])))
            runner.register_message(MSG_FLUSHED, lambda msg, **_: self.flushed.add(msg.node_id))
            runner.register_message(MSG_REFUSE, lambda msg, **_: on_refused(str(msg.data["reason"])))
            runner.register_message(MSG_SAMPLES, lambda msg, **_: on_samples(msg.data))
        elif isinstance(runner, WorkerRunner):
            runner.register_message(MSG_FLUSH, self._flush)
            runner.register_message(MSG_RUN, lambda msg, **_: self._run_announced(msg.data))
            runner.register_message(MSG_FREEZE, lambda *_, **__: on_freeze())

    def announce_run(self, token: str | None, loopback_target: str | None = None,
                     sidecar: dict[str, Any] | None = None) -> None:  # fmt: skip
        """Master: tell every worker the name its clients report under (before the users spawn).

        ``loopback_target``: the URL of an embedded target that listens on loopback, which only
        workers on this host can reach. ``sidecar``: how to sample a host (``port``,
        ``interval_s``, ``family``), None when the run has no sidecar.
        """
        if self.is_master:
            self.started = locust_compat.worker_ids(self.runner)
            data = {"token": token, "host": host_identity(), "loopback_target": loopback_target, "sidecar": sidecar}
            for worker in self.started:
                self.runner.send_message(MSG_RUN, data, client_id=worker)

    def _run_announced(self, data: dict[str, Any]) -> None:
        self.stop_host_sidecar()  # an earlier test's, if its end never reached this worker
        token = data.get("token")
        self.on_run(token)
        target, master = data.get("loopback_target"), data.get("host") or {}
        here = host_identity()
        if token and data.get("sidecar") and (claimed := claim(token)) is not None:
            try:
                self.host_sidecar = HostSidecar(token, data["sidecar"], claimed, self._send_samples,
                                                self.runner.client_id)  # fmt: skip
            except OSError as e:
                claimed.close()
                self.runner.send_message(MSG_SAMPLES, {"token": token, "host": here["label"], "sidecar": {
                    "status": "failed", "error": f"cannot start the sidecar: {e}"}})  # fmt: skip
        if target and master and (here["hostname"], here["netns"]) != (master.get("hostname"), master.get("netns")):
            where = f"host {here['label']}" + (" (another network namespace)" if
                                               here["hostname"] == master.get("hostname") else "")  # fmt: skip
            master_host = master.get("label") or master.get("hostname")
            reason = (
                f"a worker on {where} cannot reach the embedded target at {target}: it listens on the loopback "
                f"of the master's host ({master_host}); give --target-bind an address of that host the "
                "workers reach, or --host a server they all reach"
            )
            self.on_refused(reason)  # this worker's users make no request
            self.runner.send_message(MSG_REFUSE, {"reason": reason})

    @property
    def is_worker(self) -> bool:
        return isinstance(self.runner, WorkerRunner)

    @property
    def is_master(self) -> bool:
        return isinstance(self.runner, MasterRunner)

    def _send_samples(self, data: dict[str, Any]) -> None:
        self.runner.send_message(MSG_SAMPLES, data)

    def stop_host_sidecar(self) -> None:
        """A worker: stop its host's sidecar (the last rows and its state go to the master)."""
        car, self.host_sidecar = self.host_sidecar, None
        if car is not None:
            car.stop()

    def freeze(self) -> None:
        """Master: a worker was lost; the others start no more budgeted users than they have."""
        for worker in locust_compat.worker_ids(self.runner):
            self.runner.send_message(MSG_FREEZE, {}, client_id=worker)

    def _flush(self, *_: Any, **__: Any) -> None:  # Locust passes the message by position or as msg=
        self.stop_host_sidecar()  # its last sample is taken now that the users have stopped
        locust_compat.send_stats_now(self.runner)  # the stats message carries this worker's counts
        self.runner.send_message(MSG_FLUSHED, {})

    def user_done(self) -> None:
        """A worker's user spent its budget: tell the master."""
        self.runner.send_message(MSG_USER_DONE, {"count": 1})

    @staticmethod
    def add_counts(data: dict[str, Any], counts: ConnectionCounts) -> None:
        """``report_to_master``: this worker's counts go with its stats report."""
        data[REPORT_KEY] = counts.snapshot().to_dict()
        data[HOST_KEY] = _IDENTITY or _identity()

    def take_counts(self, client_id: str, data: dict[str, Any]) -> None:
        """``worker_report``: keep the worker's latest counts."""
        if HOST_KEY in data:
            self.hosts[client_id] = data[HOST_KEY]
        if "user_count" in data:
            self.user_counts[client_id] = int(data["user_count"] or 0)
        errors = self.errors_by_worker.setdefault(client_id, {})
        for key, error in (data.get("errors") or {}).items():  # deltas since its last report
            errors[key] = errors.get(key, 0) + int(error.get("occurrences", 0))
        if REPORT_KEY in data:
            self.counts_by_worker[client_id] = ClientConnections.from_dict(data[REPORT_KEY], f"worker {client_id}")
            requests = int((data.get("stats_total") or {}).get("num_requests", 0))
            before = self.last_report.get(client_id, (0.0, 0))[1]
            self.last_report[client_id] = (time.time(), before + requests)  # stats reports carry deltas

    def host_of(self, worker: str) -> str:
        """A worker's host label (as in sockets.csv), or its hostname from its id before it has reported."""
        return (self.hosts.get(worker) or {}).get("label") or worker.rsplit("_", 1)[0]

    def errors_by_host(self) -> dict[str, dict[str, int]]:
        """Locust error key -> host -> occurrences, summed over each host's workers."""
        out: dict[str, dict[str, int]] = {}
        for worker, errors in self.errors_by_worker.items():
            host = self.host_of(worker)
            for key, n in errors.items():
                out.setdefault(key, {})[host] = out.setdefault(key, {}).get(host, 0) + n
        return out

    def reset(self) -> None:
        self.counts_by_worker.clear()
        self.errors_by_worker.clear()
        self.last_report.clear()
        self.started = []

    def lost_workers(self) -> list[dict[str, Any]]:
        """The workers the test started with that did not answer the final flush (call after collect)."""
        lost = []
        for worker in self.started:
            if worker in self.flushed:
                continue
            ts, requests = self.last_report.get(worker, (None, 0))
            counts = self.counts_by_worker.get(worker)
            lost.append({"id": worker, "host": worker.rsplit("_", 1)[0], "last_report_ts": ts,
                         "requests": requests, "opened": counts.opened if counts else 0})  # fmt: skip
        return lost

    def collect(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Make the workers stop their users and send their final stats (and connection counts).

        Locust's quit path (``-t``, Ctrl-C, the end of the request budget) fires test_stop on the
        master before the workers have been told anything; the run folder needs their last report.
        """
        runner = self.runner
        deadline = time.monotonic() + timeout_s / 2
        if runner.user_count > 0:
            locust_compat.stop_worker_users(runner)
            while runner.user_count > 0 and time.monotonic() < deadline:
                gevent.sleep(0.05)
        # Workers report stats on a timer; ask each for its report now, and wait for the answers
        # (a worker that does not answer within its own time is lost: see lost_workers).
        workers = locust_compat.worker_ids(runner)
        self.flushed.clear()
        for worker in workers:
            runner.send_message(MSG_FLUSH, {}, client_id=worker)
        deadline = time.monotonic() + timeout_s / 2
        while not set(workers) <= self.flushed and time.monotonic() < deadline:
            gevent.sleep(0.05)
