"""The suite's Locust options, declared once in :data:`OPTIONS`.

From that table :func:`add_arguments` adds the command-line options (with ``choices``, ``help``,
an environment variable and a web-UI field), and :func:`resolve` turns the parsed options plus a
user class's attributes into one :class:`~keepalive_lab.config.ScenarioConfig`. A value given on
the command line, in the environment, in ``locust.conf`` or in the web UI overrides the user
class's attribute of the same name, which overrides :data:`~keepalive_lab.config.DEFAULTS`.

Bad values raise :class:`~keepalive_lab.config.ConfigError` with one line: the option, the
value, the valid values.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from keepalive_lab.config import (
    DEFAULTS,
    MODE_HELP,
    ClientType,
    ConfigError,
    Drain,
    ModeError,
    Peer,
    PoolFull,
    PoolScope,
    ScenarioConfig,
    TargetMode,
    check_combination,
)


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


def _target_mode(text: str) -> TargetMode:
    try:
        return TargetMode.parse(text)
    except ModeError:
        raise ValueError(MODE_HELP) from None


def _path(text: str) -> str:
    text = str(text).strip()
    if not text:
        raise ValueError("a folder path")
    return text


def _name(text: str) -> str:
    text = str(text).strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}", text):
        raise ValueError("a name of letters, digits, '.', '_' and '-' (at most 80)")
    return text


def _values(enum: type[StrEnum]) -> tuple[str, ...]:
    return tuple(str(member) for member in enum)


@dataclass(frozen=True)
class Option:
    """One suite option: its flag, the config field (and user-class attribute) it sets, how to parse it."""

    flag: str
    attr: str
    help: str
    parse: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    show: Callable[[Any], str] = str
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
        parse=ClientType,
        choices=_values(ClientType),
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
        parse=PoolScope,
        choices=_values(PoolScope),
    ),
    Option(
        "--pool-full",
        "pool_full",
        "when every pooled connection is busy: discard (open extra "
        "connections, close them when the pool is full: Go's MaxIdleConnsPerHost) or block (wait for "
        "a free one: Go's MaxConnsPerHost)",
        parse=PoolFull,
        choices=_values(PoolFull),
    ),
    Option(
        "--pool-wait",
        "pool_wait_s",
        "seconds a request waits for a free connection of a full blocking pool before it fails; a run whose "
        "users wait that long ends failed",
        parse=_positive_seconds,
    ),
    Option(
        "--drain",
        "drain",
        "what the client does with each response body: full (read to EOF, then "
        "close), close (close unread), none (leave it unread and open)",
        parse=Drain,
        choices=_values(Drain),
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
        parse=Peer,
        choices=_values(Peer),
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
        "--target-tls",
        "target_tls",
        "embedded target only: on serves HTTPS with a self-signed certificate (fasthttp does not check it, as "
        "Locust's FastHttpUser; requests does, as HttpUser, and fails)",
        parse=_on_off,
        choices=("on", "off"),
        show=_show_on_off,
    ),
    Option(
        "--sample-interval",
        "sample_interval_s",
        "seconds between two samples of the socket sidecar",
        parse=_positive_seconds,
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
    ),
)
OPTIONS_BY_DEST: dict[str, Option] = {o.dest: o for o in OPTIONS}
OPTIONS_BY_FLAG: dict[str, Option] = {o.flag.lstrip("-"): o for o in OPTIONS}
# Settings only a user class sets (no option): how many users and whether they start together.
CLASS_ONLY = ("start_together", "default_users")


def _exit_before_load(prog: str, message: str) -> None:
    """A bad option, found while Locust parses its command line: one line, exit 2, at once.

    ``os._exit``, not ``sys.exit``: nothing has started yet, and with gevent < 26.5 and greenlet
    >= 3.5.1, a monkey-patched process that exits before Locust has set up its logging prints
    "RuntimeError: greenlet is being finalized" from a logging callback at interpreter shutdown.
    """
    sys.stderr.write(f"{prog}: error: {message}\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(2)


def _argtype(option: Option) -> Callable[[str], str]:
    def parse(text: str) -> str:
        try:
            return option.show(option.convert(text))
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e).split(" ", 1)[1]) from None

    parse.__name__ = option.attr
    return parse


def default_for(option: Option, user_class: type | None) -> str | None:
    """The value shown as an option's default: the user class's attribute, else the suite's default
    (None when neither sets one, as for ``--scenario``: the locustfile's name is used)."""
    value = getattr(user_class, option.attr, None) if user_class is not None else None
    if value is None or value == "":
        value = getattr(DEFAULTS, option.attr)
    return None if value is None or value == "" else option.show(value)


def add_arguments(parser: Any, shown: type | None) -> None:
    """Add every option to Locust's parser; ``shown`` is the user class whose defaults are displayed.

    A bad value exits 2 with one line, before any load starts.
    """
    for opt in OPTIONS:
        if opt.switch:
            # default None, not False: an unset switch leaves the user class's attribute in force.
            parser.add_argument(
                opt.flag,
                dest=opt.dest,
                action="store_true",
                default=None,
                env_var=opt.env_var,
                help=f"{opt.help} (env {opt.env_var})",
                include_in_web_ui=True,
            )
            continue
        default = default_for(opt, shown) if shown is not None else None
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
    parser.error = functools.partial(_exit_before_load, parser.prog)


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
        if raw is None or raw == "":
            continue
        values[name] = opt.convert(raw) if opt is not None else raw
    if not values.get("scenario"):
        values["scenario"] = _name(scenario_default or user_class.__name__)
    values["user_class"] = user_class.__name__
    cfg = ScenarioConfig(**values)
    check_combination(cfg)
    return cfg


def check_values(values: Mapping[str, Any], names: Iterable[str] | None = None) -> None:
    """Check raw option values by destination name (a web-UI form); raise ConfigError for the first bad one."""
    for opt in OPTIONS:
        if names is not None and opt.dest not in names:
            continue
        value = values.get(opt.dest)
        if value is None or value == "":
            continue
        opt.convert(value)


def apply_default_users(options: Any, classes: list[type]) -> None:
    """Without ``-u``, run the scenarios' ``default_users``; without ``-r``, such scenarios (and
    goroutine-style ones) spawn all their users within 1 s."""
    if options is None:
        return
    wanted = [c.default_users for c in classes if getattr(c, "default_users", None)]
    if wanted and getattr(options, "num_users", None) is None:
        options.num_users = sum(wanted)
    together = any(getattr(c, "start_together", False) or getattr(c, "default_users", None) for c in classes)
    if together and options.num_users and getattr(options, "spawn_rate", None) is None:
        options.spawn_rate = float(options.num_users)
