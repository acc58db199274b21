"""``python -m analysis``: the edges of the pipeline (files in, files and exit codes out).

    python -m analysis report [RUN_DIR ...] [-o OUT_DIR] [--baseline DIR]
    python -m analysis check  [RUN_DIR ...] --rules FILE [--junit FILE] [--baseline DIR]

With no RUN_DIR, every run under ``runs/`` is taken; a RUN_DIR that is not a run folder stands
for the run folders under it. ``report`` writes ``OUT_DIR/summary.csv``,
``OUT_DIR/summary_by_name.csv``, ``OUT_DIR/hosts.csv``, ``OUT_DIR/index.html`` and
``OUT_DIR/plotly.min.js`` (default ``reports/``), each whole, and a copy of each run's Locust
report as ``OUT_DIR/runs/<run>/locust.html``: the folder holds everything its page links to.
``--baseline DIR``: earlier runs (a folder of run folders) each scenario's newest run is compared
with; without it, the scenario's run before the newest.
``check`` exits 0 when every rule holds, 1 when one fails, 2 on bad input.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from typing import Any

from analysis.check import RulesError, evaluate, format_table, junit_xml, parse_rules
from analysis.compare import regressions, verdicts
from analysis.load import Loaded, find_run_dirs, load_runs
from analysis.metrics import summarize_all
from analysis.render import PLOTLY_JS, render_html
from keepalive_lab.schema import (
    HOSTS_CSV,
    LOCUST_HTML,
    REPORT_DIR,
    RUN_DIR,
    RUN_JSON,
    SUMMARY_BY_NAME_CSV,
    SUMMARY_CSV,
    Status,
    by_name_csv,
    write_atomic,
)

DEFAULT_RUNS = Path(RUN_DIR)
RUN_DIRS_HELP = "run folders, or folders that hold them, such as a matrix's (default: all in runs/)"
DEFAULT_OUT = Path(REPORT_DIR)


def _usage_error(parser: argparse.ArgumentParser, message: str) -> None:
    """A bad argument: one line, no usage block, exit 2."""
    sys.stderr.write(f"{parser.prog}: error: {message}\n")
    sys.exit(2)


def _fail(message: str) -> int:
    sys.stderr.write(f"python -m analysis: error: {message}\n")
    return 2


def _run_folders(path: Path) -> list[Path]:
    """``path`` itself when it is a run folder; else the run folders under it (a matrix's, or runs/),
    or ``path`` alone when it holds none (its loading then says what is wrong)."""
    if (path / RUN_JSON).exists() or not path.is_dir():
        return [path]
    return find_run_dirs(path) or [path]


def _load(run_dirs: list[Path]) -> Loaded | None:
    folders = [f for d in run_dirs for f in _run_folders(d)] or find_run_dirs(DEFAULT_RUNS)
    if not folders:
        where = "the given folders" if run_dirs else f"{DEFAULT_RUNS}/"
        sys.stderr.write(f"python -m analysis: error: no run folders in {where}; run a scenario first (make demo)\n")
        return None
    loaded = load_runs(folders)
    for skip in loaded.skipped:
        sys.stderr.write(f"skipped: {skip}\n")
    return loaded


def single_file_report(folder: Path) -> str | None:
    """One run's report as one HTML file, plotly inside (what the web UI offers for download), or
    None when the folder does not load."""
    from plotly.offline import get_plotlyjs

    loaded = load_runs([folder])
    if loaded.runs.empty:
        return None
    summary, hosts = summarize_all(loaded.runs, loaded.stats, loaded.samples_by_run, loaded.failures)
    verdict = verdicts(summary, loaded.runs)
    return render_html(summary, verdict, loaded.runs, loaded.samples_by_run, [], str(folder), plotly_js=get_plotlyjs(),
                       hosts=hosts)  # fmt: skip


def load_baseline(path: Path | None) -> tuple[Any, str | None]:
    """The summary of the runs in ``--baseline DIR`` (None without it), or the one-line reason it cannot be read."""
    if path is None:
        return None, None
    if not path.is_dir():
        return None, f"--baseline {str(path)!r} is not a folder; give a folder of earlier run folders"
    loaded = load_runs(_run_folders(path))
    if loaded.runs.empty:
        return None, f"--baseline {str(path)!r} holds no run folder that loads; give a folder of earlier run folders"
    return summarize_all(loaded.runs, loaded.stats, loaded.samples_by_run, loaded.failures)[0], None


def copy_locust_reports(runs: Any, out_dir: Path) -> dict[str, str]:
    """Each run's locust.html copied to OUT_DIR/runs/<run>/, whole; run id -> its link from the page."""
    links = {}
    for run in runs.to_dict("records"):
        source = Path(run["path"]) / LOCUST_HTML
        if source.is_file():
            relative = f"runs/{run['run_id']}/{LOCUST_HTML}"
            write_atomic(out_dir / relative, source.read_bytes())
            links[run["run_id"]] = relative
    return links


def report(run_dirs: list[Path], out_dir: Path, baseline: Path | None = None) -> int:
    t0 = time.perf_counter()
    base, problem = load_baseline(baseline)
    if problem:
        return _fail(problem)
    loaded = _load(run_dirs)
    if loaded is None:
        return 2
    if loaded.runs.empty:
        return _fail("no run folder could be loaded (see the skipped lines above)")
    summary, hosts = summarize_all(loaded.runs, loaded.stats, loaded.samples_by_run, loaded.failures)
    verdict = verdicts(summary, loaded.runs)
    changes = regressions(summary, base)
    out_dir.mkdir(parents=True, exist_ok=True)
    links = copy_locust_reports(loaded.runs, out_dir)
    against = f"the baseline {baseline}" if baseline is not None else "the previous run of each scenario"
    page = render_html(summary, verdict, loaded.runs, loaded.samples_by_run, loaded.skipped, str(out_dir), hosts=hosts,
                       changes=changes, against=against, locust_links=links)  # fmt: skip
    write_atomic(out_dir / SUMMARY_CSV, summary.to_csv(index=False))
    write_atomic(out_dir / HOSTS_CSV, hosts.to_csv(index=False))
    by_name = [{"run_id": r["run_id"], **row} for r in loaded.runs.to_dict("records") for row in r["by_name"] or []]
    write_atomic(out_dir / SUMMARY_BY_NAME_CSV, by_name_csv(by_name, leading=("run_id",)))
    js = out_dir / PLOTLY_JS
    if not js.exists():
        from plotly.offline import get_plotlyjs

        write_atomic(js, get_plotlyjs())
    write_atomic(out_dir / "index.html", page)
    table = summary.merge(verdict, on="run_id")
    for r in table.itertuples():
        print(f"{r.run_id}: {r.verdict}")
    worse = changes[changes["worse"] & changes["material"] & (changes["metric"] == "connections_per_request")]
    for r in worse.itertuples():
        print(f"{r.scenario}: connections per request rose from {r.previous:.3f} to {r.current:.3f} "
              f"({r.delta_pct:+.1f}%) against {r.previous_run_id}")  # fmt: skip
    print(
        f"report: {out_dir / 'index.html'} ({len(summary)} run{'' if len(summary) == 1 else 's'}, "
        f"{len(loaded.skipped)} skipped, {time.perf_counter() - t0:.1f} s)"
    )
    return 0


def check(run_dirs: list[Path], rules_path: Path, junit: Path | None, allowed: tuple[str, ...] = ("completed",),
          baseline: Path | None = None) -> int:  # fmt: skip
    try:
        text = rules_path.read_text(encoding="utf-8")
    except OSError as e:
        return _fail(f"--rules {str(rules_path)!r}: cannot be read ({e.strerror}); give a TOML rules file")
    try:
        rules = parse_rules(text, str(rules_path))
    except RulesError as e:
        return _fail(str(e))
    base, problem = load_baseline(baseline)
    if problem:
        return _fail(problem)
    loaded = _load(run_dirs)
    if loaded is None:
        return 2
    summary, hosts = summarize_all(loaded.runs, loaded.stats, loaded.samples_by_run, loaded.failures)
    try:
        results = evaluate(rules, summary, allowed, hosts, regressions(summary, base))
    except RulesError as e:
        return _fail(str(e))
    print(format_table(results))
    if junit is not None:
        write_atomic(junit, junit_xml(results))
    return 0 if bool(results["passed"].all()) else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis", description="Reports and gates over keepalive-lab runs.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{report,check}")
    r = sub.add_parser("report", help="write the HTML comparison report and summary.csv")
    r.add_argument("run_dirs", nargs="*", type=Path, metavar="RUN_DIR", help=RUN_DIRS_HELP)
    r.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT, help="output folder (default reports/)")
    r.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="earlier run folders to compare each scenario's newest run with (default: its previous run)",
    )
    c = sub.add_parser("check", help="check gate rules; exit 0 pass, 1 fail, 2 bad input")
    c.add_argument("run_dirs", nargs="*", type=Path, metavar="RUN_DIR", help=RUN_DIRS_HELP)
    c.add_argument("--rules", type=Path, required=True, help='TOML rules file ([scenarios.NAME] metric = "<= 1")')
    c.add_argument("--junit", type=Path, help="also write JUnit XML here")
    c.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="earlier run folders that METRIC.delta and METRIC.delta_pct rules compare with (default: "
        "each scenario's previous run)",
    )
    c.add_argument(
        "--allow-status",
        nargs="+",
        choices=[str(s) for s in Status if s not in (Status.RUNNING, Status.COMPLETED)],
        default=[],
        metavar="STATUS",
        help="also check runs with these statuses (stopped, interrupted, stuck, degraded, failed); by default a rule "
        "checked against a run that did not complete fails",
    )
    for parser in (p, r, c):
        parser.error = functools.partial(_usage_error, parser)  # type: ignore[method-assign]
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "report":
        if args.out.exists() and not args.out.is_dir():
            return _fail(f"-o {str(args.out)!r} is a file; give a folder for the report")
        return report(args.run_dirs, args.out, args.baseline)
    return check(args.run_dirs, args.rules, args.junit, ("completed", *args.allow_status), args.baseline)


if __name__ == "__main__":
    sys.exit(main())
