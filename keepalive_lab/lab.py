"""The port-exhaustion lab: run a command in a private network namespace with a narrow port range.

    python -m keepalive_lab.lab [--port-range LO-HI] [--tw-reuse 0|1|2] -- COMMAND ARGS...

The command runs in a new network namespace (``unshare --net``) with loopback up,
``net.ipv4.ip_local_port_range`` set to LO-HI (default 40000-40999: 1,000 ports) and
``net.ipv4.tcp_tw_reuse`` (default 0: a port in TIME_WAIT stays taken for its full 60 s). A
client that does not reuse connections then runs out of ephemeral ports after about
HI - LO + 1 connections, and ``connect()`` fails with EADDRNOTAVAIL (errno 99) within seconds,
without touching the host's own ports or sockets.

It exits with the command's exit code. It refuses with one line and exit code 2 when it is not
root, cannot create a namespace, or is given a bad option. The namespace lives exactly as long
as the command: ``unshare --fork --kill-child`` kills whatever is left in it when the command
or the lab exits, and on Ctrl-C the command gets SIGINT first so that it can finish its files.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys

from keepalive_lab.cli import one_line_errors
from keepalive_lab.netns import exit_code, in_namespace, signal_group, stop_group, why_no_namespace

PROG = "python -m keepalive_lab.lab"
DEFAULT_RANGE = (40000, 40999)
DEFAULT_TW_REUSE = 0
GRACE_S = 15.0
ENV_MARK = "KEEPALIVE_LAB_LAB"  # set in the command's environment: "LO-HI tw_reuse"


def parse_port_range(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)-(\d+)", text.strip())
    if not m or not (1024 <= int(m.group(1)) <= int(m.group(2)) <= 65535):
        raise argparse.ArgumentTypeError(f"{text!r} is not a port range; use LO-HI with 1024 <= LO <= HI <= 65535")
    lo, hi = int(m.group(1)), int(m.group(2))
    return lo, hi


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Run COMMAND in a private network namespace (loopback up) with a narrow ephemeral "
        "port range and the given tcp_tw_reuse, so port exhaustion (errno 99) is reached in seconds "
        "without touching the host. Needs root. Exits with COMMAND's exit code.",
    )
    lo, hi = DEFAULT_RANGE
    p.add_argument(
        "--port-range",
        type=parse_port_range,
        default=DEFAULT_RANGE,
        metavar="LO-HI",
        help=f"net.ipv4.ip_local_port_range in the namespace (default {lo}-{hi}: {hi - lo + 1} ports)",
    )
    p.add_argument(
        "--tw-reuse",
        type=int,
        choices=(0, 1, 2),
        default=DEFAULT_TW_REUSE,
        help="net.ipv4.tcp_tw_reuse: 0 off (default), 1 on, 2 loopback only",
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    return p  # fmt: skip


def refuse(message: str) -> int:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return 2


def run(command: list[str], port_range: tuple[int, int] = DEFAULT_RANGE, tw_reuse: int = DEFAULT_TW_REUSE) -> int:
    """Run ``command`` in the lab and return its exit code (128+N if a signal N ended it)."""
    env = {**os.environ, ENV_MARK: f"{port_range[0]}-{port_range[1]} {tw_reuse}"}
    cmd = in_namespace(command, port_range=port_range, tw_reuse=tw_reuse, fork=True)
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)

    def forward(signum: int, _frame: object) -> None:
        # The signal goes to the command so it can finish its files; the namespace and anything
        # left in it go when unshare exits.
        signal_group(proc, signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            code = stop_group(proc, signal.SIGINT, GRACE_S)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        signal_group(proc, signal.SIGKILL)  # anything of the session still left
    return exit_code(code)


def main(argv: list[str] | None = None) -> int:
    parser = one_line_errors(build_parser())
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        return refuse("no command; give one after --, e.g. -- locust -f locustfiles/exhaustion.py --headless")
    why = why_no_namespace()
    if why:
        return refuse(why)
    if shutil.which(command[0]) is None and not os.path.exists(command[0]):
        return refuse(f"command {command[0]!r} not found")
    return run(command, args.port_range, args.tw_reuse)


if __name__ == "__main__":
    sys.exit(main())
