"""``python -m keepalive_lab.matrix``: run a matrix file's scenarios, then report and gate them."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from keepalive_lab.cli import one_line_errors
from keepalive_lab.matrix.runner import Outcome, Runner
from keepalive_lab.matrix.spec import MatrixError, Scenario, parse_matrix
from keepalive_lab.matrix.summary import gate, outcome_line, print_summary, skipped_note, start_line, write_report
from keepalive_lab.netns import can_isolate
from keepalive_lab.schema import REPORT_DIR, RUN_DIR

PROG = "python -m keepalive_lab.matrix"


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
        print(start_line(i, len(scenarios), sc), end="", flush=True)
        if sc.missing():
            outcomes.append(Outcome(sc, None, "skipped", 0.0, note=skipped_note(sc)))
            print(f"{'':>18}  skipped      {outcomes[-1].note}", flush=True)
            continue
        outcomes.append(runner.run(sc))
        print(outcome_line(outcomes[-1]), flush=True)
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
    report_code = write_report(folders, out)
    if report_code != 0:
        return code or report_code
    print_summary(outcomes, out)
    if args.check and not runner.interrupted:
        return gate(outcomes, run_dir / "rules.toml", args.junit)
    return code


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Run every scenario of a matrix file headless (isolated in a private network namespace "
        "when root), then write the HTML report; with --check, gate on each scenario's rules.",
    )
    p.add_argument("file", type=Path, help="matrix TOML file, e.g. matrices/seed.toml")
    p.add_argument("--only", nargs="+", metavar="NAME", default=[], help="run only these scenarios")
    p.add_argument("--check", action="store_true", help="check the scenarios' rules; exit 1 if one fails")
    p.add_argument("--junit", type=Path, help="with --check: also write JUnit XML here")
    p.add_argument("--run-dir", default=RUN_DIR, help=f"where the matrix's run folders go (default {RUN_DIR})")
    p.add_argument("--out", default=REPORT_DIR, help=f"where the report goes (default {REPORT_DIR})")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = one_line_errors(build_parser())
    args = parser.parse_args(argv)
    try:
        text = args.file.read_text(encoding="utf-8")
    except OSError as e:
        parser.error(f"{str(args.file)!r}: cannot be read ({e.strerror}); give a matrix TOML file")
    try:
        scenarios = parse_matrix(text, args.file)
    except MatrixError as e:
        for problem in e.problems:
            sys.stderr.write(f"{PROG}: error: {problem}\n")
        return 2
    if args.only:
        unknown = [n for n in args.only if n not in {s.name for s in scenarios}]
        if unknown:
            parser.error(f"--only {unknown[0]!r} is not in {args.file}; names: {', '.join(s.name for s in scenarios)}")
        scenarios = [s for s in scenarios if s.name in args.only]
    return run_matrix(args, scenarios)


if __name__ == "__main__":
    sys.exit(main())
