"""Command-line conventions shared by the suite's commands."""

from __future__ import annotations

import argparse
import sys


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make ``parser`` report a bad argument in one line (no usage block) and exit 2."""

    def error(message: str) -> None:
        sys.stderr.write(f"{parser.prog}: error: {message}\n")
        sys.exit(2)

    parser.error = error  # type: ignore[method-assign]
    return parser
