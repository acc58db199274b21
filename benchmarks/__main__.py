"""``python -m benchmarks [NAME ...]``: run the named benchmarks (default: all) and print their tables."""

from __future__ import annotations

import argparse
import importlib
import sys

BENCHMARKS = {
    "target": "benchmarks.target_throughput",
    "users": "benchmarks.user_overhead",
    "sidecar": "benchmarks.sidecar_cost",
    "report": "benchmarks.report_build",
    "memory": "benchmarks.report_memory",
    "churn": "benchmarks.churn_rate",
    "webui": "benchmarks.web_ui_cost",
    "measure": "benchmarks.measure_overhead",
    "cluster": "benchmarks.cluster_cost",
    "soak": "benchmarks.soak",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.exit(
            2,
            f"python -m benchmarks: error: unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}\n",
        )
    failed = 0
    for name in args.names or list(BENCHMARKS):
        print(f"\n== {name} ==", flush=True)
        module = importlib.import_module(BENCHMARKS[name])
        failed += 0 if module.run() else 1
    print(f"\n{failed} benchmark goal(s) missed" if failed else "\nevery benchmark goal met")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
