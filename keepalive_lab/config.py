"""The frozen :class:`ScenarioConfig` every part of a run reads, its modes, and its defaults.

This module is the one place for defaults: :data:`DEFAULTS` holds them, the base user class
takes its class attributes from it, and the options show them. Every mode is a ``StrEnum``, so
a mode is never a bare string and its valid values are listed once. A :class:`ConfigError` is
one line for the user: the option, the value, what is valid.

:mod:`keepalive_lab.options` turns Locust's parsed options plus a user class's attributes into a
:class:`ScenarioConfig`; nothing downstream reads the parser.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from keepalive_lab.schema import RUN_DIR


class ConfigError(ValueError):
    """A bad option value or combination; ``str()`` is the one line shown to the user."""


class ClientType(StrEnum):
    """The HTTP client: Locust's ``HttpSession`` (urllib3) or ``FastHttpSession`` (geventhttpclient)."""

    REQUESTS = "requests"
    FASTHTTP = "fasthttp"


class PoolScope(StrEnum):
    """``shared``: one pool per process for a user class, like one Go ``http.Client``; ``user``: one each."""

    SHARED = "shared"
    USER = "user"


class PoolFull(StrEnum):
    """When every pooled connection is busy: open extras and close them on return (``discard``), or wait."""

    DISCARD = "discard"
    BLOCK = "block"


class Drain(StrEnum):
    """What the client does with each response body: read it to EOF, close it unread, or leave it open."""

    FULL = "full"
    CLOSE = "close"
    NONE = "none"


class Peer(StrEnum):
    """The server started when no ``--host`` is given (see :mod:`keepalive_lab.peers`)."""

    EMBEDDED = "embedded"
    HTTP_SERVER = "http.server"
    NGINX_KEEPALIVE = "nginx-keepalive"
    NGINX_CLOSE = "nginx-close"
    NGINX_LOW_REQUESTS = "nginx-low-requests"


class TargetModeKind(StrEnum):
    """How the embedded target treats connections (see :mod:`keepalive_lab.target`)."""

    KEEPALIVE = "keepalive"
    CLOSE = "close"
    HTTP10 = "http10"
    CLOSE_AFTER = "close-after"
    IDLE_TIMEOUT = "idle-timeout"


MODE_HELP = "keepalive, close, http10, close-after:N (N >= 1) or idle-timeout:SECONDS (SECONDS > 0)"


class ModeError(ValueError):
    """A target mode that does not parse; the message says what is valid."""


@dataclass(frozen=True)
class TargetMode:
    """A parsed target mode: its kind and parameter. ``str()`` gives the text form back."""

    kind: TargetModeKind = TargetModeKind.KEEPALIVE
    close_after: int = 0
    idle_timeout_s: float = 0.0

    def __str__(self) -> str:
        if self.kind is TargetModeKind.CLOSE_AFTER:
            return f"{self.kind}:{self.close_after}"
        if self.kind is TargetModeKind.IDLE_TIMEOUT:
            return f"{self.kind}:{self.idle_timeout_s:g}"
        return str(self.kind)

    @classmethod
    def parse(cls, text: str | TargetMode) -> TargetMode:
        """Parse a mode such as ``close-after:3``; raise :class:`ModeError` if it is not one."""
        if isinstance(text, TargetMode):
            return text
        text = str(text).strip()
        if text in (TargetModeKind.KEEPALIVE, TargetModeKind.CLOSE, TargetModeKind.HTTP10):
            return cls(TargetModeKind(text))
        m = re.fullmatch(r"close-after:(\d+)", text)
        if m and int(m.group(1)) >= 1:
            return cls(TargetModeKind.CLOSE_AFTER, close_after=int(m.group(1)))
        m = re.fullmatch(r"idle-timeout:([0-9]*\.?[0-9]+)", text)
        if m and float(m.group(1)) > 0:
            return cls(TargetModeKind.IDLE_TIMEOUT, idle_timeout_s=float(m.group(1)))
        raise ModeError(f"{text!r} is not a target mode; use {MODE_HELP}")


@dataclass(frozen=True)
class ScenarioConfig:
    """Everything a scenario's users and its run folder need, resolved once per test.

    The field defaults are the suite's defaults. A locustfile's user class overrides them with
    class attributes of the same name; an option given for one run overrides both.
    """

    scenario: str = ""
    user_class: str = ""
    client_type: ClientType = ClientType.REQUESTS
    pool_size: int = 10
    pool_scope: PoolScope = PoolScope.USER
    pool_full: PoolFull = PoolFull.DISCARD
    pool_wait_s: float = 30.0
    request_timeout_s: float = 60.0
    drain: Drain = Drain.FULL
    keep_alive: bool = True
    think_time_s: float = 0.0
    requests_per_user: int = 0
    target_mode: TargetMode = TargetMode()
    peer: Peer = Peer.EMBEDDED
    target_delay_ms: int = 0
    target_body_bytes: int = 11
    target_tls: bool = False
    target_bind: str = "127.0.0.1"
    sample_interval_s: float = 0.25
    no_sidecar: bool = False
    run_dir: str = RUN_DIR
    start_together: bool = False
    default_users: int | None = None
    own_client: bool = False  # a locustfile's own HttpUser or FastHttpUser, measured as written
    client_settings: tuple[tuple[str, Any], ...] = ()  # own_client: the class's client settings

    def settings(self) -> dict[str, Any]:
        """The settings that acted, as plain JSON values, as recorded in ``run.json``.

        A class measured as written (``own_client``) has its own client, pool and tasks: the
        settings of the suite's scenarios (:data:`LAB_ONLY`) are left out, and its client's own
        settings are recorded instead.
        """
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            if self.own_client and field.name in LAB_ONLY:
                continue
            value = getattr(self, field.name)
            if field.name == "client_settings":
                if self.own_client:
                    out[field.name] = dict(value)
                continue
            if field.name == "own_client" and not value:
                continue
            out[field.name] = str(value) if isinstance(value, StrEnum | TargetMode) else value
        return out

    @property
    def uses_embedded_target(self) -> bool:
        return self.peer is Peer.EMBEDDED


# Settings that act only on the suite's LabUser scenarios, whose client, pool and tasks the suite
# builds; a locustfile's own HttpUser or FastHttpUser keeps its own.
LAB_ONLY = (
    "pool_size", "pool_scope", "pool_full", "pool_wait_s", "request_timeout_s", "drain", "keep_alive", "think_time_s",
    "requests_per_user", "start_together", "default_users",
)  # fmt: skip

DEFAULTS = ScenarioConfig()
"""The suite's defaults; the base user class reads its class attributes from here."""


def check_combination(cfg: ScenarioConfig) -> None:
    """Refuse settings that cannot work together (a class measured as written has none of them)."""
    if cfg.own_client:
        return
    if cfg.client_type is ClientType.FASTHTTP and cfg.pool_full is PoolFull.DISCARD:
        raise ConfigError(
            "--pool-full 'discard' does not work with --client fasthttp: its pool always blocks; "
            "use --pool-full block or --client requests"
        )
