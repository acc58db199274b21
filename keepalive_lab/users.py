"""``LabUser``: the abstract base of every scenario. Locustfiles subclass it and set attributes.

Each class attribute below is a scenario default (from :data:`keepalive_lab.config.DEFAULTS`);
the option of the same name (``--pool-size`` for ``pool_size``, ``--think-time`` for
``think_time_s``...) overrides it for one run.

A task calls :meth:`LabUser.fetch`, which sends one GET with ``stream=True`` and then treats the
body as ``drain`` says. That is where Python clients decide whether a connection can be reused:

``full``
    read the body to EOF, then close the response: the connection goes back to the pool.
``close``
    close the response unread: the client closes the socket (the client holds the TIME_WAIT).
``none``
    leave the response unread and open, like a Go program that never calls ``Body.Close()``:
    the connection cannot be reused. The user keeps its last :data:`HELD_RESPONSES` such
    responses open and closes older ones, and all of them when it stops.
"""

from __future__ import annotations

from locust import User
from locust.clients import HttpSession
from locust.contrib.fasthttp import FastHttpSession
from locust.exception import StopUser
from locust.runners import STATE_CLEANUP, STATE_STOPPED, STATE_STOPPING

import collections
from typing import Any, ClassVar

from keepalive_lab import plugin
from keepalive_lab.clients import close_pool
from keepalive_lab.clients.gevent_pool import no_reuse
from keepalive_lab.config import DEFAULTS, ClientType, Drain, Peer, PoolFull, PoolScope, TargetMode
from keepalive_lab.session import session_of

HELD_RESPONSES = 100
# How long a start_together user waits for the others before it starts anyway.
START_TOGETHER_TIMEOUT_S = 60.0


class LabUser(User):
    """A user whose HTTP client, pool and drain policy come from its class attributes."""

    abstract = True
    builds_client: ClassVar[bool] = True
    """The suite builds this class's client and pool from its settings (a locustfile's own
    HttpUser or FastHttpUser, measured with :mod:`keepalive_lab.measure`, keeps its own)."""

    scenario: ClassVar[str] = DEFAULTS.scenario
    """Name used for run folders; defaults to the locustfile's name."""
    client_type: ClassVar[ClientType | str] = DEFAULTS.client_type
    """``requests`` (Locust's HttpSession over urllib3) or ``fasthttp`` (geventhttpclient)."""
    pool_size: ClassVar[int] = DEFAULTS.pool_size
    """Connections the pool keeps (urllib3 ``maxsize``; geventhttpclient ``concurrency``)."""
    pool_scope: ClassVar[PoolScope | str] = DEFAULTS.pool_scope
    """``shared``: one pool per process for this class, like one Go ``http.Client``; ``user``: one each."""
    pool_full: ClassVar[PoolFull | str] = DEFAULTS.pool_full
    """``discard``: open extra connections and close them on return to a full pool; ``block``: wait."""
    pool_wait_s: ClassVar[float] = DEFAULTS.pool_wait_s
    """Seconds a request waits for a free connection of a full blocking pool before it fails."""
    request_timeout_s: ClassVar[float] = DEFAULTS.request_timeout_s
    """Seconds a request waits to connect, or for the server's next bytes, before it fails."""
    drain: ClassVar[Drain | str] = DEFAULTS.drain
    """``full``, ``close`` or ``none`` (see the module docstring)."""
    keep_alive: ClassVar[bool] = DEFAULTS.keep_alive
    """False sends ``Connection: close`` with every request."""
    think_time_s: ClassVar[float] = DEFAULTS.think_time_s
    """Seconds between two requests of one user."""
    requests_per_user: ClassVar[int] = DEFAULTS.requests_per_user
    """Requests each user makes before it stops; 0 means no limit."""
    target_mode: ClassVar[TargetMode | str] = DEFAULTS.target_mode
    """Mode of the embedded target, used when no ``--host`` is given."""
    peer: ClassVar[Peer | str] = DEFAULTS.peer
    """Server started when no --host is given: ``embedded`` or a real peer (see keepalive_lab.peers)."""
    target_delay_ms: ClassVar[int] = DEFAULTS.target_delay_ms
    """Embedded target: delay before each response."""
    target_body_bytes: ClassVar[int] = DEFAULTS.target_body_bytes
    """Embedded target: response body size ("Hello world")."""
    target_tls: ClassVar[bool] = DEFAULTS.target_tls
    """Embedded target: serve HTTPS with a self-signed certificate."""
    sample_interval_s: ClassVar[float] = DEFAULTS.sample_interval_s
    """Seconds between two samples of the socket sidecar."""
    no_sidecar: ClassVar[bool] = DEFAULTS.no_sidecar
    """True: no socket sampling (no ``sockets.csv``)."""
    run_dir: ClassVar[str] = DEFAULTS.run_dir
    """Folder that receives one run folder per test."""
    start_together: ClassVar[bool] = DEFAULTS.start_together
    """Hold every user until the last one is spawned, like goroutines started in one loop."""
    default_users: ClassVar[int | None] = DEFAULTS.default_users
    """Users to run when ``-u`` is not given (Locust's own default is 1); they spawn within 1 s."""
    path: ClassVar[str] = "/"
    """The path :meth:`fetch` requests by default."""

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.session = session_of(environment)
        self.config = self.session.config_for(type(self))
        if not self.host:
            raise ValueError("no host: give --host, or leave it out to use the embedded target")
        self._pool, self._owns_pool = self.session.pool_for(type(self), self.config)
        if self.config.client_type is ClientType.FASTHTTP:
            self.client: Any = FastHttpSession(
                base_url=self.host,
                request_event=self.environment.events.request,
                user=self,
                client_pool=self._pool,
                max_retries=0,
            )
        else:
            self.client = HttpSession(self.host, self.environment.events.request, self, pool_manager=self._pool)
            self.client.trust_env = False
        self._headers = None if self.config.keep_alive else {"Connection": "close"}
        # requests takes its timeout per request; geventhttpclient's pool was built with it.
        fast = self.config.client_type is ClientType.FASTHTTP
        self._per_request: dict[str, Any] = {} if fast else {"timeout": self.config.request_timeout_s}
        self._held: collections.deque[Any] = collections.deque()
        self.requests_made = 0

    def wait_time(self) -> float:
        return self.config.think_time_s

    def on_start(self) -> None:
        if self.session.refusal or not self.session.admit_user(budgeted=self.config.requests_per_user > 0):
            raise StopUser()
        if self.config.client_type is ClientType.FASTHTTP and self.config.drain is not Drain.FULL:
            no_reuse()  # a body that came with the headers is already read: close its connection
        if self.config.start_together:
            self.session.all_spawned.wait(timeout=START_TOGETHER_TIMEOUT_S)

    def on_stop(self) -> None:
        runner = self.environment.runner
        if runner is not None and runner.state in (STATE_CLEANUP, STATE_STOPPING, STATE_STOPPED):
            self.session.counts.users_stopping = True  # the test ends: what users give back now is no progress
        while self._held:
            _close_quietly(self._held.popleft())
        if self._owns_pool:
            close_pool(self._pool)

    def fetch(self, path: str | None = None, name: str | None = None) -> Any:
        """GET ``path`` once and treat the body as ``drain`` says; stop after ``requests_per_user``."""
        limit = self.config.requests_per_user
        if limit and self.requests_made >= limit:
            self._finish()
        # catch_response: the request is reported when its body has been handled, so a body that
        # breaks off (a reset in the middle of the response) is the request's failure, with its reason.
        with self.client.get(path or self.path, stream=True, headers=self._headers, name=name,
                             catch_response=True, **self._per_request) as response:  # fmt: skip
            self.requests_made += 1
            try:
                self._drain(response)
            except Exception as e:  # noqa: BLE001 - any error reading the body fails this request
                response.failure(f"the response body broke off: {e!r}")
        if limit and self.requests_made >= limit:
            self._finish()
        return response

    def _drain(self, response: Any) -> None:
        drain = self.config.drain
        if drain is Drain.FULL:
            _ = response.content  # reads to EOF; the connection returns to the pool
            _close_quietly(response)
        elif drain is Drain.CLOSE:
            _close_quietly(response)
        else:
            self._held.append(response)
            if len(self._held) > HELD_RESPONSES:
                _close_quietly(self._held.popleft())

    def _finish(self) -> None:
        self.session.user_finished()
        raise StopUser()


def _close_quietly(response: Any) -> None:
    """Close a response without reading it (requests ``Response`` or geventhttpclient ``FastResponse``)."""
    try:
        if hasattr(response, "close"):
            response.close()
        else:
            inner = getattr(response, "_response", None)
            if inner is not None:
                inner.release()
    except Exception:  # a failed request's response may have nothing to close
        pass


# Importing the users (every locustfile does) registers the suite's Locust listeners for them.
plugin.register(LabUser)
