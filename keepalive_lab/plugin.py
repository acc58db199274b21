"""The Locust plugin: options, the embedded target, per-test run folders and connection counts.

Importing :mod:`keepalive_lab.users` (every locustfile does) registers these listeners:

``init_command_line_parser``
    adds every option of :data:`keepalive_lab.config.OPTIONS` (also shown in the web UI); the
    defaults shown are the locustfile's user-class attributes.
``init``
    resolves and validates the settings once, before any load (a bad value: one line, exit 2);
    starts the embedded target when no ``--host`` is given.
``test_start`` / ``test_stop``
    open and finish one run folder per test (see :mod:`keepalive_lab.runfolder`).
``quitting`` / ``quit``
    mark a test cut short by Ctrl-C or SIGTERM as ``interrupted``; stop the target or peer.

With ``--processes``/``--worker``, users run in workers: each worker counts its own
connections and reports them to the master with its stats; the master writes the run folder.
"""

from __future__ import annotations

from locust import events
from locust import log as locust_log
from locust.rpc import Message
from locust.runners import STATE_STOPPED, MasterRunner, WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV, StatsCSVFileWriter

import argparse
import ipaddress
import logging
import os
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import gevent
import gevent.event

from keepalive_lab import kernel, runfolder
from keepalive_lab.cli import one_line_errors
from keepalive_lab.config import OPTIONS, ConfigError, ScenarioConfig, default_for, resolve
from keepalive_lab.files import write_atomic, write_json_atomic
from keepalive_lab.peers import PEER_NOTES, PeerProcess
from keepalive_lab.pools import ConnectionCounts, close_pool, fasthttp_client_pool, requests_pool_manager
from keepalive_lab.sidecar import SidecarProcess
from keepalive_lab.target import TargetProcess

log = logging.getLogger("keepalive_lab")
MSG_USER_DONE = "keepalive_lab_user_done"
MSG_FLUSH = "keepalive_lab_flush"  # master -> worker: send your stats now
MSG_FLUSHED = "keepalive_lab_flushed"  # worker -> master: sent
REPORT_KEY = "keepalive_lab_connections"
WATCHDOG_INTERVAL_S = 0.5
SOCKETS_CSV = "sockets.csv"
SIDECAR_START_TIMEOUT_S = 10.0
WORKER_STOP_TIMEOUT_S = 10.0
_registered_user_classes: list[type] = []
# The Lab of each Environment in this process (one, except in tests that build several).
_LABS: list[Lab] = []


def register_user_class(cls: type) -> None:
    """Called by ``LabUser.__init_subclass__``: the concrete scenario classes a locustfile defines."""
    if not cls.__dict__.get("abstract", False):
        _registered_user_classes.append(cls)


def _one_line_error(message: str) -> None:
    sys.stderr.write(f"locust: error: {message}\n")
    sys.stderr.flush()
    sys.exit(2)


def _argtype(option: Any) -> Any:
    def parse(text: str) -> str:
        try:
            return option.show(option.convert(text))
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e).split(" ", 1)[1]) from None

    parse.__name__ = option.attr
    return parse


@events.init_command_line_parser.add_listener
def on_init_command_line_parser(parser: Any) -> None:
    """Add the suite's options; bad values exit 2 with one line, before any load starts."""
    shown = _registered_user_classes[0] if len(_registered_user_classes) == 1 else None
    for opt in OPTIONS:
        if opt.switch:
            parser.add_argument(
                opt.flag,
                dest=opt.dest,
                action="store_true",
                default=False,
                env_var=opt.env_var,
                help=f"{opt.help} (env {opt.env_var})",
                include_in_web_ui=True,
            )
            continue
        default = default_for(opt, shown)
        parser.add_argument(
            opt.flag,
            dest=opt.dest,
            type=_argtype(opt),
            choices=opt.choices,
            default=default,
            env_var=opt.env_var,
            metavar=None if opt.choices else opt.attr.upper().removesuffix("_S"),
            help=f"{opt.help} (default: {default if default is not None else 'the user class attribute'}; "
            f"env {opt.env_var})",
            include_in_web_ui=True,
        )

    # argparse prints its usage block before an error; the suite's contract is one line.
    one_line_errors(parser)


class Run:
    """One test's run folder, open from test_start to test_stop (master or local runner only)."""

    def __init__(self, lab: Lab, configs: dict[type, ScenarioConfig]) -> None:
        self.lab = lab
        self.configs = configs
        first = next(iter(configs.values()))
        self.config = first
        self.started = runfolder.utc_now()
        self.started_mono = time.monotonic()
        self.folder = runfolder.new_run_dir(first.run_dir, first.scenario, self.started)
        self.interrupted = False
        self.failed_reason = ""
        self.target_baseline = lab.target.stats() if lab.target else None
        env = lab.environment
        opts = env.parsed_options
        self.record: dict[str, Any] = {
            "scenario": first.scenario,
            "locustfile": getattr(opts, "locustfile", None),
            "user_class": first.user_class,
            "user_classes": [c.user_class for c in configs.values()],
            "settings": first.settings(),
            "locust_options": {
                "num_users": getattr(opts, "num_users", None),
                "spawn_rate": getattr(opts, "spawn_rate", None),
                "run_time": getattr(opts, "run_time", None),
                "headless": bool(getattr(opts, "headless", False)),
                "processes": getattr(opts, "processes", None),
                "command": list(sys.argv),
            },
            "host": env.host,
            "target": self._target_info(),
            "kernel": {**kernel.facts(), "baseline": kernel.baseline()},
            "versions": runfolder.versions(),
            "start": runfolder.iso(self.started),
            "end": None,
            "duration_s": None,
            "status": "running",
            "status_reason": "",
            "client_connections": None,
            "requests": None,
            "failures": None,
            "sidecar": {"status": "off"},
        }
        if len(configs) > 1:
            self.record["settings_by_user_class"] = {c.user_class: c.settings() for c in configs.values()}
        runfolder.write_run_json(self.folder, self.record)
        # Locust's own CSV writer records stats_history.csv once a second; it writes to hidden
        # files in the run folder, and the history file is renamed into place at the end.
        self._csv_base = str(self.folder / ".locust")
        self._csv = StatsCSVFileWriter(env, PERCENTILES_TO_REPORT, self._csv_base, full_history=False)
        self._csv_greenlet = gevent.spawn(self._csv.stats_writer)
        self.sidecar: SidecarProcess | None = None
        self.sidecar_failed = False
        if not first.no_sidecar:
            self._start_sidecar(first)
        self._watchdog = gevent.spawn(self._watch)

    def _start_sidecar(self, cfg: ScenarioConfig) -> None:
        port = target_port(self.lab.environment.host)
        if port is None:
            self.record["sidecar"] = {"status": "off", "error": f"no port in host {self.lab.environment.host!r}"}
            return
        self.sidecar = SidecarProcess(
            port, self.folder / SOCKETS_CSV, cfg.sample_interval_s, family=ip_family(self.lab.environment.host)
        )
        # The first sample must precede the load: test_start blocks spawning while it waits.
        if not self.sidecar.wait_first_row(SIDECAR_START_TIMEOUT_S, sleep=gevent.sleep):
            log.warning("the socket sidecar took no sample within %s s; the test goes on", SIDECAR_START_TIMEOUT_S)
        self.record["sidecar"] = {"status": "running", "interval_s": cfg.sample_interval_s, "port": port}
        runfolder.write_run_json(self.folder, self.record)

    def _watch(self) -> None:
        """End the test as ``failed`` when the embedded target dies or a Locust greenlet crashes."""
        target = self.lab.target
        while True:
            gevent.sleep(WATCHDOG_INTERVAL_S)
            if self.sidecar is not None and not self.sidecar_failed and not self.sidecar.alive():
                # The test goes on without it; finish() records why it stopped.
                self.sidecar_failed = True
                log.warning("the socket sidecar stopped during the test; the test goes on without it")
            peer = self.lab.peer
            if target is not None and not target.alive():
                self.failed_reason = f"the embedded target died during the test (exit code {target.proc.returncode})"
            elif peer is not None and not peer.alive():
                self.failed_reason = f"the {peer.name} peer died during the test"
            elif locust_log.unhandled_greenlet_exception:
                self.failed_reason = "an unhandled exception in a Locust greenlet stopped the test (see the log)"
            else:
                continue
            log.error("%s; ending the test", self.failed_reason)
            self.lab.end_test()
            return

    def _target_info(self) -> dict[str, Any]:
        target, peer = self.lab.target, self.lab.peer
        if peer is not None and self.lab.environment.host == peer.url:
            return {"embedded": False, "peer": peer.name, "peer_note": PEER_NOTES[peer.name], "url": peer.url}
        if target is None:
            return {"embedded": False, "url": self.lab.environment.host}
        return {"embedded": True, "url": target.url, "mode": str(target.mode), **target.settings}

    def finish(self) -> None:
        if gevent.getcurrent() is not self._watchdog:
            self._watchdog.kill(block=False)
        env = self.lab.environment
        ended = runfolder.utc_now()
        try:
            # First: it waits until the target has seen every close, so that the sidecar's last
            # sample shows the closed connections settled in TIME_WAIT.
            self._write_target_json()
        except Exception as e:  # the target died: the run still gets its folder
            log.error("embedded target unreachable at the end of the test: %s", e)
            self.failed_reason = self.failed_reason or f"embedded target unreachable at the end: {e}"
        if self.sidecar is not None:
            self.record["sidecar"] = self.sidecar.stop()
        self._finish_locust_files(env)
        stats = env.stats.total
        counts = self.lab.connection_totals()
        status, reason = "completed", ""
        if self.failed_reason:
            status, reason = "failed", self.failed_reason
        elif env.runner is not None and env.runner.exceptions:
            status, reason = "failed", f"{len(env.runner.exceptions)} unhandled exception(s) in user code"
        elif self.interrupted:
            status, reason = "interrupted", "stopped by Ctrl-C or SIGTERM before the test ended"
        self.record.update(
            end=runfolder.iso(ended),
            duration_s=round(time.monotonic() - self.started_mono, 3),
            status=status,
            status_reason=reason,
            client_connections=counts,
            requests=stats.num_requests,
            failures=stats.num_failures,
        )
        runfolder.write_run_json(self.folder, self.record)
        if status == "failed" and env.process_exit_code is None:
            env.process_exit_code = 1
        log.info("run folder %s: status %s", self.folder, status)
        print(self.summary_line(), file=sys.stderr, flush=True)

    def summary_line(self) -> str:
        r = self.record
        conns = (r.get("client_connections") or {}).get("opened")
        target = r.get("target_connections_accepted")
        parts = [f"keepalive-lab: {r['requests']} requests"]
        if target is not None:
            parts.append(f"{target} connections accepted by the target")
        if conns is not None:
            parts.append(f"{conns} opened by the client")
        sidecar = r.get("sidecar") or {}
        if sidecar.get("status") == "failed":
            parts.append(f"sidecar failed ({sidecar.get('error')})")
        return ", ".join(parts) + f"; status {r['status']}; run folder {self.folder}"

    def _write_target_json(self) -> None:
        target = self.lab.target
        if target is None:
            return
        if not target.alive():
            raise RuntimeError(f"exit code {target.proc.returncode}")
        # Give the target a moment to see the client's closes (pools were just shut).
        deadline = time.monotonic() + 1.0
        stats = target.stats()
        while stats["open_connections"] > 0 and time.monotonic() < deadline:
            gevent.sleep(0.02)
            stats = target.stats()
        delta = _stats_delta(stats, self.target_baseline or {})
        delta.update(mode=str(target.mode), url=target.url)
        write_json_atomic(self.folder / runfolder.TARGET_JSON, delta)
        self.record["target_connections_accepted"] = delta["connections_accepted"]

    def _finish_locust_files(self, env: Any) -> None:
        self._csv_greenlet.kill(block=True)
        csv = self._csv
        csv._stats_history_data_rows(csv.stats_history_csv_writer, time.time())
        csv.close_files()
        os.replace(csv.stats_history_file_name(), self.folder / "stats_history.csv")
        for suffix in ("_stats.csv", "_failures.csv", "_exceptions.csv"):
            Path(self._csv_base + suffix).unlink(missing_ok=True)
        writer = StatsCSV(env, PERCENTILES_TO_REPORT)
        runfolder.write_csv(self.folder / "stats.csv", writer.requests_csv)
        runfolder.write_csv(self.folder / "failures.csv", writer.failures_csv)
        runfolder.write_csv(self.folder / "exceptions.csv", writer.exceptions_csv)
        from locust.html import get_html_report

        write_atomic(self.folder / "locust.html", get_html_report(env, show_download_link=False))


def collect_worker_reports(runner: MasterRunner, timeout_s: float = WORKER_STOP_TIMEOUT_S) -> None:
    """Make the workers stop their users and send their final stats (and connection counts).

    Locust's quit path (``-t``, Ctrl-C, the end of the request budget) fires test_stop on the
    master before the workers have been told anything; the run folder needs their last report.
    """
    deadline = time.monotonic() + timeout_s
    if runner.user_count > 0:
        for client in runner.clients.all:
            runner.server.send_to_client(Message("stop", None, client.id))
        while runner.user_count > 0 and time.monotonic() < deadline:
            gevent.sleep(0.05)
    # Workers report stats on a timer; ask each for its report now, and wait for the answers.
    lab = lab_of(runner.environment)
    workers = [client.id for client in runner.clients.all]
    lab.flushed.clear()
    for worker in workers:
        runner.send_message(MSG_FLUSH, {}, client_id=worker)
    while not set(workers) <= lab.flushed and time.monotonic() < deadline:
        gevent.sleep(0.05)


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


def _stats_delta(now: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The target's counters for this test only: ``now`` minus the ``base`` taken at test start."""
    out = {k: now[k] - base.get(k, 0) for k in ("connections_accepted", "requests")}
    out["closed_by"] = {k: v - base.get("closed_by", {}).get(k, 0) for k, v in now["closed_by"].items()}
    out["open_connections"] = now["open_connections"]
    per = {k: v - base.get("requests_per_connection", {}).get(k, 0) for k, v in now["requests_per_connection"].items()}
    out["requests_per_connection"] = {k: v for k, v in per.items() if v}
    return out


class Lab:
    """The plugin's state in one Locust process (local, master or worker)."""

    def __init__(self, environment: Any) -> None:
        self.environment = environment
        self.configs: dict[type, ScenarioConfig] = {}
        self.target: TargetProcess | None = None
        self.peer: PeerProcess | None = None
        self.run: Run | None = None
        self.counts = ConnectionCounts()
        self.worker_counts: dict[str, dict[str, Any]] = {}
        self.flushed: set[str] = set()  # workers that answered the last MSG_FLUSH
        self.shared_pools: dict[type, Any] = {}
        self.all_spawned = gevent.event.Event()
        self.users_done = 0
        self.users_started = 0

    # -- roles -------------------------------------------------------------------------------
    @property
    def runs_users(self) -> bool:
        return not isinstance(self.environment.runner, MasterRunner)

    @property
    def writes_runs(self) -> bool:
        return not isinstance(self.environment.runner, WorkerRunner)

    # -- settings ----------------------------------------------------------------------------
    def lab_user_classes(self) -> list[type]:
        from keepalive_lab.users import LabUser

        return [c for c in self.environment.user_classes if issubclass(c, LabUser)]

    def resolve_configs(self) -> dict[type, ScenarioConfig]:
        opts = self.environment.parsed_options
        scenario = Path(getattr(opts, "locustfile", "") or "scenario").stem
        self.configs = {c: resolve(c, opts, scenario) for c in self.lab_user_classes()}
        return self.configs

    def config_for(self, user_class: type) -> ScenarioConfig:
        if user_class not in self.configs:
            self.resolve_configs()
        return self.configs[user_class]

    # -- clients -----------------------------------------------------------------------------
    def make_pool(self, cfg: ScenarioConfig) -> Any:
        if cfg.client_type == "fasthttp":
            return fasthttp_client_pool(cfg.pool_size, self.counts)
        return requests_pool_manager(cfg.pool_size, cfg.pool_full == "block", self.counts)

    def pool_for(self, user_class: type, cfg: ScenarioConfig) -> tuple[Any, bool]:
        """The pool a new user gets, and whether the user owns it (``user`` scope)."""
        if cfg.pool_scope == "user":
            return self.make_pool(cfg), True
        if user_class not in self.shared_pools:
            self.shared_pools[user_class] = self.make_pool(cfg)
        return self.shared_pools[user_class], False

    def close_shared_pools(self) -> None:
        for pool in self.shared_pools.values():
            close_pool(pool)
        self.shared_pools.clear()

    def connection_totals(self) -> dict[str, Any]:
        parts = list(self.worker_counts.values())
        if self.runs_users:
            parts.append(self.counts.as_dict())
        return ConnectionCounts.total(parts)

    # -- finishing on --requests-per-user ----------------------------------------------------
    def admit_user(self, budgeted: bool) -> bool:
        """False for a user that only replaces one that spent its --requests-per-user budget.

        While it ramps up, Locust spawns a new user for each one that has stopped, so without
        this a short budget would be spent again, and a run would make more requests than
        users x budget.
        """
        runner = self.environment.runner
        self.users_started += 1
        if not budgeted or isinstance(runner, WorkerRunner) or runner is None:
            return True
        return self.users_started <= runner.target_user_count

    def user_finished(self) -> None:
        runner = self.environment.runner
        if isinstance(runner, WorkerRunner):
            runner.send_message(MSG_USER_DONE, {"count": 1})
        else:
            self._count_done(1)

    def _count_done(self, n: int) -> None:
        self.users_done += n
        runner = self.environment.runner
        if runner is not None and self.users_done >= runner.target_user_count > 0:
            log.info("every user made its --requests-per-user requests; ending the test")
            gevent.spawn(self.end_test)

    def end_test(self) -> None:
        """Stop the test the way Locust's --run-time does: quit when headless, else stop."""
        runner = self.environment.runner
        opts = self.environment.parsed_options
        if runner is None or runner.state == STATE_STOPPED:
            return
        if getattr(opts, "headless", False) or self.environment.web_ui is None:
            runner.quit()
        else:
            runner.stop()

    # -- events ------------------------------------------------------------------------------
    def on_test_start(self) -> None:
        if self.runs_users:
            self.counts = ConnectionCounts()
            self.users_done = 0
            self.users_started = 0
            self.all_spawned.clear()
            self.close_shared_pools()
        self.worker_counts.clear()
        try:
            configs = self.resolve_configs()
        except ConfigError as e:  # only reachable from the web UI; the CLI was checked at init
            log.error("%s", e)
            gevent.spawn(self.environment.runner.stop)
            return
        if self.writes_runs and configs:
            self.restart_server_if_changed(next(iter(configs.values())))
            self.run = Run(self, configs)

    def on_test_stop(self) -> None:
        if self.runs_users:
            self.close_shared_pools()
        if isinstance(self.environment.runner, MasterRunner) and self.run is not None:
            collect_worker_reports(self.environment.runner)
        if self.run is not None:
            run, self.run = self.run, None
            run.finish()

    def start_server(self, cfg: ScenarioConfig | None = None) -> None:
        """No --host: start the embedded target, or the real peer that --peer names."""
        cfg = cfg or next(iter(self.configs.values()))
        if cfg.peer != "embedded":
            self.peer = PeerProcess(cfg.peer)
            self.environment.host = self.peer.url
            log.info("no --host given: %s (%s) at %s", cfg.peer, PEER_NOTES[cfg.peer], self.peer.url)
            return
        self.target = TargetProcess(
            mode=cfg.target_mode, delay_ms=cfg.target_delay_ms, body_bytes=cfg.target_body_bytes
        )
        self.environment.host = self.target.url
        log.info("no --host given: embedded target (%s) at %s", cfg.target_mode, self.target.url)

    def restart_server_if_changed(self, cfg: ScenarioConfig) -> None:
        """Apply server settings changed in the web UI: a new target or peer for this test."""
        current = self.target or self.peer
        if current is None or self.environment.host != current.url:
            return  # the user gave their own host
        if self.peer is not None:
            changed = cfg.peer != self.peer.name
        else:
            wanted = (cfg.target_mode, {"delay_ms": cfg.target_delay_ms, "body_bytes": cfg.target_body_bytes})
            changed = cfg.peer != "embedded" or (str(self.target.mode), self.target.settings) != wanted
        if changed:
            self.stop_server()
            self.start_server(cfg)

    def stop_server(self) -> None:
        for server in (self.target, self.peer):
            if server is not None:
                server.stop()
        self.target = self.peer = None


def lab_of(environment: Any) -> Lab:
    lab = getattr(environment, "keepalive_lab", None)
    if lab is None:
        lab = environment.keepalive_lab = Lab(environment)
        _LABS.append(lab)
    return lab


@events.init.add_listener
def on_init(environment: Any, runner: Any = None, web_ui: Any = None, **_: Any) -> None:
    lab = lab_of(environment)
    classes = lab.lab_user_classes()
    if not classes:
        return
    try:
        lab.resolve_configs()
    except ConfigError as e:
        _one_line_error(str(e))
    _apply_default_users(environment.parsed_options, classes)
    # Pool-full discards are counted exactly; urllib3's warning per discard would flood the log.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    if isinstance(runner, MasterRunner):
        runner.register_message(MSG_USER_DONE, lambda msg, **kw: lab._count_done(int(msg.data["count"])))
        runner.register_message(MSG_FLUSHED, lambda msg, **kw: lab.flushed.add(msg.node_id))
    if isinstance(runner, WorkerRunner):

        def flush(msg: Any, **_: Any) -> None:
            runner._send_stats()  # the stats message carries this worker's connection counts
            runner.send_message(MSG_FLUSHED, {})

        runner.register_message(MSG_FLUSH, flush)
    if lab.writes_runs and not environment.host and all(getattr(c, "host", None) is None for c in classes):
        lab.start_server()
    if web_ui is not None:
        _validate_web_ui_form(web_ui, lab)


def _apply_default_users(options: Any, classes: list[type]) -> None:
    """Without ``-u``, run the scenario's ``default_users``; without ``-r``, such scenarios (and
    goroutine-style ones) spawn all their users within 1 s."""
    if options is None:
        return
    wanted = [c.default_users for c in classes if getattr(c, "default_users", None)]
    if wanted and getattr(options, "num_users", None) is None:
        options.num_users = sum(wanted)
    together = any(getattr(c, "start_together", False) or getattr(c, "default_users", None) for c in classes)
    if together and options.num_users and getattr(options, "spawn_rate", None) is None:
        options.spawn_rate = float(options.num_users)


def _validate_web_ui_form(web_ui: Any, lab: Lab) -> None:
    """Check the suite's fields of the web UI's start form; a bad value is shown in the UI."""
    from flask import jsonify, request

    @web_ui.app.before_request
    def check_swarm_form() -> Any:
        if request.path != "/swarm" or request.method != "POST":
            return None
        for opt in OPTIONS:
            value = request.form.get(opt.dest)
            if value is None or value == "":
                continue
            try:
                opt.convert(value)
            except ConfigError as e:
                return jsonify({"success": False, "message": str(e), "host": lab.environment.host})
        return None


@events.test_start.add_listener
def on_test_start(environment: Any, **_: Any) -> None:
    lab = lab_of(environment)
    if lab.lab_user_classes():
        lab.on_test_start()


@events.spawning_complete.add_listener
def on_spawning_complete(user_count: int, **_: Any) -> None:
    for lab in _LABS:
        lab.all_spawned.set()


@events.test_stop.add_listener
def on_test_stop(environment: Any, **_: Any) -> None:
    lab = lab_of(environment)
    if lab.lab_user_classes():
        lab.on_test_stop()


@events.report_to_master.add_listener
def on_report_to_master(client_id: str, data: dict[str, Any]) -> None:
    for lab in _LABS:
        data[REPORT_KEY] = lab.counts.as_dict()


@events.worker_report.add_listener
def on_worker_report(client_id: str, data: dict[str, Any]) -> None:
    if REPORT_KEY in data:
        for lab in _LABS:
            lab.worker_counts[client_id] = data[REPORT_KEY]


@events.quitting.add_listener
def on_quitting(environment: Any, **_: Any) -> None:
    lab = lab_of(environment)
    if lab.run is not None:
        # Locust fires quitting before it stops a running test only on Ctrl-C, SIGTERM, or
        # when a greenlet crashed (Locust then shuts down by itself).
        if locust_log.unhandled_greenlet_exception and not lab.run.failed_reason:
            lab.run.failed_reason = "an unhandled exception in a Locust greenlet stopped the test (see the log)"
        lab.run.interrupted = True
        if environment.runner is not None:
            environment.runner.stop()
        if lab.run is not None:  # the runner had nothing to stop
            lab.on_test_stop()


@events.quit.add_listener
def on_quit(**_: Any) -> None:
    for lab in _LABS:
        lab.stop_server()
