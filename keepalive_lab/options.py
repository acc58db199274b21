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
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from keepalive_lab.config import (
    DEFAULTS,
    LAB_ONLY,
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
from keepalive_lab.target import bind_address


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


def _show_seconds(value: Any) -> str:
    return f"{float(value):g}"


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


def _run_dir(text: str) -> str:
    """A folder run folders can be written to: made if missing, and tried with a file, before any load."""
    text = _path(text)
    folder = Path(text)
    if folder.exists() and not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file; give a folder for the run folders")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".keepalive-lab-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise argparse.ArgumentTypeError(
            f"{text!r} cannot be written ({e.strerror or e}); give a folder this user can create files in"
        ) from None
    return text


def _name(text: str) -> str:
    text = str(text).strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}", text):
        raise ValueError("a name of letters, digits, '.', '_' and '-' (at most 80)")
    return text


def _values(enum: type[StrEnum]) -> tuple[str, ...]:
    return tuple(str(member) for member in enum)


_TRUE, _FALSE = ("on", "true", "yes", "1"), ("off", "false", "no", "0")


def _on_off_word(text: str) -> bool:
    word = str(text).strip().lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise ValueError("on or off")


@dataclass(frozen=True)
class Option:
    """One suite option: its flag, the config field (and user-class attribute) it sets, how to parse it.

    ``dest`` names it in Locust's parsed options and in the web UI, whose start form labels a field
    with its dest in words ("think_time" reads "Think Time") followed by ``ui`` and the default.
    ``help`` is the longer text of ``python -m keepalive_lab``.
    """

    flag: str
    attr: str
    dest: str
    ui: str
    help: str
    parse: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    show: Callable[[Any], str] = str
    boolean: bool = False  # on or off: a checkbox in the web UI
    switch: bool = False  # a flag without a value (store_true)
    metavar: str = ""  # the value's name in --help: N, SECONDS, ...

    @property
    def value_name(self) -> str:
        """What follows the flag in help: its choices, on|off, or its metavar (nothing for a switch)."""
        if self.switch:
            return ""
        if self.boolean:
            return "on|off"
        return "|".join(self.choices) if self.choices else self.metavar or self.dest.upper()

    @property
    def env_var(self) -> str:
        return "LOCUST_" + self.flag.lstrip("-").replace("-", "_").upper()

    def convert(self, raw: Any) -> Any:
        """Parse ``raw`` (a string, or an already typed class attribute) or raise ConfigError."""
        if self.switch or self.boolean:
            if isinstance(raw, bool):
                return raw
            try:
                return _on_off_word(raw)
            except ValueError:
                if self.switch:
                    return False
                raise ConfigError(f"{self.flag} {raw!r} is not valid; choose one of: on, off") from None
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
        "--client",
        "client_type",
        "client",
        "requests (as HttpUser) or fasthttp (as FastHttpUser)",
        "HTTP client: requests (Locust HttpUser, urllib3 pool) or fasthttp (Locust FastHttpUser, "
        "geventhttpclient pool)",
        parse=ClientType,
        choices=_values(ClientType),
    ),
    Option(
        "--pool-size",
        "pool_size",
        "pool_size",
        "connections the pool keeps",
        "connections the pool keeps (requests: pool_maxsize, Go's MaxIdleConnsPerHost; fasthttp: concurrency)",
        parse=_whole(1),
        metavar="N",
    ),
    Option(
        "--pool-scope",
        "pool_scope",
        "pool_scope",
        "shared: one for all users, like one Go http.Client; user: one each",
        "shared: one pool for every user in the process, like one Go http.Client; user: one pool per user "
        "(Locust's default)",
        parse=PoolScope,
        choices=_values(PoolScope),
    ),
    Option(
        "--pool-full",
        "pool_full",
        "when_pool_full",
        "all busy: discard (open extras, close them on return) or block (wait)",
        "when every pooled connection is busy: discard (open extra connections, close them when the pool is "
        "full: Go's MaxIdleConnsPerHost) or block (wait for a free one: Go's MaxConnsPerHost)",
        parse=PoolFull,
        choices=_values(PoolFull),
    ),
    Option(
        "--pool-wait",
        "pool_wait_s",
        "pool_wait",
        "s a request may wait for a free connection",
        "seconds a request waits for a free connection of a full blocking pool before it fails; a run whose "
        "users wait that long ends failed",
        parse=_positive_seconds,
        metavar="SECONDS",
        show=_show_seconds,
    ),
    Option(
        "--request-timeout",
        "request_timeout_s",
        "request_timeout",
        "s a request may take (connect, or between two reads)",
        "seconds a request may wait to connect or for the server's next bytes before it fails (a server that "
        "accepts and never answers): like Locust's FastHttpUser network_timeout",
        parse=_positive_seconds,
        metavar="SECONDS",
        show=_show_seconds,
    ),
    Option(
        "--drain",
        "drain",
        "drain",
        "each body: full (read), close (close unread), none (leave open)",
        "what the client does with each response body: full (read to EOF, then close), close (close unread), "
        "none (leave it unread and open)",
        parse=Drain,
        choices=_values(Drain),
    ),
    Option(
        "--keep-alive",
        "keep_alive",
        "keep_alive",
        "unchecked: each request says Connection: close",
        "off sends 'Connection: close' with every request",
        parse=_on_off_word,
        show=_show_on_off,
        boolean=True,
    ),
    Option(
        "--think-time",
        "think_time_s",
        "think_time",
        "s between a user's requests",
        "seconds each user waits between requests",
        parse=_seconds,
        metavar="SECONDS",
        show=_show_seconds,
    ),
    Option(
        "--requests-per-user",
        "requests_per_user",
        "requests_per_user",
        "then the user stops; 0: no limit",
        "requests each user makes, then stops; the run ends when every user is done (0: no limit)",
        parse=_whole(0),
        metavar="N",
    ),
    Option(
        "--peer",
        "peer",
        "server",
        "started when no host is given: embedded, http.server, or nginx-…",
        "server started when no --host is given: embedded (the suite's target), http.server (python3 -m "
        "http.server, HTTP/1.0), nginx-keepalive, nginx-close (keepalive_timeout 0), nginx-low-requests "
        "(keepalive_requests 3)",
        parse=Peer,
        choices=_values(Peer),
    ),
    Option(
        "--target-mode",
        "target_mode",
        "target_mode",
        "embedded target: keepalive, close, http10, close-after:N, idle-timeout:S",
        f"embedded target only: {MODE_HELP}",
        parse=_target_mode,
        metavar="MODE",
    ),
    Option(
        "--target-tls",
        "target_tls",
        "target_https",
        "embedded target: HTTPS, self-signed",
        "embedded target only: on serves HTTPS with a self-signed certificate (fasthttp does not check it, as "
        "Locust's FastHttpUser; requests does, as HttpUser, and fails)",
        parse=_on_off_word,
        show=_show_on_off,
        boolean=True,
    ),
    Option(
        "--target-bind",
        "target_bind",
        "target_address",
        "embedded target: the address it listens on",
        "embedded target only: the address it listens on and workers connect to; 127.0.0.1 serves this host "
        "alone, so workers on other hosts need an address of this host they can reach",
        parse=bind_address,
        metavar="ADDRESS",
    ),
    Option(
        "--target-delay-ms",
        "target_delay_ms",
        "target_delay",
        "ms before each response (embedded target)",
        "embedded target only: wait before each response, ms",
        parse=_whole(0),
        metavar="MS",
    ),
    Option(
        "--target-body-bytes",
        "target_body_bytes",
        "target_body_bytes",
        "response body size (embedded target)",
        "embedded target only: response body size",
        parse=_whole(0),
        metavar="BYTES",
    ),
    Option(
        "--sample-interval",
        "sample_interval_s",
        "sample_interval",
        "s between two samples of the sockets",
        "seconds between two samples of the socket sidecar",
        parse=_positive_seconds,
        metavar="SECONDS",
        show=_show_seconds,
    ),
    Option(
        "--no-sidecar",
        "no_sidecar",
        "no_sidecar",
        "checked: no sockets.csv",
        "do not sample sockets during the test (no sockets.csv)",
        switch=True,
    ),
    Option(
        "--scenario",
        "scenario",
        "scenario",
        "the run's name in its folder, report and gate",
        "name of the run in its folder name, the report and the gate rules",
        parse=_name,
        metavar="NAME",
    ),
    Option(
        "--run-dir",
        "run_dir",
        "run_folder",
        "where run folders go",
        "folder that receives one run folder per test",
        parse=_run_dir,
        metavar="DIR",
    ),
)


def _port_number(text: str) -> int:
    if not str(text).isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port; use 1-65535 (0: no metrics server)")
    return int(text)


# Not scenario settings, and not in the web UI's form: where the suite serves /metrics.
# (flag, metavar, parse, default, help)
SERVER_OPTIONS: tuple[tuple[str, str, Callable[[str], Any], Any, str], ...] = (
    ("--metrics-port", "PORT", _port_number, 0,
     "serve Prometheus /metrics on this port in headless runs (the web UI serves it too); default 0: none"),
    ("--metrics-host", "ADDRESS", str, "127.0.0.1", "the address --metrics-port listens on; default 127.0.0.1"),
)  # fmt: skip
OPTIONS_BY_DEST: dict[str, Option] = {o.dest: o for o in OPTIONS}
OPTIONS_BY_ATTR: dict[str, Option] = {o.attr: o for o in OPTIONS}
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


def _argtype(option: Option) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = option.convert(text)
            return value if option.boolean else option.show(value)
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


def add_arguments(parser: Any, shown: type | None, lab_users: bool = True) -> None:
    """Add every option to Locust's parser; ``shown`` is the user class whose defaults are displayed.

    In the web UI's start form a field reads "<dest in words> (<ui>; default <default>)"; a choice
    is a drop-down and an on/off option a checkbox. A bad value exits 2 with one line, before any
    load starts. Without ``lab_users`` (only locustfiles measured as written), the options that act
    on LabUser scenarios alone stay off the form: a drop-down always sends a value.
    """
    for opt in OPTIONS:
        in_form = lab_users or opt.attr not in NOT_FOR_OWN_CLIENT
        default = default_for(opt, shown) if shown is not None else None
        shown_default = default if default is not None else "the user class's"
        if opt.boolean or opt.switch:
            # A boolean default makes a checkbox; None (several classes) leaves each class's own.
            value = None if default is None else opt.convert(default)
            shown_default = {True: "on", False: "off", None: "the user class's"}[value]
        help_text = f"{opt.ui}; default {shown_default}"
        if opt.switch:
            parser.add_argument(opt.flag, dest=opt.dest, action="store_true", default=value, env_var=opt.env_var,
                                help=help_text, include_in_web_ui=in_form)  # fmt: skip
            continue
        parser.add_argument(
            opt.flag,
            dest=opt.dest,
            type=_argtype(opt),
            choices=opt.choices,
            default=value if opt.boolean else default,
            env_var=opt.env_var,
            metavar=None if opt.choices else opt.value_name,
            help=help_text,
            include_in_web_ui=in_form,
        )
    for flag, metavar, parse, default, help_text in SERVER_OPTIONS:
        parser.add_argument(flag, metavar=metavar, type=parse, default=default,
                            env_var="LOCUST_" + flag.lstrip("-").replace("-", "_").upper(), help=help_text,
                            include_in_web_ui=False)  # fmt: skip
    # argparse prints its usage block before an error; the suite's contract is one line.
    parser.error = functools.partial(_exit_before_load, parser.prog)


# What a class measured as written does not take from the options: its client is its own.
NOT_FOR_OWN_CLIENT = ("client_type", *LAB_ONLY)


def lab_only_given(options: Any | None) -> list[str]:
    """The flags of the LabUser-only options that were given (command line, environment, conf, form)."""
    given: Mapping[str, Any] = vars(options) if options is not None else {}
    return [
        OPTIONS_BY_ATTR[a].flag for a in NOT_FOR_OWN_CLIENT if a in OPTIONS_BY_ATTR
        and given.get(OPTIONS_BY_ATTR[a].dest) not in (None, "")
    ]  # fmt: skip


def resolve(
    user_class: type, options: Any | None, scenario_default: str = "", own_client: ClientType | None = None
) -> ScenarioConfig:
    """Build the :class:`ScenarioConfig` for ``user_class``; options given win over its attributes.

    ``own_client``: the class is a locustfile's own HttpUser (``requests``) or FastHttpUser
    (``fasthttp``), measured as written: the LabUser-only settings do not act on it.
    """
    given: Mapping[str, Any] = vars(options) if options is not None else {}
    values: dict[str, Any] = {}
    for field in dataclasses.fields(ScenarioConfig):
        name = field.name
        if own_client is not None and name in (*NOT_FOR_OWN_CLIENT, "own_client", "client_settings"):
            continue
        opt = OPTIONS_BY_ATTR.get(name)
        raw = given.get(opt.dest) if opt is not None else None
        if raw is None or raw == "":
            raw = getattr(user_class, name, None)
        if raw is None or raw == "":
            continue
        values[name] = opt.convert(raw) if opt is not None else raw
    if not values.get("scenario"):
        values["scenario"] = _name(scenario_default or user_class.__name__)
    values["user_class"] = user_class.__name__
    if own_client is not None:
        values.update(client_type=own_client, own_client=True, client_settings=client_settings_of(user_class))
    cfg = ScenarioConfig(**values)
    check_combination(cfg)
    return cfg


# A locustfile's own client settings, recorded as they are (class attribute: recorded name).
_OWN_CLIENT_SETTINGS = {
    "requests": ("pool_manager",),
    "fasthttp": ("concurrency", "insecure", "network_timeout", "connection_timeout", "max_retries", "client_pool",
                 "ssl_context_factory"),
}  # fmt: skip


def client_settings_of(user_class: type) -> tuple[tuple[str, Any], ...]:
    """The client settings a measured class sets or inherits, as JSON values (objects by type name)."""
    fast = any(b.__name__ == "FastHttpUser" for b in user_class.__mro__)
    out = []
    for name in _OWN_CLIENT_SETTINGS["fasthttp" if fast else "requests"]:
        value = getattr(user_class, name, None)
        if value is not None and not isinstance(value, bool | int | float | str):
            value = getattr(value, "__qualname__", None) or type(value).__name__  # a function, or an object's type
        out.append((name, value))
    return tuple(out)


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
