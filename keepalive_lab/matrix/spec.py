"""Reading a matrix file: its scenarios, checked before anything runs.

Matrix file::

    [defaults]                       # optional; merged into every scenario
    timeout_s = 60
    options = { think-time = "0.05" }

    [[scenarios]]
    name = "sequential-drain-full"   # the run's --scenario, and the name the rules match
    locustfile = "locustfiles/sequential.py"
    users = 1                        # -u (optional; the locustfile's default otherwise)
    spawn_rate = 10                  # -r (optional)
    duration_s = 30                  # -t (optional; a --requests-per-user budget ends runs too)
    timeout_s = 60                   # the run is stopped and marked failed after this
    expect = "1 connection"          # shown next to the result
    options = { drain = "full" }     # the suite's options, by flag name without --
    rules = { connections_opened = "== 1" }   # gate rules on summary.csv metrics
    lab = { port_range = "40000-40499", tw_reuse = 0 }   # run inside the lab (root)
    requires = ["nginx"]             # skipped, with the reason, where this is missing

A locustfile path is taken relative to the current folder, else to the matrix file's folder or
its parent. A bad file is refused with one line per problem (:class:`MatrixError`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.check import RulesError, as_bounds, parse_rule
from keepalive_lab.config import ConfigError
from keepalive_lab.lab import parse_port_range
from keepalive_lab.options import OPTIONS_BY_FLAG
from keepalive_lab.peers import nginx_path

SCENARIO_KEYS = {
    "name",
    "locustfile",
    "users",
    "spawn_rate",
    "duration_s",
    "timeout_s",
    "expect",
    "options",
    "rules",
    "description",
    "isolated",
    "requires",
    "lab",
}
DEFAULT_KEYS = {"timeout_s", "options", "spawn_rate", "isolated"}
RESERVED_OPTIONS = {"run-dir": "the matrix sets it", "scenario": "the matrix sets it from name"}
DEFAULT_TIMEOUT_S = 120.0
# What a scenario may require: a check, and how to get it.
REQUIREMENTS: dict[str, tuple[Callable[[], bool], str]] = {
    "nginx": (lambda: nginx_path() is not None, "Debian's nginx-light (make tools installs it as root)"),
    "root": (lambda: os.geteuid() == 0, "root, for the lab's private network namespace"),
}


class MatrixError(ValueError):
    """Problems with a matrix file: one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Scenario:
    """One scenario of the file, checked; ``locust_args`` is the command that runs it."""

    name: str
    locustfile: Path
    users: int | None = None
    spawn_rate: float | None = None
    duration_s: float | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    expect: str = ""
    description: str = ""
    isolated: bool = True
    options: dict[str, str] = field(default_factory=dict)
    rules: dict[str, Any] = field(default_factory=dict)
    requires: list[str] = field(default_factory=list)
    lab: tuple[tuple[int, int], int] | None = None  # (port range, tcp_tw_reuse): run inside the lab

    def missing(self) -> list[str]:
        """The required tools this machine lacks."""
        return [tool for tool in self.requires if not REQUIREMENTS[tool][0]()]

    def locust_args(self, run_dir: Path) -> list[str]:
        args = [sys.executable, "-m", "locust", "-f", str(self.locustfile), "--headless", "--only-summary",
                "--loglevel", "WARNING", "--run-dir", str(run_dir), "--scenario", self.name]  # fmt: skip
        if self.users is not None:
            args += ["-u", str(self.users)]
        if self.spawn_rate is not None:
            args += ["-r", str(self.spawn_rate)]
        if self.duration_s is not None:
            args += ["-t", f"{self.duration_s:g}s"]
        for flag, value in self.options.items():
            opt = OPTIONS_BY_FLAG[flag]
            args += [opt.flag] if opt.switch else [opt.flag, value]
        return args


def _number(where: str, key: str, value: Any, problems: list[str], minimum: float = 0, whole: bool = False) -> Any:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= minimum
    if ok and whole and not isinstance(value, int):
        ok = False
    if not ok:
        kind = "a whole number" if whole else "a number"
        problems.append(f"{where}: {key} = {value!r} is not valid; use {kind} >= {minimum:g}")
        return None
    return value


def find_locustfile(text: str, matrix_file: Path) -> Path | None:
    """The locustfile a matrix names: relative to the current folder, else to the matrix file's folder
    or its parent."""
    path = Path(text)
    if path.is_absolute():
        return path if path.is_file() else None
    for base in (Path.cwd(), matrix_file.parent, matrix_file.parent.parent):
        if (base / path).is_file():
            return (base / path).resolve()
    return None


def _options(where: str, options: dict[str, Any], problems: list[str]) -> dict[str, str]:
    checked: dict[str, str] = {}
    for flag, value in options.items():
        if flag in RESERVED_OPTIONS:
            problems.append(f"{where}: option {flag!r} cannot be set here ({RESERVED_OPTIONS[flag]})")
            continue
        opt = OPTIONS_BY_FLAG.get(flag)
        if opt is None:
            valid = ", ".join(f for f in OPTIONS_BY_FLAG if f not in RESERVED_OPTIONS)
            problems.append(f"{where}: unknown option {flag!r}; valid options: {valid}")
            continue
        text_value = str(value).lower() if isinstance(value, bool) else str(value)
        try:
            opt.convert(text_value)
        except ConfigError as e:
            problems.append(f"{where}: {e}")
            continue
        if opt.switch and text_value not in ("true", "on", "1", "yes"):
            continue
        checked[flag] = text_value
    return checked


def _lab(where: str, lab: Any, problems: list[str]) -> tuple[tuple[int, int], int] | None:
    if not isinstance(lab, dict) or set(lab) - {"port_range", "tw_reuse"}:
        problems.append(f'{where}: lab must be a table with port_range = "LO-HI" and tw_reuse = 0|1|2')
        return None
    try:
        bounds = parse_port_range(str(lab.get("port_range", "40000-40999")))
    except argparse.ArgumentTypeError as e:
        problems.append(f"{where}: lab.port_range {e}")
        return None
    tw_reuse = lab.get("tw_reuse", 0)
    if tw_reuse not in (0, 1, 2) or isinstance(tw_reuse, bool):
        problems.append(f"{where}: lab.tw_reuse = {tw_reuse!r} is not valid; use 0, 1 or 2")
        return None
    return bounds, tw_reuse


def _scenario(entry: dict[str, Any], where: str, defaults: dict[str, Any], source: Path,
              problems: list[str]) -> Scenario:  # fmt: skip
    name = entry.get("name")
    for key in set(entry) - SCENARIO_KEYS:
        problems.append(f"{where}: unknown key {key!r}; use: {', '.join(sorted(SCENARIO_KEYS))}")
    locustfile = entry.get("locustfile")
    path = None
    if not isinstance(locustfile, str):
        problems.append(f"{where}: missing locustfile")
    else:
        path = find_locustfile(locustfile, source)
        if path is None:
            problems.append(
                f"{where}: locustfile {locustfile!r} does not exist (looked in the current folder and beside "
                f"{source}); give a path relative to one of them"
            )
    options = _options(where, {**defaults.get("options", {}), **entry.get("options", {})}, problems)
    rules = entry.get("rules", {})
    if not isinstance(rules, dict):
        problems.append(f'{where}: rules must be a table of metric = "OP VALUE"')
        rules = {}
    for metric, bound in rules.items():
        for b in as_bounds(bound):
            try:
                parse_rule(str(name), metric, b, str(source))
            except RulesError as e:
                problems.append(str(e))
    sc = Scenario(name=str(name), locustfile=path or Path("?"), options=options, rules=dict(rules),
                  expect=str(entry.get("expect", "")), description=str(entry.get("description", "")))  # fmt: skip
    for key, minimum, whole in (("users", 1, True), ("spawn_rate", 0.001, False), ("duration_s", 0.1, False),
                                ("timeout_s", 1, False)):  # fmt: skip
        value = entry.get(key, defaults.get(key) if key in DEFAULT_KEYS else None)
        if value is not None:
            checked_value = _number(where, key, value, problems, minimum, whole)
            if checked_value is not None:
                setattr(sc, key, checked_value)
    if entry.get("lab") is not None:
        sc.lab = _lab(where, entry["lab"], problems)
        if sc.lab is not None:
            sc.requires = ["root"]
    requires = entry.get("requires", [])
    if not isinstance(requires, list) or any(r not in REQUIREMENTS for r in requires):
        problems.append(f"{where}: requires = {requires!r} is not valid; use a list of: {', '.join(REQUIREMENTS)}")
    else:
        sc.requires = sorted({*sc.requires, *requires})
    isolated = entry.get("isolated", defaults.get("isolated", True))
    if not isinstance(isolated, bool):
        problems.append(f"{where}: isolated = {isolated!r} is not valid; use true or false")
    else:
        sc.isolated = isolated
    return sc


def parse_matrix(text: str, source: str | Path) -> list[Scenario]:
    """Parse and check a matrix file's text; raise :class:`MatrixError` listing every problem."""
    source = Path(source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise MatrixError([f"{source}: not valid TOML ({e})"]) from None
    problems: list[str] = []
    unknown_top = set(data) - {"defaults", "scenarios"}
    if unknown_top:
        problems.append(f"{source}: unknown table {sorted(unknown_top)[0]!r}; use [defaults] and [[scenarios]]")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        problems.append(f"{source}: [defaults] must be a table")
        defaults = {}
    for key in set(defaults) - DEFAULT_KEYS:
        problems.append(f"{source}: [defaults] has unknown key {key!r}; use: {', '.join(sorted(DEFAULT_KEYS))}")
    entries = data.get("scenarios")
    if not isinstance(entries, list) or not entries:
        problems.append(f"{source}: no [[scenarios]] entries")
        raise MatrixError(problems)
    scenarios, names = [], set()
    for i, entry in enumerate(entries):
        where = f"{source}: scenarios[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be a table")
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            problems.append(f"{where}: missing name")
            entry = {**entry, "name": f"#{i}"}
        else:
            where = f"{source}: scenario {name!r}"
            if name in names:
                problems.append(f"{where}: the name is used twice")
            names.add(name)
            try:
                OPTIONS_BY_FLAG["scenario"].convert(name)
            except ConfigError as e:
                problems.append(f"{where}: name {str(e).split(' is not valid; ')[-1]}")
        scenarios.append(_scenario(entry, where, defaults, source, problems))
    if problems:
        raise MatrixError(problems)
    return scenarios
