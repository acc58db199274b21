"""The socket sidecar: what the TCP stack does while a test runs, sampled into ``sockets.csv``.

    python -m keepalive_lab.sidecar --port PORT --out FILE [--interval SECONDS] [--count N]
                                    [--method auto|netlink|psutil] [-- COMMAND ARGS...]

Every interval it takes one sample of the TCP sockets of this network namespace that have the
target port on either end, and appends it as one CSV row, flushed at once (a crash loses at most
the row being written). It stops on SIGINT/SIGTERM, after ``--count`` samples, when its parent
dies (within 2 s), or, given a COMMAND, one sample after the command exits, with its exit code.

Columns: :class:`keepalive_lab.schema.SocketSample` (the format of ``sockets.csv``).

Two samplers give identical rows for the same sockets: ``netlink`` (Linux sock_diag with a
kernel-side port filter, see :mod:`keepalive_lab.sockdiag`) and ``psutil``
(``psutil.net_connections``, portable, ~15x slower at 14,000 sockets).
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import IO, Protocol

from keepalive_lab import kernel
from keepalive_lab.cli import one_line_errors
from keepalive_lab.config import DEFAULTS
from keepalive_lab.netns import die_with_parent, exit_code, managed_child, terminate, watch_parent
from keepalive_lab.schema import SOCKETS_COLUMNS, SidecarState, SocketSample

METHODS = ("auto", "netlink", "psutil")
DEFAULT_INTERVAL_S = DEFAULTS.sample_interval_s


class Sampler(Protocol):
    name: str

    def sockets(self, port: int) -> dict[str, int]: ...


def _counts(client_states: list[str], server_states: list[str], client_local_ports: set[int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for side, states in (("client", client_states), ("server", server_states)):
        est = states.count("established")
        tw = states.count("time_wait")
        cw = states.count("close_wait")
        out |= {
            f"{side}_established": est,
            f"{side}_time_wait": tw,
            f"{side}_close_wait": cw,
            f"{side}_other": len(states) - est - tw - cw,
        }
    out["ports_in_use"] = len(client_local_ports)
    return out


class NetlinkSampler:
    """Linux fast path: sock_diag dumps filtered by port in the kernel, decoded with numpy."""

    name = "netlink"

    def __init__(self, families: str = "both") -> None:
        import numpy as np

        from keepalive_lab.sockdiag import TCP_CLOSE_WAIT, TCP_ESTABLISHED, TCP_TIME_WAIT, SockDiag

        self._np = np
        self._diag = SockDiag()
        self._states = (TCP_ESTABLISHED, TCP_TIME_WAIT, TCP_CLOSE_WAIT)
        self._families = {"4": (socket.AF_INET,), "6": (socket.AF_INET6,)}.get(
            families, (socket.AF_INET, socket.AF_INET6)
        )

    def sockets(self, port: int) -> dict[str, int]:
        np = self._np
        state, lport, rport = self._diag.dump(port, self._families)
        out: dict[str, int] = {}
        client = rport == port
        for side, mask in (("client", client), ("server", lport == port)):
            by_state = np.bincount(state[mask], minlength=16)
            est, tw, cw = (int(by_state[s]) for s in self._states)
            out |= {
                f"{side}_established": est,
                f"{side}_time_wait": tw,
                f"{side}_close_wait": cw,
                f"{side}_other": int(by_state.sum()) - est - tw - cw,
            }
        out["ports_in_use"] = int(np.count_nonzero(np.bincount(lport[client], minlength=65536)))
        return out


class PsutilSampler:
    """Portable path: ``psutil.net_connections('tcp')``."""

    name = "psutil"

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._names = {
            psutil.CONN_ESTABLISHED: "established",
            psutil.CONN_TIME_WAIT: "time_wait",
            psutil.CONN_CLOSE_WAIT: "close_wait",
        }

    def sockets(self, port: int) -> dict[str, int]:
        psutil = self._psutil
        client: list[str] = []
        server: list[str] = []
        ports: set[int] = set()
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN:
                continue
            state = self._names.get(conn.status, "other")
            if conn.raddr and conn.raddr.port == port:
                client.append(state)
                ports.add(conn.laddr.port)
            if conn.laddr and conn.laddr.port == port:
                server.append(state)
        return _counts(client, server, ports)


def make_sampler(method: str = "auto", families: str = "both") -> Sampler:
    """The sampler for ``method``; ``auto`` is netlink on Linux, psutil elsewhere or if netlink fails."""
    if method in ("auto", "netlink"):
        try:
            return NetlinkSampler(families)
        except (OSError, ImportError):
            if method == "netlink":
                raise
    return PsutilSampler()


def sample(sampler: Sampler, port: int, host: str | None = None) -> SocketSample:
    """Take one sample: the sockets of ``port`` plus the kernel's counters."""
    t0 = time.perf_counter()
    ts = time.time()
    socks = sampler.sockets(port)
    snmp = kernel.snmp_tcp()
    row = SocketSample(
        ts=round(ts, 3),
        host=host or socket.gethostname(),
        **socks,
        port_range=kernel.port_range_size(),
        active_opens=snmp.get("ActiveOpens", 0),
        passive_opens=snmp.get("PassiveOpens", 0),
        attempt_fails=snmp.get("AttemptFails", 0),
        estab_resets=snmp.get("EstabResets", 0),
        tw_total=kernel.sockstat_tw(),
        sample_ms=0.0,
    )
    return replace(row, sample_ms=round((time.perf_counter() - t0) * 1000, 3))


class CsvWriter:
    """Appends samples to a CSV file, one flushed row each; writes the header to a new file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file: IO[str] = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(SOCKETS_COLUMNS)
            self._file.flush()
        self.rows = 0

    def write(self, row: SocketSample) -> None:
        self._csv.writerow(row.row())
        self._file.flush()
        self.rows += 1

    def close(self) -> None:
        self._file.close()


class Sidecar:
    """The sampling loop: every ``interval_s`` a sample, until stopped or ``count`` rows are written."""

    def __init__(
        self,
        port: int,
        out: str | os.PathLike[str],
        interval_s: float = DEFAULT_INTERVAL_S,
        count: int = 0,
        method: str = "auto",
        families: str = "both",
    ) -> None:
        self.port = port
        self.interval_s = interval_s
        self.count = count
        self.sampler = make_sampler(method, families)
        self.writer = CsvWriter(out)
        self.stop_event = threading.Event()
        self.host = socket.gethostname()

    def take(self) -> None:
        self.writer.write(sample(self.sampler, self.port, self.host))

    def run(self, until: threading.Event | None = None) -> None:
        """Sample until ``until`` (default: ``stop_event``) is set; the last sample is taken after it."""
        done = until if until is not None else self.stop_event
        next_at = time.monotonic()
        while True:
            finished = done.is_set()
            self.take()
            if finished or (self.count and self.writer.rows >= self.count):
                return
            next_at = max(next_at + self.interval_s, time.monotonic())
            done.wait(next_at - time.monotonic())


class SidecarProcess:
    """The sidecar as a child process of the load generator (the plugin starts one per test)."""

    def __init__(
        self,
        port: int,
        out: str | os.PathLike[str],
        interval_s: float = DEFAULT_INTERVAL_S,
        method: str = "auto",
        family: str = "both",
    ) -> None:
        self.port = port
        self.out = Path(out)
        self.interval_s = interval_s
        cmd = [
            sys.executable,
            "-P",
            "-m",
            "keepalive_lab.sidecar",
            "--port",
            str(port),
            "--out",
            str(out),
            "--interval",
            str(interval_s),
            "--method",
            method,
            "--family",
            family,
            "--parent-pid",
            str(os.getpid()),
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=managed_child,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_first_row(self, timeout_s: float, sleep: Callable[[float], object] = time.sleep) -> bool:
        """Wait until the CSV holds its first sample (header plus one row); False on time-out or exit."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.alive():
            try:
                if self.out.read_bytes().count(b"\n") >= 2:
                    return True
            except OSError:
                pass
            sleep(0.02)
        return False

    def stop(self, timeout_s: float = 5.0) -> SidecarState:
        """Stop it (one last sample is taken) and report: status, exit code, rows, error."""
        died_early = self.proc.poll() is not None
        terminate(self.proc, timeout_s)
        err = self.proc.stderr.read().decode(errors="replace").strip() if self.proc.stderr else ""
        if self.proc.stderr:
            self.proc.stderr.close()
        try:
            rows = max(0, sum(1 for _ in open(self.out, encoding="utf-8")) - 1)
        except OSError:
            rows = 0
        ok = not died_early and self.proc.returncode == 0
        return SidecarState(
            status="ok" if ok else "failed",
            exit_code=self.proc.returncode,
            error="" if ok else (err.splitlines()[-1] if err else "the sidecar exited during the test"),
            rows=rows,
            interval_s=self.interval_s,
            port=self.port,
        )


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port; use 1-65535")
    return int(text)


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds; use 0 or more (0: back to back)")
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; use 0 (no limit) or more")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m keepalive_lab.sidecar",
        description="Sample the TCP sockets to and from PORT (states, TIME_WAIT, ports in use, kernel "
        "counters) into a CSV, one flushed row per sample. With a COMMAND after --, run it, sample "
        "while it runs, and exit with its exit code.",
    )
    p.add_argument("--port", type=_port, required=True, help="the target's TCP port")
    p.add_argument("--out", type=Path, required=True, help="CSV file to append to (created with a header)")
    p.add_argument(
        "--interval",
        type=_interval,
        default=DEFAULT_INTERVAL_S,
        help=f"seconds between samples (default {DEFAULT_INTERVAL_S}; 0: back to back)",
    )
    p.add_argument("--count", type=_count, default=0, help="stop after N samples (default 0: no limit)")
    p.add_argument(
        "--method",
        choices=METHODS,
        default="auto",
        help="netlink (Linux fast path), psutil (portable), auto (default: netlink if possible)",
    )
    p.add_argument(
        "--family",
        choices=("4", "6", "both"),
        default="both",
        help="IP versions to look at (default both; 4 halves the cost for an IPv4 target)",
    )
    p.add_argument("--parent-pid", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...: a client to run and watch")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = one_line_errors(build_parser())
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.out.is_dir():
        parser.error(f"--out {str(args.out)!r} is a folder; give a CSV file path")
    try:
        car = Sidecar(args.port, args.out, args.interval, args.count, args.method, args.family)
    except OSError as e:
        parser.error(f"cannot start sampling ({e}); try --method psutil or check the --out path")

    def stop(*_: object) -> None:
        car.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    if not args.parent_pid:  # run by the plugin, it leaves a terminal's Ctrl-C to Locust
        signal.signal(signal.SIGINT, stop)
    if args.parent_pid:
        watch_parent(args.parent_pid, stop)
    if not command:
        try:
            car.run()
        finally:
            car.writer.close()
        return 0
    try:
        child = subprocess.Popen(command, preexec_fn=die_with_parent)
    except OSError as e:
        car.writer.close()
        parser.error(f"cannot run {command[0]!r}: {e.strerror}")
    signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    signal.signal(signal.SIGINT, lambda *_: child.send_signal(signal.SIGINT))
    exited = threading.Event()
    waiter = threading.Thread(target=lambda: (child.wait(), exited.set()), daemon=True)
    waiter.start()
    try:
        car.run(until=exited)
    finally:
        car.writer.close()
    waiter.join()
    return exit_code(child.returncode)


if __name__ == "__main__":
    sys.exit(main())
