"""Printing a matrix's results and gating them: the progress lines, the report, the tables, the gate.

Every number printed comes from the analysis (:mod:`analysis`): the progress line's connection
count from its metrics, the tables from the report's ``summary.csv``, the gate from
``python -m analysis check``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from analysis.load import load_runs
from analysis.metrics import connections
from keepalive_lab.matrix.runner import Outcome
from keepalive_lab.matrix.spec import REQUIREMENTS, Scenario
from keepalive_lab.schema import SUMMARY_CSV, write_atomic

NAME_WIDTH = 34


def start_line(i: int, n: int, sc: Scenario) -> str:
    return f"[{i}/{n}] {sc.name:<{NAME_WIDTH}}"


def skipped_note(sc: Scenario) -> str:
    return "; ".join(f"needs {REQUIREMENTS[m][1]}" for m in sc.missing())


def outcome_line(outcome: Outcome) -> str:
    """The rest of a scenario's progress line: connections, status, time, note."""
    conns = ""
    if outcome.folder is not None:
        loaded = load_runs([outcome.folder])
        if len(loaded.runs):
            opened = connections(loaded.runs, loaded.samples)["connections_opened"].iloc[0]
            conns = "" if pd.isna(opened) else f"{opened:,.0f} connections"
    return f"{conns:>18}  {outcome.status:<11} {outcome.seconds:5.1f} s  {outcome.note}"


def write_report(folders: list[Path], out: Path) -> int:
    """``python -m analysis report`` over the matrix's run folders; its exit code."""
    report = subprocess.run(
        [sys.executable, "-m", "analysis", "report", *map(str, folders), "-o", str(out)],
        capture_output=True,
        text=True,
    )
    if report.returncode != 0:
        sys.stderr.write(report.stderr)
    return report.returncode


def print_summary(outcomes: list[Outcome], out: Path) -> None:
    """The results table (and the lab's, when the matrix has lab scenarios), from ``summary.csv``."""
    summary = pd.read_csv(out / SUMMARY_CSV).set_index("run_id")
    w = NAME_WIDTH
    print(f"\n{'scenario':<{w}}{'requests':>9}{'connections':>12}{'conn/req':>9}{'closes/req':>11}{'client TW':>10}"
          f"{'server TW':>10}{'projected':>15}  expected")  # fmt: skip
    for o in outcomes:
        if o.folder is None or o.folder.name not in summary.index:
            print(f"{o.scenario.name:<{w}}{'':>76}  {o.scenario.expect}  [{o.status}]")
            continue
        r = summary.loc[o.folder.name]
        print(
            f"{o.scenario.name:<{w}}{_n(r['requests']):>9}{_n(r['connections_opened']):>12}"
            f"{_f(r['connections_per_request']):>9}{_f(r['client_closes_per_request']):>11}"
            f"{_n(r['peak_client_time_wait']):>10}{_n(r['peak_server_time_wait']):>10}{projected(r):>15}"
            f"  {o.scenario.expect}"
        )
    lab = [
        o for o in outcomes if o.scenario.lab is not None and o.folder is not None and o.folder.name in summary.index
    ]
    if lab:
        print(f"\n{'lab scenario':<{w}}{'ports':>7}{'tw_reuse':>9}{'churn/s':>8}{'errno 99':>10}"
              f"{'projected s':>13}{'observed s':>12}{'apart':>7}")  # fmt: skip
        for o in lab:
            assert o.folder is not None and o.scenario.lab is not None
            r = summary.loc[o.folder.name]
            (lo, hi), reuse = o.scenario.lab
            hit = not pd.isna(r["observed_seconds_to_exhaustion"])
            secs = r["seconds_to_exhaustion"]
            proj = "never" if pd.isna(secs) else f"{secs:.2f}"
            obs = f"{r['observed_seconds_to_exhaustion']:.2f}" if hit else "none"
            apart = f"{r['projection_error_pct']:.0f}%" if hit and not pd.isna(r["projection_error_pct"]) else ""
            churn = "" if pd.isna(r["churn_per_s"]) else f"{r['churn_per_s']:,.0f}"
            print(
                f"{o.scenario.name:<{w}}{hi - lo + 1:>7,}{reuse:>9}{churn:>8}"
                f"{r['addr_not_available_errors']:>10,.0f}{proj:>13}{obs:>12}{apart:>7}"
            )
    print(f"\nReport: {out / 'index.html'}")


def _n(value: float) -> str:
    return "" if pd.isna(value) else f"{value:,.0f}"


def _f(value: float) -> str:
    return "" if pd.isna(value) else f"{value:.2f}"


def projected(r: pd.Series) -> str:
    """The client-port projection in a few characters: "out in 21 s", "12%", or "never", as the verdict
    has it (with tcp_tw_reuse holding the churn: "never (reuse)")."""
    limit = r.get("tw_reuse_limit_per_s")
    if not pd.isna(r["seconds_to_exhaustion"]) and not pd.isna(limit) and r["churn_per_s"] < limit:
        return "never (reuse)"
    if not pd.isna(r["seconds_to_exhaustion"]):
        return (
            f"out in {r['seconds_to_exhaustion']:.0f} s"
            if r["seconds_to_exhaustion"] >= 10
            else (f"out in {r['seconds_to_exhaustion']:.2f} s")
        )
    pct = r["projected_port_use_pct"]
    return "never" if pd.isna(pct) or pct < 0.5 else f"{pct:.0f}%"


def write_rules(scenarios: list[Scenario], path: Path) -> None:
    """The scenarios' rules as a ``python -m analysis check`` rules file."""
    lines = []
    for sc in scenarios:
        if sc.rules:
            lines.append(f'[scenarios."{sc.name}"]')
            lines += [f"{metric} = {json.dumps(bound)}" for metric, bound in sc.rules.items()]
            lines.append("")
    write_atomic(path, "\n".join(lines))


def gate(outcomes: list[Outcome], rules: Path, junit: Path | None) -> int:
    """Check every scenario's rules against its run; 0 when all hold and no run failed."""
    folders = [o.folder for o in outcomes if o.folder is not None]
    write_rules([o.scenario for o in outcomes if o.status != "skipped"], rules)
    cmd = [sys.executable, "-m", "analysis", "check", *map(str, folders), "--rules", str(rules)]
    if junit:
        cmd += ["--junit", str(junit)]
    print("\nGate (the seed results every scenario must reproduce):", flush=True)
    code = subprocess.run(cmd).returncode
    failed = [o.scenario.name for o in outcomes if o.status == "failed"]
    if failed:
        print(f"failed runs: {', '.join(failed)}")
    skipped = [o.scenario.name for o in outcomes if o.status == "skipped"]
    if skipped:
        print(f"skipped, their rules not checked: {', '.join(skipped)}")
    return code or (1 if failed else 0)
