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
from typing import IO, Any, Protocol

from keepalive_lab import feed, kernel
from keepalive_lab.cli import one_line_errors
from keepalive_lab.config import DEFAULTS
from keepalive_lab.netns import die_with_parent, exit_code, host_label, managed_child, terminate, watch_parent
from keepalive_lab.schema import SOCKETS_COLUMNS, SidecarState, SocketSample

METHODS = ("auto", "netlink", "psutil")
DEFAULT_INTERVAL_S = DEFAULTS.sample_interval_s


TIME_WAIT_S = 60.0
# A fed local port still marks server-side sockets as the run's own this long after it was fed:
# the server's TIME_WAIT of a connection the server closed outlives the client's socket by 60 s.
PORT_MEMORY_S = TIME_WAIT_S + 10.0
ESTABLISHED, TIME_WAIT, CLOSE_WAIT = 1, 6, 8  # Linux TCP states
SETTLE_S = 1.0  # the last sample waits this long at most for closing sockets to settle
# A told socket is forgotten once no sample has seen it for this long: a socket can be missed by
# one sample (it changes state between the dump of TIME_WAIT sockets and that of the others).
FORGET_S = 2.0


class Sampler(Protocol):
    name: str

    def sockets(self, port: int) -> tuple[Any, Any, Any, Any]:
        """(state, local port, remote port, key) arrays: every non-listening TCP socket with ``port``
        on either end. ``key`` identifies a socket across samples: its cookie, or its 4-tuple."""
        ...

    exact_keys: bool  # True when keys are socket cookies (what clients feed)


class NetlinkSampler:
    """Linux fast path: sock_diag dumps filtered by port in the kernel, decoded with numpy."""

    name = "netlink"
    exact_keys = True

    def __init__(self, families: str = "both") -> None:
        from keepalive_lab.sockdiag import SockDiag

        self._diag = SockDiag()
        self._families = {"4": (socket.AF_INET,), "6": (socket.AF_INET6,)}.get(
            families, (socket.AF_INET, socket.AF_INET6)
        )

    def sockets(self, port: int) -> tuple[Any, Any, Any, Any]:
        return self._diag.dump(port, self._families)


class PsutilSampler:
    """Portable path: ``psutil.net_connections('tcp')``; a socket's key is its 4-tuple."""

    name = "psutil"
    exact_keys = False

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._states = {
            psutil.CONN_ESTABLISHED: ESTABLISHED,
            psutil.CONN_TIME_WAIT: TIME_WAIT,
            psutil.CONN_CLOSE_WAIT: CLOSE_WAIT,
        }

    def sockets(self, port: int) -> tuple[Any, Any, Any, Any]:
        import numpy as np

        psutil = self._psutil
        rows = []
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN or not conn.laddr or not conn.raddr:
                continue
            if conn.raddr.port == port or conn.laddr.port == port:
                four = (conn.laddr.ip, conn.laddr.port, conn.raddr.ip, conn.raddr.port)
                key = hash(four) & 0x7FFF_FFFF_FFFF_FFFF
                rows.append((self._states.get(conn.status, 0), conn.laddr.port, conn.raddr.port, key))
        if not rows:
            return np.zeros(0, np.uint8), np.zeros(0, np.uint16), np.zeros(0, np.uint16), np.zeros(0, np.uint64)
        state, lport, rport, key = zip(*rows, strict=True)
        return (np.array(state, np.uint8), np.array(lport, np.uint16), np.array(rport, np.uint16),
                np.array(key, np.uint64))  # fmt: skip


def make_sampler(method: str = "auto", families: str = "both") -> Sampler:
    """The sampler for ``method``; ``auto`` is netlink on Linux, psutil elsewhere or if netlink fails."""
    if method in ("auto", "netlink"):
        try:
            return NetlinkSampler(families)
        except (OSError, ImportError):
            if method == "netlink":
                raise
    return PsutilSampler()


class Attribution:
    """Which sockets are this run's own, sample after sample, and what they did since the first one.

    The first sample is the baseline: its sockets are pre-existing. When the run's clients tell
    (:mod:`keepalive_lab.feed`) which connections they open, exactly those are the run's own,
    and on the server side the sockets whose remote port is one of theirs. When nobody tells, the
    run's own are all the sockets that were not there at the first sample.
    """

    def __init__(self, exact_keys: bool) -> None:
        import numpy as np

        self._np = np
        self.exact_keys = exact_keys
        self.baseline: Any = None
        self.told = False  # a client has told of a connection: attribution by its reports
        self._own = _Keys()  # the run's sockets (cookies), as told, until no sample sees them
        self._at_end = _Keys()  # the run's sockets closed because the test or their user ended
        self._port_told_at = np.zeros(65536, np.float64)
        self._prev_client_tw = np.zeros(0, np.uint64)
        self._churned_keys = np.zeros(0, np.uint64)  # counted as churn within FORGET_S, and when
        self._churned_at = np.zeros(0, np.float64)
        self._prev_server_tw = np.zeros(0, np.uint64)
        self.client_churned = 0
        self.client_at_end = 0
        self.server_entered = 0

    def tell(self, kind: bytes, port: int, cookie: int, now: float) -> None:
        """A client's report (see :mod:`keepalive_lab.feed`)."""
        self.told = True
        if kind == feed.OPENED:
            self._port_told_at[port] = now
            if cookie:
                self._own.add(cookie, now)
        elif kind == feed.CLOSED_AT_END and cookie:
            self._at_end.add(cookie, now)

    def count(self, state: Any, lport: Any, rport: Any, key: Any, port: int, now: float) -> dict[str, int]:
        np = self._np
        if self.baseline is None:
            self.baseline = np.unique(key)
        client, server = rport == port, lport == port
        pre = np.isin(key, self.baseline) if len(self.baseline) else np.zeros(len(key), bool)
        if not self.told:
            own_client, own_server = client & ~pre, server & ~pre
        else:
            recent = self._port_told_at >= now - PORT_MEMORY_S
            own_server = server & ~pre & recent[rport]
            if self.exact_keys:
                own_client = client & self._own.seen(key, now)
            else:
                own_client = client & ~pre & recent[lport]
        out = _by_state("client", state[own_client]) | _by_state("server", state[own_server])
        out["ports_in_use"] = _distinct(lport[own_client])
        # Sockets that entered TIME_WAIT since the last sample (a TIME_WAIT socket keeps its key).
        client_tw = key[own_client & (state == TIME_WAIT)]  # one row per socket: keys are unique
        entered = np.setdiff1d(client_tw, self._prev_client_tw, assume_unique=True)
        at_end = self._at_end.seen(entered, now)
        # A close's report can reach the sidecar just after the socket's TIME_WAIT was counted as
        # churn (the report and the close race each other): put such sockets right.
        late = np.isin(self._churned_keys, self._at_end.keys)
        moved = int(late.sum()) + int(at_end.sum())
        self.client_at_end += moved
        self.client_churned += len(entered) - moved
        recent = ~late & (self._churned_at >= now - FORGET_S)
        self._churned_keys = np.concatenate([self._churned_keys[recent], entered[~at_end]])
        self._churned_at = np.concatenate([self._churned_at[recent], np.full(int((~at_end).sum()), now)])
        server_tw = key[own_server & (state == TIME_WAIT)]
        self.server_entered += len(np.setdiff1d(server_tw, self._prev_server_tw, assume_unique=True))
        self._prev_client_tw, self._prev_server_tw = client_tw, server_tw
        tw = state == TIME_WAIT
        out |= {
            "client_time_wait_churned": self.client_churned,
            "client_time_wait_at_end": self.client_at_end,
            "server_time_wait_entered": self.server_entered,
            "preexisting_client_time_wait": int((client & pre & tw).sum()),
            "preexisting_server_time_wait": int((server & pre & tw).sum()),
            "preexisting_ports_in_use": _distinct(lport[client & pre]),
            "host_client_time_wait": int((client & tw).sum()),
            "host_server_time_wait": int((server & tw).sum()),
            "host_ports_in_use": _distinct(lport[client]),
        }
        return out


class _Keys:
    """A set of socket cookies, each forgotten :data:`FORGET_S` after it was last told or seen."""

    def __init__(self) -> None:
        import numpy as np

        self._np = np
        self.keys = np.zeros(0, np.uint64)
        self.last = np.zeros(0, np.float64)
        self._told: dict[int, float] = {}

    def add(self, key: int, now: float) -> None:
        self._told[key] = now

    def seen(self, present: Any, now: float) -> Any:
        """Mark which of ``present`` are known, refresh those, forget the stale; a mask over ``present``."""
        np = self._np
        if self._told:
            told = np.fromiter(self._told, np.uint64, len(self._told))
            at = np.fromiter(self._told.values(), np.float64, len(self._told))
            self._told.clear()
            keys, last = np.concatenate([self.keys, told]), np.concatenate([self.last, at])
            order = np.lexsort((-last, keys))  # by key, the latest first
            keys, last = keys[order], last[order]
            first = np.ones(len(keys), bool)
            first[1:] = keys[1:] != keys[:-1]
            self.keys, self.last = keys[first], last[first]
        mask = np.isin(present, self.keys)
        self.last[np.isin(self.keys, present)] = now
        keep = self.last >= now - FORGET_S
        self.keys, self.last = self.keys[keep], self.last[keep]
        return mask


def _by_state(side: str, states: Any) -> dict[str, int]:
    import numpy as np

    by_state = np.bincount(states, minlength=16)
    est, tw, cw = (int(by_state[s]) for s in (ESTABLISHED, TIME_WAIT, CLOSE_WAIT))
    return {
        f"{side}_established": est,
        f"{side}_time_wait": tw,
        f"{side}_close_wait": cw,
        f"{side}_other": len(states) - est - tw - cw,
    }


_PORT_SEEN: list[Any] = []  # one reusable 65,536-entry mask: cheaper than a new one each sample


def _distinct(ports: Any) -> int:
    import numpy as np

    if not len(ports):
        return 0
    if not _PORT_SEEN:
        _PORT_SEEN.append(np.zeros(65536, bool))
    seen = _PORT_SEEN[0]
    seen[ports] = True
    count = int(np.count_nonzero(seen))
    seen[ports] = False
    return count


def sample(sampler: Sampler, port: int, attribution: Attribution, host: str | None = None) -> SocketSample:
    """Take one sample: the sockets of ``port``, attributed, plus the kernel's counters."""
    t0 = time.perf_counter()
    ts = time.time()
    state, lport, rport, key = sampler.sockets(port)
    socks = attribution.count(state, lport, rport, key, port, ts)
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
        token: str | None = None,
    ) -> None:
        self.port = port
        self.interval_s = interval_s
        self.count = count
        self.sampler = make_sampler(method, families)
        self.attribution = Attribution(self.sampler.exact_keys)
        self.receiver = feed.Receiver(token) if token else None
        self.writer = CsvWriter(out)
        self.stop_event = threading.Event()
        self.host = host_label()

    def take(self, settle_s: float = 0.0) -> None:
        """Write one sample. With ``settle_s`` (the last one), wait up to that long for the run's
        closing sockets to settle (FIN_WAIT, LAST_ACK... into TIME_WAIT or gone) first."""
        deadline = time.monotonic() + settle_s
        while True:
            if self.receiver is not None:
                now = time.time()
                for kind, port, cookie in self.receiver.drain():
                    self.attribution.tell(kind, port, cookie, now)
            row = sample(self.sampler, self.port, self.attribution, self.host)
            if row.client_other + row.server_other == 0 or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        self.writer.write(row)

    def close(self) -> None:
        self.writer.close()
        if self.receiver is not None:
            self.receiver.close()

    def run(self, until: threading.Event | None = None) -> None:
        """Sample until ``until`` (default: ``stop_event``) is set; the last sample is taken after it.

        When a sample was already taken (the baseline, before a command starts), the next one
        follows an interval later.
        """
        done = until if until is not None else self.stop_event
        next_at = time.monotonic()
        if self.writer.rows:
            next_at += self.interval_s
            done.wait(self.interval_s)
        while True:
            finished = done.is_set()
            self.take(settle_s=SETTLE_S if finished else 0.0)
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
        token: str | None = None,
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
            *(["--feed", token] if token else []),
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_sidecar_child,
            start_new_session=True,  # a signal to Locust's process group is Locust's to handle
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
    p.add_argument("--feed", default=None, help=argparse.SUPPRESS)  # the run whose clients report (feed.py)
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...: a client to run and watch")
    return p


# The sidecar's scheduling priority. On a machine whose cores Locust and the server keep busy, it
# yields to them, so sampling costs the load little; each sample still records its own time.
SIDECAR_NICE = 10


def _sidecar_child() -> None:
    managed_child()
    os.nice(SIDECAR_NICE)


def main(argv: list[str] | None = None) -> int:
    parser = one_line_errors(build_parser())
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.out.is_dir():
        parser.error(f"--out {str(args.out)!r} is a folder; give a CSV file path")
    try:
        car = Sidecar(args.port, args.out, args.interval, args.count, args.method, args.family, args.feed)
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
            car.close()
        return 0
    car.take()  # the baseline, before the command opens any connection
    try:
        child = subprocess.Popen(command, preexec_fn=die_with_parent)
    except OSError as e:
        car.close()
        parser.error(f"cannot run {command[0]!r}: {e.strerror}")
    signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    signal.signal(signal.SIGINT, lambda *_: child.send_signal(signal.SIGINT))
    exited = threading.Event()
    waiter = threading.Thread(target=lambda: (child.wait(), exited.set()), daemon=True)
    waiter.start()
    try:
        car.run(until=exited)
    finally:
        car.close()
    waiter.join()
    return exit_code(child.returncode)


if __name__ == "__main__":
    sys.exit(main())
