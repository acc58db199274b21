"""Stage 4', check: gate rules over the summary, for CI.

A rules file is TOML, one table per scenario, one bound per metric::

    [scenarios.sequential-drain-full]
    connections_opened = "== 1"
    addr_not_available_errors = "== 0"

    [scenarios."concurrent-*"]          # a glob over scenario names
    connections_per_request = "<= 0.5"
    connections_opened = [">= 10", "<= 60"]   # several bounds on one metric

Operators: ``==``, ``!=``, ``<=``, ``<``, ``>=``, ``>``. Metrics are the columns of
``summary.csv``, and ``hosts.NAME`` for a column of ``hosts.csv``: the bound must hold on every
host of the run (one result per host)::

    [scenarios."cluster-*"]
    "hosts.projected_port_use_pct" = "< 50"     # no client host past half its own range

and ``NAME.delta`` or ``NAME.delta_pct`` for the change of a ``summary.csv`` column against the
scenario's previous run, or the newest run of the scenario in ``--baseline DIR`` (the report's
regression view, :func:`analysis.compare.regressions`)::

    [scenarios."*"]
    "connections_per_request.delta_pct" = "<= 10"   # may not rise by more than 10 %

A delta rule with nothing to compare with is not measured, and fails.
 Each rule is checked against the newest run of each scenario it matches. A rule
checked against a run that did not complete (stopped, interrupted, stuck, degraded, failed) fails, unless
that status is allowed (``--allow-status``): its numbers do not describe the run that was asked for.
An unknown metric or operator, a rule that matches no run, or a broken file is a
:class:`RulesError` (exit code 2 at the edge).
"""

from __future__ import annotations

import fnmatch
import math
import operator
import re
import tomllib
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

import pandas as pd

from keepalive_lab.schema import HOSTS_NUMERIC, SUMMARY_NUMERIC

OPERATORS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
}
HOST_PREFIX = "hosts."
DELTA_SUFFIXES = (".delta_pct", ".delta")
NUMERIC_METRICS = (
    SUMMARY_NUMERIC
    + tuple(HOST_PREFIX + c for c in HOSTS_NUMERIC)
    + tuple(c + suffix for suffix in DELTA_SUFFIXES for c in SUMMARY_NUMERIC)
)
RESULT_COLUMNS = ("scenario", "run_id", "status", "metric", "bound", "measured", "passed", "host")
COMPLETED = "completed"


class RulesError(ValueError):
    """A rules file or rule that cannot be checked; ``str()`` is the one line shown."""


@dataclass(frozen=True)
class Rule:
    scenario: str
    metric: str
    op: str
    value: float

    @property
    def bound(self) -> str:
        return f"{self.op} {self.value:g}"


def parse_rules(text: str, source: str = "rules") -> list[Rule]:
    """Parse a TOML rules text; raise :class:`RulesError` naming what is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RulesError(f"{source}: not valid TOML ({e})") from None
    scenarios = data.get("scenarios")
    if not isinstance(scenarios, dict) or not scenarios:
        raise RulesError(f"{source}: no [scenarios.NAME] tables")
    rules = []
    for scenario, bounds in scenarios.items():
        if not isinstance(bounds, dict):
            raise RulesError(f'{source}: scenarios.{scenario} must be a table of metric = "OP VALUE"')
        for metric, bound in bounds.items():
            rules.extend(parse_rule(scenario, metric, b, source) for b in as_bounds(bound))
    return rules


def as_bounds(bound: object) -> list[object]:
    """A rule's bound, or a list of bounds that must all hold (``[">= 450", "<= 500"]``)."""
    return list(bound) if isinstance(bound, list) and bound else [bound]


def parse_rule(scenario: str, metric: str, bound: object, source: str = "rules") -> Rule:
    where = f"{source}: scenarios.{scenario}.{metric}"
    if metric not in NUMERIC_METRICS:
        raise RulesError(f"{where}: unknown metric {metric!r}; use one of: {', '.join(NUMERIC_METRICS)}")
    m = re.fullmatch(r"\s*(==|!=|<=|>=|<|>)\s*(-?[0-9.]+(?:[eE][-+]?\d+)?)\s*", str(bound))
    if not isinstance(bound, str) or not m:
        raise RulesError(f'{where}: bound {bound!r} is not valid; write it as a string like "<= 0.01" or "== 0"')
    return Rule(scenario, metric, m.group(1), float(m.group(2)))


def latest_per_scenario(summary: pd.DataFrame) -> pd.DataFrame:
    return summary.sort_values("start", kind="stable").groupby("scenario", as_index=False).tail(1)


def evaluate(
    rules: list[Rule],
    summary: pd.DataFrame,
    allowed: tuple[str, ...] = (COMPLETED,),
    hosts: pd.DataFrame | None = None,
    changes: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One result row per (rule, matched run), or per (rule, matched run, host) for a ``hosts.`` metric;
    raises RulesError for a rule that matches no run.

    A rule passes only when its bound holds and the run's status is one of ``allowed``. A
    ``hosts.`` rule on a run with no host row is not measured, and fails.
    """
    latest = latest_per_scenario(summary)
    rows = []
    for rule in rules:
        matched = latest[[fnmatch.fnmatchcase(s, rule.scenario) for s in latest["scenario"]]]
        if matched.empty:
            known = ", ".join(sorted(latest["scenario"])) or "none"
            raise RulesError(f"rule for scenario {rule.scenario!r} matches no run (scenarios: {known})")
        for _, run in matched.iterrows():
            status = str(run["status"])
            if rule.metric.endswith(DELTA_SUFFIXES):
                base, _, kind = rule.metric.rpartition(".")
                mine = changes[(changes["run_id"] == run["run_id"]) & (changes["metric"] == base)] if (
                    changes is not None and len(changes)) else pd.DataFrame()  # fmt: skip
                measured_by_host = [("", mine[kind].iloc[0] if len(mine) else math.nan)]
            elif rule.metric.startswith(HOST_PREFIX):
                column = rule.metric.removeprefix(HOST_PREFIX)
                mine = hosts[hosts["run_id"] == run["run_id"]] if hosts is not None else pd.DataFrame()
                measured_by_host = [(str(h), v) for h, v in zip(mine["host"], mine[column], strict=True)] if len(
                    mine) else [("", math.nan)]  # fmt: skip
            else:
                measured_by_host = [("", run[rule.metric])]
            for host, value in measured_by_host:
                measured = float(value) if not pd.isna(value) else math.nan
                holds = not math.isnan(measured) and OPERATORS[rule.op](measured, rule.value)
                rows.append((run["scenario"], run["run_id"], status, rule.metric, rule.bound, measured,
                             holds and status in allowed, host))  # fmt: skip
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def format_table(results: pd.DataFrame) -> str:
    """The printed table: rule, measured value, pass or fail."""
    lines = [f"{'scenario':<34}{'status':<12}{'metric':<30}{'bound':>12}{'measured':>14}  result"]
    for r in results.itertuples():
        measured = "missing" if math.isnan(r.measured) else f"{r.measured:,.4g}"
        result = "pass" if r.passed else "FAIL"
        if not r.passed and r.status != COMPLETED and _holds(r):
            result = f"FAIL (run {r.status})"
        metric = f"{r.metric} [{r.host}]" if r.host else r.metric
        lines.append(f"{r.scenario:<34}{r.status:<12}{metric:<30}{r.bound:>12}{measured:>14}  {result}")
    failed = int((~results["passed"]).sum())
    lines.append(f"{len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)


def _holds(r: object) -> bool:
    op, value = r.bound.split(" ", 1)  # type: ignore[attr-defined]
    measured = r.measured  # type: ignore[attr-defined]
    return not math.isnan(measured) and OPERATORS[op](measured, float(value))


def junit_xml(results: pd.DataFrame) -> str:
    """JUnit XML: one testcase per rule and run, a <failure> for each rule that does not hold."""
    failed = int((~results["passed"]).sum())
    cases = []
    for r in results.itertuples():
        name = quoteattr(f"{r.metric} {r.bound}" + (f" [{r.host}]" if r.host else ""))
        body = ""
        if not r.passed:
            msg = f"measured {r.measured:g}, expected {r.bound}" if not math.isnan(r.measured) else "not measured"
            if r.status != COMPLETED:
                msg += f"; the run is {r.status}, not completed"
            body = f"<failure message={quoteattr(msg)}>{escape(msg)} (run {escape(r.run_id)})</failure>"
        cases.append(f"  <testcase classname={quoteattr('keepalive_lab.' + r.scenario)} name={name}>{body}</testcase>")
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<testsuite name="keepalive-lab check" tests="{len(results)}" failures="{failed}">\n'
        + "\n".join(cases)
        + "\n</testsuite>\n"
    )
