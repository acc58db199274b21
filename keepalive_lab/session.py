"""The suite's state in one Locust process (local, master or worker), held on its Environment.

A :class:`Session` resolves the scenario's settings at each test start, hands users their pools,
keeps the client-side connection counts, ends the test when every user has spent its
``--requests-per-user`` budget, and opens and finishes the run folder (in the process that writes
it). :func:`session_of` finds an Environment's session.
"""

from __future__ import annotations

from locust import FastHttpUser, HttpUser
from locust.runners import STATE_RUNNING, STATE_SPAWNING, STATE_STOPPED

import argparse
import functools
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gevent
import gevent.event

from keepalive_lab import locust_compat
from keepalive_lab.clients import close_pool, count_user_client, make_pool
from keepalive_lab.clients.counts import ConnectionCounts
from keepalive_lab.config import ClientType, ConfigError, PoolScope, ScenarioConfig
from keepalive_lab.live import LiveView
from keepalive_lab.options import OPTIONS_BY_DEST, lab_only_given, resolve
from keepalive_lab.run import GREENLET_CRASHED, Ending, Run
from keepalive_lab.schema import ClientConnections, per_worker
from keepalive_lab.servers import Servers
from keepalive_lab.workers import WorkerLink

log = logging.getLogger("keepalive_lab")


class Session:
    """The plugin's state for one Environment; ``user_classes`` are the scenario classes it measures."""

    def __init__(self, environment: Any) -> None:
        self.environment = environment
        self.user_classes: list[type] = []
        self.configs: dict[type, ScenarioConfig] = {}
        self.servers = Servers()
        self.run: Run | None = None
        self.last_run: Run | None = None  # the last finished one, which the web UI still shows
        self.live = LiveView(self)
        self.feed_token: str | None = None  # the name this process's clients report under
        self.counts = ConnectionCounts()
        self.link = WorkerLink(environment.runner, self.count_done, self.on_run_announced, self.on_refused,
                               self.on_samples, self.on_freeze)  # fmt: skip
        if self.link.is_master:
            locust_compat.before_master_start(environment.runner, self.check_lost_workers)
        self.shared_pools: dict[type, Any] = {}
        self.all_spawned = gevent.event.Event()
        self.users_done = 0
        self.users_started = 0
        self.ending = Ending()  # why the current test ends, as far as this process knows
        self.warned_uncounted = False
        self.refusal: str | None = None  # a worker: why this test's users must make no request
        self.admit_cap: int | None = None  # a worker, once another was lost: the budgeted users it may start
        self.lost_users = 0  # the master: users of lost workers, whose budgets end with them
        self.handled_lost: set[str] = set()
        self._worker_watch: Any = None

    # -- roles -------------------------------------------------------------------------------
    @property
    def runs_users(self) -> bool:
        return not self.link.is_master

    @property
    def writes_runs(self) -> bool:
        return not self.link.is_worker

    # -- settings ----------------------------------------------------------------------------
    def resolve_configs(self) -> dict[type, ScenarioConfig]:
        """Settings for each measured class, from the options and the class attributes; ConfigError if bad.

        A LabUser scenario takes every setting; a locustfile's own HttpUser or FastHttpUser is
        measured as written. The LabUser-only options are refused when no LabUser runs, since
        they would act on nothing.
        """
        opts = self.environment.parsed_options
        self.configs = configs_for(self.user_classes, opts, scenario_name(getattr(opts, "locustfile", None)))
        return self.configs

    def config_for(self, user_class: type) -> ScenarioConfig:
        if user_class not in self.configs:
            self.resolve_configs()
        return self.configs[user_class]

    def start_server(self) -> None:
        """No ``--host``: start the embedded target or the peer, and load it."""
        self.environment.host = self.servers.start(next(iter(self.configs.values())))

    def prepare_server(self, form: Mapping[str, str]) -> str | None:
        """A web-UI start form: ready the server its settings name, and return its URL.

        None when the form's host is the user's own. A host the suite served earlier (a target
        since replaced) is ours too: the test goes to the server the form's settings name.
        """
        given = argparse.Namespace(**{**vars(self.environment.parsed_options), **{
            k: v for k, v in form.items() if k in OPTIONS_BY_DEST and v != ""
        }})  # fmt: skip
        configs = list(configs_for(self.user_classes, given, "form").values())  # ConfigError: refused in the form
        host = form.get("host") or None
        if not configs or not self.servers.served(host):
            return None
        url = self.servers.restart_if_changed(configs[0], self.servers.url) or self.servers.url
        self.environment.host = url
        return url

    # -- clients -----------------------------------------------------------------------------
    def count_own_clients(self) -> None:
        """Have each new user of a locustfile's own HttpUser or FastHttpUser count its connections.

        The class's ``__init__`` is wrapped: after it built the client (the user's own pool,
        concurrency, timeouts, TLS), :func:`count_user_client` makes that client count into this
        process's counts. Its tasks, ``wait_time`` and settings stay as written.
        """
        for cls, cfg in self.configs.items():
            if cfg.own_client and "_keepalive_lab_counts" not in cls.__dict__:
                cls.__init__ = _counting_init(cls.__init__, self)
                cls._keepalive_lab_counts = True

    def pool_for(self, user_class: type, cfg: ScenarioConfig) -> tuple[Any, bool]:
        """The pool a new user gets, and whether the user owns it (``user`` scope)."""
        if cfg.pool_scope is PoolScope.USER:
            return make_pool(cfg, self.counts), True
        if user_class not in self.shared_pools:
            self.shared_pools[user_class] = make_pool(cfg, self.counts)
        return self.shared_pools[user_class], False

    def close_shared_pools(self) -> None:
        for pool in self.shared_pools.values():
            close_pool(pool)
        self.shared_pools.clear()
        self.counts.feed.flush_all(sleep=gevent.sleep)

    def connection_totals(self) -> ClientConnections:
        parts = list(self.link.counts_by_worker.values())
        if self.runs_users:
            parts.append(self.counts.snapshot())
        return ClientConnections.total(parts)

    def on_refused(self, reason: str) -> None:
        """A worker cannot reach the embedded target. On the worker: its users make no request. On
        the master: end the test, status failed with the reason, exit 2."""
        if self.link.is_worker:
            self.refusal = reason
            return
        if self.run is None or self.run.refused:
            return
        log.error("%s", reason)
        self.run.failed_reason, self.run.refused = reason, True
        gevent.spawn(self.end_test)

    def on_samples(self, data: dict[str, Any]) -> None:
        """Master: rows and facts from a worker's host sidecar."""
        if self.run is not None:
            self.run.add_host_samples(data)

    def on_run_announced(self, token: str | None) -> None:
        """A worker learns the name its clients report under for the test that starts."""
        self.refusal = None
        self.admit_cap = None  # a new test: new budgets
        self.feed_token = token
        self.counts.feed.connect(token)

    # -- finishing on --requests-per-user ----------------------------------------------------
    def admit_user(self, budgeted: bool) -> bool:
        """False for a user that only replaces one that spent its --requests-per-user budget.

        While it ramps up, Locust spawns a new user for each one that has stopped, so without
        this a short budget would be spent again, and a run would make more requests than
        users x budget.
        """
        runner = self.environment.runner
        self.users_started += 1
        if not budgeted or runner is None:
            return True
        if self.link.is_worker:  # the master ends the test; here, only users moved from a lost worker stay out
            if self.admit_cap is None or self.users_started <= self.admit_cap:
                return True
            log.info("a user moved here from a lost worker makes no request: its --requests-per-user budget "
                     "was being spent there")  # fmt: skip
            return False
        return self.users_started <= locust_compat.target_user_count(runner)

    def on_freeze(self) -> None:
        """A worker: another worker was lost. Its users, which Locust may move here, already had their
        budgets; from now on this worker starts no more budgeted users than its share so far."""
        if self.admit_cap is None and self.environment.runner is not None:
            self.admit_cap = locust_compat.target_user_count(self.environment.runner)

    def _watch_workers(self) -> None:
        """The master, while a test runs: a worker that stops answering is lost (checked twice a second,
        and again right before Locust moves its users to the others)."""
        while True:
            gevent.sleep(0.5)
            self.check_lost_workers()
            answering = set(locust_compat.answering_worker_ids(self.environment.runner))
            for worker, users in locust_compat.worker_user_counts(self.environment.runner).items():
                if worker in answering and users:
                    self.link.user_counts[worker] = users

    def check_lost_workers(self) -> None:
        """Say at once that a worker is lost, keep its users' budgets from being spent again where Locust
        moves them, and end the test when every other user has spent its own."""
        runner = self.environment.runner
        if self.run is None or runner is None or runner.state not in (STATE_SPAWNING, STATE_RUNNING):
            return
        lost = [w for w in self.link.started if w not in set(locust_compat.answering_worker_ids(runner))]
        for worker in lost:
            if worker in self.handled_lost:
                continue
            self.handled_lost.add(worker)
            users = self.link.user_counts.get(worker, 0)
            host = self.link.host_of(worker)
            log.warning("worker %s on host %s stopped answering the master; its %d user(s) are lost with it",
                        worker, host, users)  # fmt: skip
            self.lost_users += users
            self.link.freeze()
            gevent.spawn(self.count_done, 0)

    def user_finished(self) -> None:
        if self.link.is_worker:
            self.link.user_done()
        else:
            self.count_done(1)

    def count_done(self, n: int) -> None:
        self.users_done += n
        runner = self.environment.runner
        if runner is not None and self.users_done >= locust_compat.target_user_count(runner) - self.lost_users > 0:
            log.info("every user made its --requests-per-user requests; ending the test")
            self.ending.budget_spent = True
            gevent.spawn(self.end_test)

    def end_test(self) -> None:
        """Stop the test the way Locust's --run-time does: quit when headless, else stop."""
        runner = self.environment.runner
        if runner is None or runner.state == STATE_STOPPED:
            return
        if getattr(self.environment.parsed_options, "headless", False) or self.environment.web_ui is None:
            runner.quit()
        else:
            runner.stop()

    # -- the test's life ---------------------------------------------------------------------
    def on_test_start(self) -> None:
        self.link.reset()
        try:
            configs = self.resolve_configs()
        except ConfigError as e:  # only reachable from the web UI; the form was checked before
            log.error("%s", e)
            gevent.spawn(self.environment.runner.stop)
            return
        if self.writes_runs and configs:
            self.ending = Ending()
            url = self.servers.restart_if_changed(next(iter(configs.values())), self.environment.host)
            if url is not None:
                self.environment.host = url
            self.run = Run(self.environment, configs, self.servers, self.end_test, self.connection_totals, self.ending)
            self.feed_token = self.run.token
            self.link.announce_run(self.feed_token, self.servers.loopback_target(), self.run.sidecar_spec)
            # Locust started its clock before test_start, and the run's start (the sidecar's
            # first sample) holds the users back: restart it so requests/s counts the load only.
            self.environment.stats.reset_all()
        if self.runs_users:
            self.close_shared_pools()  # the last test's, counted in the last test
            self.counts.reset()  # in place: pools that outlive a test (a locustfile's own) count into it
            self.counts.feed.connect(self.feed_token)
            self.users_done = 0
            self.users_started = 0
            if self.admit_cap is not None:  # frozen, and no new test announced since: a spawn that came
                self.admit_cap = 0  # after the master ended its test starts no budgeted user
            self.all_spawned.clear()
        if self.link.is_master and self.run is not None:
            self.users_done, self.lost_users, self.handled_lost = 0, 0, set()
            self._worker_watch = gevent.spawn(self._watch_workers)

    def on_test_stop(self) -> None:
        if self.runs_users:
            self.close_shared_pools()
        if self.link.is_worker:
            self.link.stop_host_sidecar()
        if self._worker_watch is not None:
            self._worker_watch.kill(block=False)
            self._worker_watch = None
        if self.link.is_master and self.run is not None:
            self.link.collect()
            self.run.record.lost_workers = self.link.lost_workers()
            self.run.record.workers = per_worker(self.link.counts_by_worker, self.link.hosts)
            self.run.errors_by_host = self.link.errors_by_host()
        if self.run is not None:
            processes = max(1, len(self.link.counts_by_worker)) if self.link.is_master else 1
            users = locust_compat.target_user_count(self.environment.runner) if self.environment.runner else None
            self.run.record.processes = processes
            self.run.record.pools = pools_of(list(self.configs.values()), processes, users)
            run, self.run = self.run, None
            self.last_run = run
            run.finish()

    def on_quitting(self, signal_name: str | None) -> None:
        """Ctrl-C, SIGTERM, or a crashed greenlet: finish the running test's folder, marked so."""
        self.link.stop_host_sidecar()
        if self.run is None:
            return
        if locust_compat.greenlet_crashed() and not self.run.failed_reason:
            self.run.failed_reason = GREENLET_CRASHED
        self.ending.signal = signal_name or "SIGINT"
        if self.environment.runner is not None:
            self.environment.runner.stop()
        if self.run is not None:  # the runner had nothing to stop
            self.on_test_stop()


def pools_of(configs: list[ScenarioConfig], processes: int, users: int | None) -> int | None:
    """How many connection pools existed: one per process for each shared-pool scenario, one per user
    for user-scoped ones; None where a class measured as written keeps its own, or it cannot be told."""
    if not configs or any(c.own_client for c in configs):
        return None
    if all(c.pool_scope is PoolScope.SHARED for c in configs):
        return processes * len(configs)
    if all(c.pool_scope is PoolScope.USER for c in configs) and users:
        return int(users)
    return None


def _counting_init(original: Callable[..., None], session: Session) -> Callable[..., None]:
    @functools.wraps(original)
    def __init__(user: Any, *args: Any, **kwargs: Any) -> None:
        original(user, *args, **kwargs)
        if session.refusal:  # the target cannot be reached from this host: no request at all
            user.run = lambda *_, **__: None
        if not count_user_client(user, session.counts) and not session.warned_uncounted:
            session.warned_uncounted = True
            log.warning("%s's client is neither Locust's HttpSession nor its FastHttpSession: its connections "
                        "are not counted", type(user).__name__)  # fmt: skip

    return __init__


def _client_class(user_class: type) -> str:
    return "FastHttpUser" if issubclass(user_class, FastHttpUser) else "HttpUser"


def own_client_type(user_class: type) -> ClientType | None:
    """``requests`` or ``fasthttp`` for a locustfile's own HttpUser or FastHttpUser; None for a LabUser.

    A class that is both is refused: whichever ``__init__`` runs last builds the client, so the
    counts would depend on the order of its bases.
    """
    own = issubclass(user_class, HttpUser | FastHttpUser)
    if getattr(user_class, "builds_client", False):
        if own:
            raise ConfigError(
                f"{user_class.__name__} derives from both LabUser and {_client_class(user_class)}: derive from "
                "LabUser alone (client_type = 'fasthttp' gives FastHttpUser's client), or from "
                f"{_client_class(user_class)} alone and add locustfiles/measure.py to -f to measure it as written"
            )
        return None
    return ClientType.FASTHTTP if issubclass(user_class, FastHttpUser) else ClientType.REQUESTS


def configs_for(classes: list[type], opts: Any, scenario: str) -> dict[type, ScenarioConfig]:
    """Each measured class's settings; ConfigError for LabUser-only options given where no LabUser runs."""
    own = {c: own_client_type(c) for c in classes}
    given = lab_only_given(opts)
    if given and classes and all(own.values()):
        names = ", ".join(f"{c.__name__} ({_client_class(c)})" for c in classes)
        raise ConfigError(
            f"{' '.join(given)}: {'these options act' if len(given) > 1 else 'this option acts'} only on the suite's "
            f"LabUser scenarios; {names} {'keeps its' if len(classes) == 1 else 'keep their'} own client, pool and "
            f"tasks, and {'is' if len(classes) == 1 else 'are'} measured as written: leave "
            f"{'these options' if len(given) > 1 else 'it'} out"
        )
    return {c: resolve(c, opts, scenario, own_client=own[c]) for c in classes}


def scenario_name(locustfile: str | None) -> str:
    """A run's default name: the first locustfile's name, the suite's measure.py left out."""
    stems = [Path(part).stem for part in str(locustfile or "").split(",") if part.strip()]
    stems = [stem for stem in stems if stem not in ("measure", "__init__")] or stems or ["scenario"]
    return stems[0]


def session_of(environment: Any) -> Session:
    """The Environment's session, made on first use."""
    session = getattr(environment, "keepalive_lab", None)
    if session is None:
        session = environment.keepalive_lab = Session(environment)
    return session
