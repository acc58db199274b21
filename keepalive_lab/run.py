"""One run folder's life, from the test's start to its status.

:class:`Run` opens ``RUN_DIR/<UTC timestamp>-<scenario>/`` when a test starts: it writes
``run.json`` with status ``running``, starts Locust's stats history and the socket sidecar, and
watches for a dead server or a crashed greenlet. :meth:`Run.finish` writes every other file
(see :mod:`keepalive_lab.schema`) and the final ``run.json`` with the run's status.
"""

from __future__ import annotations

import ipaddress
import logging
import platform
import sys
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import gevent

from keepalive_lab import kernel, locust_compat
from keepalive_lab.config import ScenarioConfig
from keepalive_lab.schema import (
    LOCUST_HTML,
    SOCKETS_CSV,
    STATS_HISTORY_CSV,
    ClientConnections,
    KernelFacts,
    LocustOptions,
    RunRecord,
    SidecarState,
    Status,
    TargetCounts,
    write_atomic,
)
from keepalive_lab.servers import Servers
from keepalive_lab.sidecar import SidecarProcess

log = logging.getLogger("keepalive_lab")
WATCHDOG_INTERVAL_S = 0.5
SIDECAR_START_TIMEOUT_S = 10.0
GREENLET_CRASHED = "an unhandled exception in a Locust greenlet stopped the test (see the log)"
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
    ) -> None:
        self.environment = environment
        self.servers = servers
        self.end_test = end_test
        self.connection_totals = connection_totals
        first = next(iter(configs.values()))
        self.config = first
        self.started = utc_now()
        self.started_mono = time.monotonic()
        self.folder = new_run_dir(first.run_dir, first.scenario, self.started)
        self.interrupted = False
        self.failed_reason = ""
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
        if not first.no_sidecar:
            self._start_sidecar(first)
        self._watchdog = gevent.spawn(self._watch)

    def _start_sidecar(self, cfg: ScenarioConfig) -> None:
        host = self.environment.host
        port = target_port(host)
        if port is None:
            self.record.sidecar = SidecarState(status="off", error=f"no port in host {host!r}")
            return
        self.sidecar = SidecarProcess(port, self.folder / SOCKETS_CSV, cfg.sample_interval_s, family=ip_family(host))
        # The first sample must precede the load: test_start blocks spawning while it waits.
        if not self.sidecar.wait_first_row(SIDECAR_START_TIMEOUT_S, sleep=gevent.sleep):
            log.warning("the socket sidecar took no sample within %s s; the test goes on", SIDECAR_START_TIMEOUT_S)
        self.record.sidecar = SidecarState(status="running", interval_s=cfg.sample_interval_s, port=port)
        self.record.write(self.folder)

    def _watch(self) -> None:
        """End the test as ``failed`` when the server dies or a Locust greenlet crashes."""
        while True:
            gevent.sleep(WATCHDOG_INTERVAL_S)
            if self.sidecar is not None and not self.sidecar_failed and not self.sidecar.alive():
                # The test goes on without it; finish() records why it stopped.
                self.sidecar_failed = True
                log.warning("the socket sidecar stopped during the test; the test goes on without it")
            death = self.servers.death()
            if death is not None:
                self.failed_reason = death
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
        self._write_locust_files()
        stats = env.stats.total
        status, reason = Status.COMPLETED, ""
        if self.failed_reason:
            status, reason = Status.FAILED, self.failed_reason
        elif env.runner is not None and env.runner.exceptions:
            status, reason = Status.FAILED, f"{len(env.runner.exceptions)} unhandled exception(s) in user code"
        elif self.interrupted:
            status, reason = Status.INTERRUPTED, "stopped by Ctrl-C or SIGTERM before the test ended"
        r = self.record
        r.end = iso(utc_now())
        r.duration_s = round(time.monotonic() - self.started_mono, 3)
        r.status, r.status_reason = status, reason
        r.client_connections = self.connection_totals()
        r.requests, r.failures = stats.num_requests, stats.num_failures
        r.write(self.folder)
        if status is Status.FAILED and env.process_exit_code is None:
            env.process_exit_code = 1
        log.info("run folder %s: status %s", self.folder, status)
        print(self.summary_line(), file=sys.stderr, flush=True)

    def summary_line(self) -> str:
        r = self.record
        parts = [f"keepalive-lab: {r.requests} requests"]
        if r.target_connections_accepted is not None:
            parts.append(f"{r.target_connections_accepted} connections accepted by the target")
        if r.client_connections is not None:
            parts.append(f"{r.client_connections.opened} opened by the client")
        if r.sidecar.status == "failed":
            parts.append(f"sidecar failed ({r.sidecar.error})")
        return ", ".join(parts) + f"; status {r.status}; run folder {self.folder}"

    def _write_target_json(self) -> None:
        counts = self.servers.settled_target_counts(sleep=gevent.sleep)
        if counts is None:
            return
        delta: TargetCounts = counts.minus(self.target_baseline)
        assert self.servers.target is not None
        delta.mode, delta.url = str(self.servers.target.mode), self.servers.target.url
        delta.write(self.folder)
        self.record.target_connections_accepted = delta.connections_accepted

    def _write_locust_files(self) -> None:
        self.history.finish(self.folder / STATS_HISTORY_CSV)
        for name, text in locust_compat.stats_csv_files(self.environment).items():
            write_atomic(self.folder / name, text)
        write_atomic(self.folder / LOCUST_HTML, locust_compat.html_report(self.environment))
