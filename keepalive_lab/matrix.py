"""The matrix runner: every scenario of a TOML file, headless and isolated, then the report.

    python -m keepalive_lab.matrix FILE [--only NAME ...] [--check] [--junit FILE]
                                        [--run-dir DIR] [--out DIR]

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

As root, every scenario runs in its own private network namespace (``unshare --net``, loopback
up) with its target inside: counters start at zero and no run inherits another's TIME_WAIT.
Otherwise each run gets a fresh target port and its run.json records the counters' baseline.
A bad file is refused before anything runs: one line per problem, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keepalive_lab.cli import one_line_errors
from keepalive_lab.config import OPTIONS, ConfigError
from keepalive_lab.files import write_atomic, write_json_atomic
from keepalive_lab.lab import _port_range as lab_port_range
from keepalive_lab.lab import lab_command, signal_command
from keepalive_lab.peers import nginx_path

ROOT = Path(__file__).resolve().parent.parent
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
OPTION_BY_FLAG = {o.flag.lstrip("-"): o for o in OPTIONS}
DEFAULT_TIMEOUT_S = 120.0
# What a scenario may require: a check, and how to get it.
REQUIREMENTS = {
    "nginx": (lambda: nginx_path() is not None, "Debian's nginx-light (make tools installs it as root)"),
    "root": (lambda: os.geteuid() == 0, "root, for the lab's private network namespace"),
}
GRACE_S = 15.0  # after SIGTERM at the time bound, before SIGKILL


class MatrixError(ValueError):
    """Problems with a matrix file: one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Scenario:
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
    rules: dict[str, str] = field(default_factory=dict)
    requires: list[str] = field(default_factory=list)
    lab: tuple[tuple[int, int], int] | None = None  # (port range, tcp_tw_reuse): run inside the lab

    def missing(self) -> list[str]:
        """The required tools this machine lacks."""
        return [tool for tool in self.requires if not REQUIREMENTS[tool][0]()]

    def locust_args(self, run_dir: Path) -> list[str]:
        args = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(self.locustfile),
            "--headless",
            "--only-summary",
            "--loglevel",
            "WARNING",
            "--run-dir",
            str(run_dir),
            "--scenario",
            self.name,
        ]
        if self.users is not None:
            args += ["-u", str(self.users)]
        if self.spawn_rate is not None:
            args += ["-r", str(self.spawn_rate)]
        if self.duration_s is not None:
            args += ["-t", f"{self.duration_s:g}s"]
        for flag, value in self.options.items():
            opt = OPTION_BY_FLAG[flag]
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


def parse_matrix(text: str, source: str, base: Path = ROOT) -> list[Scenario]:
    """Parse and check a matrix file; raise :class:`MatrixError` listing every problem."""
    from analysis.check import RulesError, as_bounds, parse_rule

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
            name = f"#{i}"
        else:
            where = f"{source}: scenario {name!r}"
            if name in names:
                problems.append(f"{where}: the name is used twice")
            names.add(name)
            try:
                OPTION_BY_FLAG["scenario"].convert(name)
            except ConfigError as e:
                problems.append(f"{where}: name {str(e).split(' is not valid; ')[-1]}")
        for key in set(entry) - SCENARIO_KEYS:
            problems.append(f"{where}: unknown key {key!r}; use: {', '.join(sorted(SCENARIO_KEYS))}")
        locustfile = entry.get("locustfile")
        path = None
        if not isinstance(locustfile, str):
            problems.append(f"{where}: missing locustfile")
        else:
            path = (base / locustfile) if not Path(locustfile).is_absolute() else Path(locustfile)
            if not path.is_file():
                problems.append(f"{where}: locustfile {locustfile!r} does not exist")
        options = {**defaults.get("options", {}), **entry.get("options", {})}
        checked: dict[str, str] = {}
        for flag, value in options.items():
            if flag in RESERVED_OPTIONS:
                problems.append(f"{where}: option {flag!r} cannot be set here ({RESERVED_OPTIONS[flag]})")
                continue
            opt = OPTION_BY_FLAG.get(flag)
            if opt is None:
                valid = ", ".join(f for f in OPTION_BY_FLAG if f not in RESERVED_OPTIONS)
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
        rules = entry.get("rules", {})
        if not isinstance(rules, dict):
            problems.append(f'{where}: rules must be a table of metric = "OP VALUE"')
            rules = {}
        for metric, bound in rules.items():
            for b in as_bounds(bound):
                try:
                    parse_rule(name, metric, b, source)
                except RulesError as e:
                    problems.append(str(e))
        sc = Scenario(
            name=name,
            locustfile=path or Path("?"),
            options=checked,
            rules=dict(rules),
            expect=str(entry.get("expect", "")),
            description=str(entry.get("description", "")),
        )
        for key, minimum, whole in (
            ("users", 1, True),
            ("spawn_rate", 0.001, False),
            ("duration_s", 0.1, False),
            ("timeout_s", 1, False),
        ):
            value = entry.get(key, defaults.get(key) if key in DEFAULT_KEYS else None)
            if value is not None:
                checked_value = _number(where, key, value, problems, minimum, whole)
                if checked_value is not None:
                    setattr(sc, key, checked_value)
        lab = entry.get("lab")
        if lab is not None:
            if not isinstance(lab, dict) or set(lab) - {"port_range", "tw_reuse"}:
                problems.append(f'{where}: lab must be a table with port_range = "LO-HI" and tw_reuse = 0|1|2')
            else:
                try:
                    bounds = lab_port_range(str(lab.get("port_range", "40000-40999")))
                except argparse.ArgumentTypeError as e:
                    problems.append(f"{where}: lab.port_range {e}")
                    bounds = None
                tw_reuse = lab.get("tw_reuse", 0)
                if tw_reuse not in (0, 1, 2) or isinstance(tw_reuse, bool):
                    problems.append(f"{where}: lab.tw_reuse = {tw_reuse!r} is not valid; use 0, 1 or 2")
                elif bounds is not None:
                    sc.lab = (bounds, tw_reuse)
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
        scenarios.append(sc)
    if problems:
        raise MatrixError(problems)
    return scenarios


def can_isolate() -> bool:
    """Root with a working ``unshare --net``."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def in_namespace(cmd: list[str]) -> list[str]:
    """Run ``cmd`` in a new private network namespace with loopback up; it vanishes when cmd exits."""
    return ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *cmd]


@dataclass
class Outcome:
    scenario: Scenario
    folder: Path | None
    status: str
    seconds: float
    connections: Any = None
    note: str = ""


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _mark_failed(folder: Path, reason: str) -> None:
    path = folder / "run.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return
    record["status"] = "failed"
    record["status_reason"] = reason
    write_json_atomic(path, record)


class Runner:
    """Runs scenarios one at a time, each in its own process group (and namespace when root)."""

    def __init__(self, run_dir: Path, isolate: bool) -> None:
        self.run_dir = run_dir
        self.isolate = isolate
        self.current: subprocess.Popen | None = None
        self.interrupted = False

    def run(self, sc: Scenario) -> Outcome:
        scenario_dir = self.run_dir / sc.name
        cmd = sc.locust_args(scenario_dir)
        if sc.lab is not None:
            cmd = lab_command(cmd, *sc.lab)
        elif self.isolate and sc.isolated:
            cmd = in_namespace(cmd)
        t0 = time.monotonic()
        log = scenario_dir.with_suffix(".log")
        scenario_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            self.current = proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                start_new_session=True,  # Ctrl-C reaches the matrix only; it stops the run itself
            )
            note = ""
            try:
                proc.wait(timeout=sc.timeout_s)
            except subprocess.TimeoutExpired:
                note = f"stopped at its time bound ({sc.timeout_s:g} s)"
                self.stop_current()
            except KeyboardInterrupt:
                self.interrupted = True
                note = "interrupted by Ctrl-C"
                self.stop_current()
            finally:
                self.current = None
        seconds = time.monotonic() - t0
        folders = (
            sorted(p for p in scenario_dir.glob("*") if (p / "run.json").exists()) if scenario_dir.exists() else []
        )
        folder = folders[-1] if folders else None
        if folder is None:
            return Outcome(sc, None, "failed", seconds, note=note or f"locust exited {proc.returncode}; see {log}")
        if note.startswith("stopped"):
            _mark_failed(folder, f"matrix: {note}")
        run = json.loads((folder / "run.json").read_text())
        target = folder / "target.json"
        conns = (
            json.loads(target.read_text())["connections_accepted"]
            if target.exists()
            else ((run.get("client_connections") or {}).get("opened"))
        )
        return Outcome(sc, folder, run.get("status", "?"), seconds, conns, note)

    def stop_current(self) -> None:
        """SIGINT to Locust alone (it finishes its folder), then SIGKILL to its group after a grace.

        Only Locust gets the SIGINT: its target and sidecar must live until it has written the
        folder; they die with it.
        """
        proc = self.current
        if proc is None or proc.poll() is not None:
            return
        signal_command(proc, signal.SIGINT)
        try:
            proc.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            proc.wait()
        _kill_group(proc, signal.SIGKILL)  # anything of the group still left (target, sidecar)


def write_rules(scenarios: list[Scenario], path: Path) -> None:
    lines = []
    for sc in scenarios:
        if sc.rules:
            lines.append(f'[scenarios."{sc.name}"]')
            lines += [f"{metric} = {json.dumps(bound)}" for metric, bound in sc.rules.items()]
            lines.append("")
    write_atomic(path, "\n".join(lines))


def run_matrix(args: argparse.Namespace, scenarios: list[Scenario]) -> int:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = Path(args.run_dir) / f"matrix-{stamp}"
    isolate = can_isolate()
    how = "each in a private network namespace" if isolate else "not isolated (needs root): a fresh target port each"
    print(f"Running {len(scenarios)} scenarios from {args.file}, {how}; run folders in {run_dir}", flush=True)
    runner = Runner(run_dir, isolate)
    outcomes: list[Outcome] = []
    t0 = time.monotonic()
    for i, sc in enumerate(scenarios, 1):
        print(f"[{i}/{len(scenarios)}] {sc.name:<34}", end="", flush=True)
        missing = sc.missing()
        if missing:
            why = "; ".join(f"needs {REQUIREMENTS[m][1]}" for m in missing)
            outcomes.append(Outcome(sc, None, "skipped", 0.0, note=why))
            print(f"{'':>18}  skipped      {why}", flush=True)
            continue
        outcome = runner.run(sc)
        outcomes.append(outcome)
        conns = "" if outcome.connections is None else f"{outcome.connections:,} connections"
        print(f"{conns:>18}  {outcome.status:<11} {outcome.seconds:5.1f} s  {outcome.note}", flush=True)
        if runner.interrupted:
            print("Interrupted: the current run was stopped; reporting what finished.", flush=True)
            break
    print(f"Matrix took {time.monotonic() - t0:.0f} s.", flush=True)
    folders = [o.folder for o in outcomes if o.folder is not None]
    code = 130 if runner.interrupted else 0
    if not folders:
        print("No run folder to report.", file=sys.stderr)
        return code or 1
    out = Path(args.out)
    report = subprocess.run(
        [sys.executable, "-m", "analysis", "report", *map(str, folders), "-o", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if report.returncode != 0:
        sys.stderr.write(report.stderr)
        return code or report.returncode
    print_summary(outcomes, out)
    if args.check and not runner.interrupted:
        rules = run_dir / "rules.toml"
        write_rules([o.scenario for o in outcomes if o.status != "skipped"], rules)
        cmd = [sys.executable, "-m", "analysis", "check", *map(str, folders), "--rules", str(rules)]
        if args.junit:
            cmd += ["--junit", str(args.junit)]
        print("\nGate (the seed results every scenario must reproduce):", flush=True)
        gate = subprocess.run(cmd, cwd=ROOT)
        failed = [o.scenario.name for o in outcomes if o.status == "failed"]
        if failed:
            print(f"failed runs: {', '.join(failed)}")
        skipped = [o.scenario.name for o in outcomes if o.status == "skipped"]
        if skipped:
            print(f"skipped, their rules not checked: {', '.join(skipped)}")
        return gate.returncode or (1 if failed else 0)
    return code


def print_summary(outcomes: list[Outcome], out: Path) -> None:
    import pandas as pd

    summary = pd.read_csv(out / "summary.csv").set_index("run_id")
    print(
        f"\n{'scenario':<34}{'requests':>9}{'connections':>13}{'conn/req':>10}{'client TW':>11}{'server TW':>11}"
        f"  expected"
    )
    for o in outcomes:
        if o.folder is None or o.folder.name not in summary.index:
            print(f"{o.scenario.name:<34}{'':>9}{'':>13}{'':>10}{'':>11}{'':>11}  {o.scenario.expect}  [{o.status}]")
            continue
        r = summary.loc[o.folder.name]
        print(
            f"{o.scenario.name:<34}{r['requests']:>9,.0f}{r['connections_opened']:>13,.0f}"
            f"{r['connections_per_request']:>10.2f}{r['peak_client_time_wait']:>11,.0f}"
            f"{r['peak_server_time_wait']:>11,.0f}  {o.scenario.expect}"
        )
    lab = [
        o
        for o in outcomes
        if o.folder is not None
        and o.folder.name in summary.index
        and not pd.isna(summary.loc[o.folder.name, "observed_seconds_to_exhaustion"])
    ]
    if any(o.scenario.lab for o in outcomes if o.folder is not None):
        print(
            f"\n{'lab scenario':<34}{'ports':>7}{'tw_reuse':>9}{'conn/s':>8}{'errno 99':>10}"
            f"{'projected s':>13}{'observed s':>12}{'apart':>7}"
        )
        for o in outcomes:
            if o.scenario.lab is None or o.folder is None or o.folder.name not in summary.index:
                continue
            r = summary.loc[o.folder.name]
            (lo, hi), reuse = o.scenario.lab
            hit = o in lab
            churns = r["connections_per_request"] > 0.1
            proj = (
                f"{r['seconds_to_exhaustion']:.2f}" if churns and not pd.isna(r["seconds_to_exhaustion"]) else "never"
            )
            obs = f"{r['observed_seconds_to_exhaustion']:.2f}" if hit else "none"
            apart = f"{r['projection_error_pct']:.0f}%" if hit and not pd.isna(r["projection_error_pct"]) else ""
            print(
                f"{o.scenario.name:<34}{hi - lo + 1:>7,}{reuse:>9}{r['churn_per_s']:>8,.0f}"
                f"{r['addr_not_available_errors']:>10,.0f}{proj:>13}{obs:>12}{apart:>7}"
            )
    print(f"\nReport: {out / 'index.html'}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m keepalive_lab.matrix",
        description="Run every scenario of a matrix file headless (isolated in a private network namespace "
        "when root), then write the HTML report; with --check, gate on each scenario's rules.",
    )
    p.add_argument("file", type=Path, help="matrix TOML file, e.g. matrices/seed.toml")
    p.add_argument("--only", nargs="+", metavar="NAME", default=[], help="run only these scenarios")
    p.add_argument("--check", action="store_true", help="check the scenarios' rules; exit 1 if one fails")
    p.add_argument("--junit", type=Path, help="with --check: also write JUnit XML here")
    p.add_argument("--run-dir", default="runs", help="where the matrix's run folders go (default runs)")
    p.add_argument("--out", default="reports", help="where the report goes (default reports)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = one_line_errors(build_parser())
    args = parser.parse_args(argv)
    try:
        text = args.file.read_text(encoding="utf-8")
    except OSError as e:
        parser.error(f"{str(args.file)!r}: cannot be read ({e.strerror}); give a matrix TOML file")
    try:
        scenarios = parse_matrix(text, str(args.file))
    except MatrixError as e:
        for problem in e.problems:
            sys.stderr.write(f"{parser.prog}: error: {problem}\n")
        return 2
    if args.only:
        unknown = [n for n in args.only if n not in {s.name for s in scenarios}]
        if unknown:
            parser.error(f"--only {unknown[0]!r} is not in {args.file}; names: {', '.join(s.name for s in scenarios)}")
        scenarios = [s for s in scenarios if s.name in args.only]
    return run_matrix(args, scenarios)


if __name__ == "__main__":
    sys.exit(main())
