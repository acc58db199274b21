"""Options and the frozen :class:`ScenarioConfig` every other part of the suite reads.

Every option is declared once, in :data:`OPTIONS`. From that table the plugin adds the Locust
command-line options (with ``choices``, ``help``, an environment variable and a web-UI field),
and :func:`resolve` turns the parsed options plus a user class's attributes into one
:class:`ScenarioConfig`. A value given on the command line, in the environment, in
``locust.conf`` or in the web UI overrides the user class's attribute of the same name.

Bad values raise :class:`ConfigError` with one line: the option, the value, the valid values.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from keepalive_lab.peers import PEERS
from keepalive_lab.target import MODE_HELP, ModeError, parse_mode


class ConfigError(ValueError):
    """A bad option value or combination; ``str()`` is the one line shown to the user."""


def _whole(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        text = str(text).strip()
        if not re.fullmatch(r"\d+", text) or int(text) < minimum:
            raise ValueError(f"a whole number >= {minimum}")
        return int(text)

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        value = -1.0
    if not (value >= 0 and value != float("inf")):
        raise ValueError("a number of seconds >= 0")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise ValueError("a number of seconds > 0")
    return value


def _on_off(text: str) -> bool:
    return {"on": True, "off": False}[str(text).strip()]


def _show_on_off(value: Any) -> str:
    return "on" if value else "off"


def _target_mode(text: str) -> str:
    try:
        return str(parse_mode(text))
    except ModeError:
        raise ValueError(MODE_HELP) from None


def _path(text: str) -> str:
    text = str(text).strip()
    if not text:
        raise ValueError("a folder path")
    return text


@dataclass(frozen=True)
class Option:
    """One suite option: its flag, the user-class attribute it overrides, and how to parse it."""

    flag: str
    attr: str
    help: str
    parse: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    show: Callable[[Any], str] = str
    default: Any = None  # used only when the user class has no attribute of that name
    switch: bool = False  # a flag without a value (store_true)

    @property
    def dest(self) -> str:
        return self.attr

    @property
    def env_var(self) -> str:
        return "LOCUST_" + self.flag.lstrip("-").replace("-", "_").upper()

    def convert(self, raw: Any) -> Any:
        """Parse ``raw`` (a string, or an already typed class attribute) or raise ConfigError."""
        if self.switch:
            return raw if isinstance(raw, bool) else str(raw).strip().lower() in ("true", "on", "1", "yes")
        if self.choices is not None:
            text = self.show(raw) if not isinstance(raw, str) else raw.strip()
            if text not in self.choices:
                valid = ", ".join(self.choices)
                raise ConfigError(f"{self.flag} {text!r} is not valid; choose one of: {valid}")
            return self.parse(text)
        try:
            return self.parse(raw if isinstance(raw, str) else self.show(raw))
        except (ValueError, KeyError) as e:
            raise ConfigError(
                f"{self.flag} {raw!r} is not valid; use {e.args[0] if e.args else 'a valid value'}"
            ) from None


def _name(text: str) -> str:
    text = str(text).strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}", text):
        raise ValueError("a name of letters, digits, '.', '_' and '-' (at most 80)")
    return text


OPTIONS: tuple[Option, ...] = (
    Option(
        "--scenario",
        "scenario",
        "name of the run in its folder name, the report and the gate rules",
        parse=_name,
    ),
    Option(
        "--client",
        "client_type",
        "HTTP client: requests (Locust HttpUser, urllib3 pool) or fasthttp "
        "(Locust FastHttpUser, geventhttpclient pool)",
        choices=("requests", "fasthttp"),
    ),
    Option(
        "--pool-size",
        "pool_size",
        "connections the pool keeps (requests: pool_maxsize, Go's MaxIdleConnsPerHost; fasthttp: concurrency)",
        parse=_whole(1),
    ),
    Option(
        "--pool-scope",
        "pool_scope",
        "shared: one pool for every user in the process, like one Go "
        "http.Client; user: one pool per user (Locust's default)",
        choices=("shared", "user"),
    ),
    Option(
        "--pool-full",
        "pool_full",
        "when every pooled connection is busy: discard (open extra "
        "connections, close them when the pool is full: Go's MaxIdleConnsPerHost) or block (wait for "
        "a free one: Go's MaxConnsPerHost)",
        choices=("discard", "block"),
    ),
    Option(
        "--drain",
        "drain",
        "what the client does with each response body: full (read to EOF, then "
        "close), close (close unread), none (leave it unread and open)",
        choices=("full", "close", "none"),
    ),
    Option(
        "--keep-alive",
        "keep_alive",
        "off sends 'Connection: close' with every request",
        parse=_on_off,
        choices=("on", "off"),
        show=_show_on_off,
    ),
    Option(
        "--think-time",
        "think_time_s",
        "seconds each user waits between requests",
        parse=_seconds,
    ),
    Option(
        "--requests-per-user",
        "requests_per_user",
        "requests each user makes, then stops; the run ends when every user is done (0: no limit)",
        parse=_whole(0),
    ),
    Option(
        "--target-mode",
        "target_mode",
        f"embedded target only: {MODE_HELP}",
        parse=_target_mode,
    ),
    Option(
        "--peer",
        "peer",
        "server started when no --host is given: embedded (the suite's target), http.server "
        "(python3 -m http.server, HTTP/1.0), nginx-keepalive, nginx-close (keepalive_timeout 0), "
        "nginx-low-requests (keepalive_requests 3)",
        choices=PEERS,
    ),
    Option(
        "--target-delay-ms",
        "target_delay_ms",
        "embedded target only: wait before each response",
        parse=_whole(0),
    ),
    Option(
        "--target-body-bytes",
        "target_body_bytes",
        "embedded target only: response body size",
        parse=_whole(0),
    ),
    Option(
        "--sample-interval",
        "sample_interval_s",
        "seconds between two samples of the socket sidecar",
        parse=_positive_seconds,
        default=0.25,
    ),
    Option(
        "--no-sidecar",
        "no_sidecar",
        "do not sample sockets during the test (no sockets.csv)",
        switch=True,
    ),
    Option(
        "--run-dir",
        "run_dir",
        "folder that receives one run folder per test",
        parse=_path,
        default="runs",
    ),
)
OPTIONS_BY_DEST: dict[str, Option] = {o.dest: o for o in OPTIONS}


@dataclass(frozen=True)
class ScenarioConfig:
    """Everything a scenario's users and the run folder need, resolved once per test."""

    scenario: str
    user_class: str
    client_type: str = "requests"
    pool_size: int = 10
    pool_scope: str = "user"
    pool_full: str = "discard"
    drain: str = "full"
    keep_alive: bool = True
    think_time_s: float = 0.0
    requests_per_user: int = 0
    target_mode: str = "keepalive"
    peer: str = "embedded"
    target_delay_ms: int = 0
    target_body_bytes: int = 11
    sample_interval_s: float = 0.25
    no_sidecar: bool = False
    run_dir: str = "runs"
    start_together: bool = False

    def settings(self) -> dict[str, Any]:
        """The effective settings, as recorded in ``run.json``."""
        return dataclasses.asdict(self)


def check_combination(cfg: ScenarioConfig) -> None:
    """Refuse settings that cannot work together."""
    if cfg.client_type == "fasthttp" and cfg.pool_full == "discard":
        raise ConfigError(
            "--pool-full 'discard' does not work with --client fasthttp: its pool always blocks; "
            "use --pool-full block or --client requests"
        )


def resolve(user_class: type, options: Any | None, scenario_default: str = "") -> ScenarioConfig:
    """Build the :class:`ScenarioConfig` for ``user_class``; options given win over its attributes."""
    given: Mapping[str, Any] = vars(options) if options is not None else {}
    values: dict[str, Any] = {}
    for field in dataclasses.fields(ScenarioConfig):
        name = field.name
        opt = OPTIONS_BY_DEST.get(name)
        raw = given.get(name) if opt is not None else None
        if raw is None or raw == "":
            raw = getattr(user_class, name, None)
        if raw == "":
            raw = None
        if raw is None and opt is not None:
            raw = opt.default
        if raw is None:
            continue
        values[name] = opt.convert(raw) if opt is not None else raw
    if not values.get("scenario"):
        values["scenario"] = _name(scenario_default or user_class.__name__)
    values["user_class"] = user_class.__name__
    cfg = ScenarioConfig(**values)
    check_combination(cfg)
    return cfg


def default_for(option: Option, user_class: type | None) -> str | None:
    """The value shown as an option's default: the user class's attribute, else the option's own."""
    value = getattr(user_class, option.attr, None) if user_class is not None else None
    if value is None or value == "":
        value = option.default
    return None if value is None else option.show(value)
