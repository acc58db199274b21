"""One run folder's life, from the test's start to its status.

:class:`Run` opens ``RUN_DIR/<UTC timestamp>-<scenario>/`` when a test starts: it writes
``run.json`` with status ``running``, starts Locust's stats history and the socket sidecar, and
watches for a dead server or a crashed greenlet. :meth:`Run.finish` writes every other file
(see :mod:`keepalive_lab.schema`) and the final ``run.json`` with the run's status.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import platform
import shutil
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import gevent

from keepalive_lab import kernel, locust_compat
from keepalive_lab.config import ScenarioConfig
from keepalive_lab.hostsidecar import claim
from keepalive_lab.netns import host_label
from keepalive_lab.schema import (
    CONNECTIONS_CSV,
    LOCUST_HTML,
    REPORT_HTML,
    SOCKETS_CSV,
    STATS_HISTORY_CSV,
    ClientConnections,
    KernelFacts,
    LocustOptions,
    RunRecord,
    SidecarState,
    Status,
    TargetCounts,
    by_name_csv,
    by_name_rows,
    per_host,
    write_atomic,
)
from keepalive_lab.servers import Servers
from keepalive_lab.sidecar import SidecarProcess

log = logging.getLogger("keepalive_lab")
WATCHDOG_INTERVAL_S = 0.5
DISK_MARGIN_BYTES = 256 * 1024  # what the end of a run needs at least: run.json, the CSV files, the report
SIDECAR_START_TIMEOUT_S = 10.0
GREENLET_CRASHED = "an unhandled exception in a Locust greenlet stopped the test (see the log)"
# Connect errors that say nothing serves the host's address, or it cannot be reached, by errno.
UNREACHABLE_ERRNOS = {
    str(errno.ECONNREFUSED): "connection refused",
    str(errno.EHOSTUNREACH): "no route to host",
    str(errno.ENETUNREACH): "network unreachable",
    str(errno.ETIMEDOUT): "timed out",
}
# Exit codes a shell gives a process ended by these signals: a CI sees the run was cut short.
SIGNAL_EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


@dataclass
class Ending:
    """Why a test ends, as the process that writes its folder learns it."""

    budget_spent: bool = False  # every user made its --requests-per-user requests
    stop_requested: bool = False  # the web UI's STOP button
    signal: str | None = None  # Ctrl-C (SIGINT) or SIGTERM


_VERSIONED = ("locust", "requests", "urllib3", "gevent", "geventhttpclient", "psutil", "keepalive-lab")


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def new_run_dir(run_dir: str | Path, scenario: str, started: datetime) -> Path:
    """Create ``run_dir/<UTC timestamp>-<scenario>/``; a suffix keeps two runs in one second apart."""
    root = Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    stem = f"{started.strftime('%Y%m%dT%H%M%SZ')}-{scenario}"
    for n in range(1, 1000):
        path = root / (stem if n == 1 else f"{stem}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a run folder under {root}")


def target_port(url: str | None) -> int | None:
    """The TCP port of a host URL (80/443 by scheme when absent); None when there is none."""
    if not url:
        return None
    parsed = urllib.parse.urlsplit(url)
    try:
        return parsed.port or {"http": 80, "https": 443}.get(parsed.scheme)
    except ValueError:
        return None


def ip_family(url: str | None) -> str:
    """``4`` or ``6`` for a host URL with an IP literal, else ``both`` (a name may resolve to either)."""
    try:
        return str(ipaddress.ip_address(urllib.parse.urlsplit(url or "").hostname or "").version)
    except ValueError:
        return "both"


def verdict_of(folder: Path) -> str | None:
    """The report's verdict for one finished run folder (None when it cannot be made)."""
    try:
        from analysis.compare import verdicts
        from analysis.load import load_runs
        from analysis.metrics import summarize

        loaded = load_runs([folder])
        summary = summarize(loaded.runs, loaded.stats, loaded.samples, loaded.failures)
        row = verdicts(summary, loaded.runs).iloc[0]
        text, cost = str(row["verdict"]), str(row["cost"])
    except Exception as e:  # the folder is written; a verdict that fails must not fail the run
        log.warning("no verdict for %s: %s", folder, e)
        return None
    text = text.split("] ", 1)[1] if text.startswith("[") else text  # the status follows apart
    return f"{text}; {cost}" if cost else text


def server_down(conns: ClientConnections, host: str | None) -> str | None:
    """The run's reason when its server is down from the start: connects failed, each for want of a
    server at the address, and none succeeded; else None."""
    codes = conns.connect_errors_by_errno
    if conns.opened or not conns.connect_errors or not codes or not set(codes) <= set(UNREACHABLE_ERRNOS):
        return None
    where = urllib.parse.urlsplit(host or "").netloc or "the server"
    how = ", ".join(UNREACHABLE_ERRNOS[code] for code in sorted(codes))
    return (f"server unreachable: no connection to {where} opened ({how}); start the server before the test, or "
            "give --host one that is up")  # fmt: skip


def _lost(worker: dict[str, Any]) -> str:
    """A lost worker in words: who, where, and what of its work the run still counts."""
    when = worker.get("last_report_ts")
    last = (
        f"its last report, at {datetime.fromtimestamp(when, UTC).strftime('%H:%M:%S')} UTC, counted "
        f"{worker.get('requests', 0)} requests and {worker.get('opened', 0)} connections opened; what it did "
        "after is missing"
        if when else "it never reported: its requests and connections are missing"
    )  # fmt: skip
    return f"worker {worker['id']} on host {worker['host']} stopped answering the master: {last}"


class Run:
    """One test's run folder, open from test_start to test_stop (in the master or local process).

    ``end_test`` ends the test early (the watchdog calls it); ``connection_totals`` gives the
    client-side counts of every process when the test ends.
    """

    def __init__(
        self,
        environment: Any,
        configs: dict[type, ScenarioConfig],
        servers: Servers,
        end_test: Callable[[], None],
        connection_totals: Callable[[], ClientConnections],
        ending: Ending,
    ) -> None:
        self.environment = environment
        self.servers = servers
        self.end_test = end_test
        self.connection_totals = connection_totals
        self.ending = ending
        first = next(iter(configs.values()))
        self.config = first
        self.started = utc_now()
        self.started_mono = time.monotonic()
        self.folder = new_run_dir(first.run_dir, first.scenario, self.started)
        # The name this run's clients report their connections under (keepalive_lab.feed).
        self.token = f"{self.folder.name}-{os.getpid()}"
        self.failed_reason = ""
        self.refused = False  # a worker could not reach the embedded target: ended before any load
        self.target_baseline = servers.target_counts()
        opts = environment.parsed_options
        self.record = RunRecord(
            scenario=first.scenario,
            locustfile=getattr(opts, "locustfile", None),
            user_class=first.user_class,
            user_classes=[c.user_class for c in configs.values()],
            settings=first.settings(),
            settings_by_user_class=(
                {c.user_class: c.settings() for c in configs.values()} if len(configs) > 1 else None
            ),
            locust_options=LocustOptions(
                num_users=getattr(opts, "num_users", None),
                spawn_rate=getattr(opts, "spawn_rate", None),
                run_time=getattr(opts, "run_time", None),
                headless=bool(getattr(opts, "headless", False)),
                processes=getattr(opts, "processes", None),
                command=list(sys.argv),
            ),
            host=environment.host,
            target=servers.info(environment.host),
            kernel=KernelFacts(**kernel.facts(), baseline=kernel.baseline()),
            versions=versions(),
            start=iso(self.started),
            status=Status.RUNNING,
        )
        self.record.write(self.folder)
        self.history = locust_compat.StatsHistory(environment, self.folder)
        self.sidecar: SidecarProcess | None = None
        self.sidecar_failed = False
        self.sidecar_stopped_at: str | None = None
        self.sidecar_spec: dict[str, Any] | None = None  # how the workers' hosts are sampled alike
        self.claimed = None  # this host's claim on the run's sampling (keepalive_lab.hostsidecar)
        self.host_facts: dict[str, dict[str, Any]] = {}  # other hosts: kernel facts and sidecar state
        self._samples_fd: int | None = None
        # With workers: Locust error key -> host -> occurrences (failures.csv's Host column).
        self.errors_by_host: dict[str, dict[str, int]] | None = None
        if not first.no_sidecar:
            self._start_sidecar(first)
        self._watchdog = gevent.spawn(self._watch)

    def _start_sidecar(self, cfg: ScenarioConfig) -> None:
        host = self.environment.host
        port = target_port(host)
        if port is None:
            self.record.sidecar = SidecarState(status="off", error=f"no port in host {host!r}")
            return
        self.claimed = claim(self.token)  # workers on this host then leave the sampling to this process
        self.sidecar = SidecarProcess(
            port, self.folder / SOCKETS_CSV, cfg.sample_interval_s, family=ip_family(host), token=self.token
        )
        self.sidecar_spec = {"port": port, "interval_s": cfg.sample_interval_s, "family": ip_family(host)}
        # The first sample must precede the load: test_start blocks spawning while it waits.
        if not self.sidecar.wait_first_row(SIDECAR_START_TIMEOUT_S, sleep=gevent.sleep):
            log.warning("the socket sidecar took no sample within %s s; the test goes on", SIDECAR_START_TIMEOUT_S)
        self.record.sidecar = SidecarState(status="running", interval_s=cfg.sample_interval_s, port=port)
        self.record.write(self.folder)

    def add_host_samples(self, data: dict[str, Any]) -> None:
        """A worker's host sidecar sent rows (``sockets.csv`` lines), its host's facts, or its final state."""
        if data.get("token") != self.token:
            return  # an earlier test's, arriving late
        host = str(data.get("host"))
        entry = self.host_facts.setdefault(host, {})
        if isinstance(data.get("facts"), dict):
            entry.update(data["facts"])
        if isinstance(data.get("sidecar"), dict):
            entry["sidecar"] = data["sidecar"]
        text = data.get("text")
        if text and self.sidecar is not None:
            if self._samples_fd is None:
                self._samples_fd = os.open(self.folder / SOCKETS_CSV, os.O_WRONLY | os.O_APPEND)
            os.write(self._samples_fd, str(text).encode())  # whole lines, appended at once

    def _hosts(self) -> list[dict[str, Any]]:
        """run.json's ``hosts``: each worker host's counts, kernel facts and sidecar, and this host's."""
        if not self.record.workers and not self.host_facts:
            return []
        own = {host_label(): {"kernel": self.record.kernel.to_dict(), "sidecar": self.record.sidecar.to_dict(),
                              "writes_run_folder": True}}  # fmt: skip
        return per_host(self.record.workers, {**self.host_facts, **own})

    def _watch(self) -> None:
        """End the test as ``failed`` when the server dies or a Locust greenlet crashes."""
        while True:
            gevent.sleep(WATCHDOG_INTERVAL_S)
            if self.sidecar is not None and not self.sidecar_failed and not self.sidecar.alive():
                # The test goes on without it; finish() records why it stopped, and when.
                self.sidecar_failed = True
                self.sidecar_stopped_at = iso(utc_now())
                log.warning("the socket sidecar stopped during the test; the test goes on without it")
            death = self.servers.death()
            conns = self.connection_totals()
            waited = conns.pool_timeout_users
            full = self._disk_nearly_full()
            down = server_down(conns, self.environment.host)
            if death is not None:
                self.failed_reason = death
            elif down is not None:
                self.failed_reason = down
            elif full is not None:
                self.failed_reason = full
            elif waited:
                self.failed_reason = (
                    f"{waited} user(s) waited more than {self.config.pool_wait_s:g} s for a connection "
                    "(--pool-wait): every connection of the pool was held"
                )
            elif locust_compat.greenlet_crashed():
                self.failed_reason = GREENLET_CRASHED
            else:
                continue
            log.error("%s; ending the test", self.failed_reason)
            self.end_test()
            return

    def finish(self) -> None:
        if gevent.getcurrent() is not self._watchdog:
            self._watchdog.kill(block=False)
        env = self.environment
        try:
            # First: it waits until the target has seen every close, so that the sidecar's last
            # sample shows the closed connections settled in TIME_WAIT.
            self._write_target_json()
        except Exception as e:  # the target died: the run still gets its folder
            log.error("embedded target unreachable at the end of the test: %s", e)
            self.failed_reason = self.failed_reason or f"embedded target unreachable at the end: {e}"
        if self.sidecar is not None:
            self.record.sidecar = self.sidecar.stop()
            if self.sidecar_stopped_at and self.record.sidecar.status == "failed":
                self.record.sidecar.stopped_at = self.sidecar_stopped_at
        if self.claimed is not None:
            self.claimed.close()
        if self._samples_fd is not None:
            os.close(self._samples_fd)
            self._samples_fd = None
        self.record.hosts = self._hosts()
        self._writing("Locust's files", self._write_locust_files)
        stats = env.stats.total
        r = self.record
        r.end = iso(utc_now())
        r.duration_s = round(time.monotonic() - self.started_mono, 3)
        r.client_connections = self.connection_totals()
        self._writing("connections.csv", lambda: self._write_connections_csv(r.client_connections))
        r.requests, r.failures = stats.num_requests, stats.num_failures
        r.last_request_ts = stats.last_request_timestamp
        r.status, r.status_reason = self._status(r.client_connections)
        if not self._writing("run.json", lambda: r.write(self.folder)):
            r.status = Status.FAILED  # the folder keeps its run.json of the start (status running), whole
        if env.web_ui is not None:  # the web UI offers the run's report for download
            self._writing("the report", self._write_report)
        code = {Status.FAILED: 1, Status.STUCK: 1, Status.DEGRADED: 1,
                Status.INTERRUPTED: SIGNAL_EXIT_CODES.get(self.ending.signal, 1)}  # fmt: skip
        if self.refused:
            env.process_exit_code = 2  # a setting that cannot work, found before any load
        elif r.status in code and env.process_exit_code is None:
            env.process_exit_code = code[r.status]
        log.info("run folder %s: status %s", self.folder, r.status)
        print(self.summary_line(), file=sys.stderr, flush=True)

    def _writing(self, what: str, write: Callable[[], object]) -> bool:
        """Write part of the folder; a disk that is full or gone fails the run with the reason, not Locust."""
        try:
            write()
            return True
        except OSError as e:
            log.error("cannot write %s into %s: %s", what, self.folder, e.strerror or e)
            self.failed_reason = self.failed_reason or f"cannot write {what} into the run folder: {e.strerror or e}"
            return False

    def _disk_nearly_full(self) -> str | None:
        """Why the load must stop so that the folder can still be finished: its disk is nearly full."""
        try:
            free = shutil.disk_usage(self.folder).free
        except OSError as e:
            return f"the run folder cannot be read any more ({e.strerror or e})"
        if free >= DISK_MARGIN_BYTES:
            return None
        return (f"the run folder's disk is nearly full ({free // 1024} KiB left, under {DISK_MARGIN_BYTES // 1024} "
                "KiB): the load stopped so that the folder can be finished; free some space or give --run-dir "
                "another disk")  # fmt: skip

    def _status(self, conns: ClientConnections) -> tuple[Status, str]:
        """The run's status and its reason: ``completed`` only when it ran as asked."""
        env = self.environment
        stats = env.stats.total
        if self.failed_reason:
            return Status.FAILED, self.failed_reason
        if env.runner is not None and env.runner.exceptions:
            return Status.FAILED, f"{len(env.runner.exceptions)} unhandled exception(s) in user code"
        if (down := server_down(conns, env.host)) is not None:
            return Status.FAILED, down
        if stats.num_requests and stats.num_failures == stats.num_requests:
            return Status.FAILED, f"every request failed: {self._main_failure()}"
        if self.ending.signal:
            return Status.INTERRUPTED, f"stopped by {self.ending.signal} before the test ended"
        if self.record.lost_workers:
            return Status.DEGRADED, "; ".join(_lost(w) for w in self.record.lost_workers)
        if conns.pool_waits_cut:
            return Status.STUCK, (
                f"{conns.pool_waits_cut} user(s) were still waiting for a connection when the test ended: "
                "every connection of the pool was held"
            )
        if self.ending.stop_requested and not self.ending.budget_spent:
            return Status.STOPPED, "stopped from the web UI before the test ended"
        return Status.COMPLETED, ""

    def _main_failure(self) -> str:
        """The most common failure, in words (the server refused every connection, ...)."""
        errors: Counter[str] = Counter()
        for entry in self.environment.stats.errors.values():
            errors[str(entry.error)] += entry.occurrences
        if not errors:
            return "no error recorded"
        text, _ = errors.most_common(1)[0]
        if "ConnectionRefused" in text or "Connection refused" in text or "Errno 111" in text:
            where = urllib.parse.urlsplit(self.environment.host or "").netloc
            return f"server unreachable: the server at {where} refused the connections"
        return text[:200]

    def summary_line(self) -> str:
        """The run in one line, with the report's own verdict (the same computation, on this folder)."""
        r = self.record
        text = verdict_of(self.folder) or f"{r.requests} requests"
        parts = [f"keepalive-lab: {text}"]
        if r.sidecar.status == "failed":
            parts.append(f"sidecar failed ({r.sidecar.error})")
        status = f"status {r.status}" + (f" ({r.status_reason})" if r.status_reason else "")
        return "; ".join([*parts, status, f"run folder {self.folder}"])

    def _write_report(self) -> None:
        try:
            from analysis.__main__ import single_file_report

            page = single_file_report(self.folder)
        except Exception as e:  # the run folder is complete without it
            log.warning("no report for %s: %s", self.folder, e)
            return
        if page is not None:
            write_atomic(self.folder / REPORT_HTML, page)

    def _write_target_json(self) -> None:
        counts = self.servers.settled_target_counts(sleep=gevent.sleep)
        if counts is None:
            return
        delta: TargetCounts = counts.minus(self.target_baseline)
        assert self.servers.target is not None
        delta.mode, delta.url = str(self.servers.target.mode), self.servers.target.url
        delta.write(self.folder)
        self.record.target_connections_accepted = delta.connections_accepted

    def _write_connections_csv(self, conns: ClientConnections) -> None:
        """connections.csv, and beside Locust's own CSV files when ``--csv PREFIX`` was given."""
        text = by_name_csv(by_name_rows(conns))
        write_atomic(self.folder / CONNECTIONS_CSV, text)
        prefix = getattr(self.environment.parsed_options, "csv_prefix", None)
        if prefix:
            try:
                write_atomic(f"{prefix}_connections.csv", text)
            except OSError as e:
                log.warning("cannot write %s_connections.csv: %s", prefix, e)

    def _write_locust_files(self) -> None:
        self.history.finish(self.folder / STATS_HISTORY_CSV)
        by_host, here, errors = self.errors_by_host, host_label(), self.environment.stats.errors

        def host_of(key: str) -> dict[str, int]:
            if by_host is None:  # users ran in this process
                return {here: errors[key].occurrences}
            return by_host.get(key) or {here: errors[key].occurrences}

        for name, text in locust_compat.stats_csv_files(self.environment, host_of).items():
            write_atomic(self.folder / name, text)
        write_atomic(self.folder / LOCUST_HTML, locust_compat.html_report(self.environment))
