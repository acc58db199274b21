"""Private network namespaces, process groups and child cleanup, in one place.

The suite's helpers (embedded target, sidecar, peers) must never outlive the process that made
them, and a namespace must never outlive its command. The lab, the matrix, the tests and the
benchmarks all start their commands and namespaces through here.

A namespace made by ``unshare --net`` lives as long as some process runs in it: when the command
(and, with ``fork``, everything it left behind) exits, the namespace is gone.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_CAP_SYS_ADMIN = 21
_NO_ROOT = "needs root to create a network namespace and set its sysctls; run it as root (e.g. sudo)"


# -- child processes -------------------------------------------------------------------------


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (a ``preexec_fn``)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent watch below still works
        pass


def managed_child() -> None:
    """``preexec_fn`` for the suite's helpers (target, sidecar, peers): die with the parent, and
    ignore SIGINT. The helpers run in sessions of their own, so that a terminal's Ctrl-C or a
    CI's SIGTERM to Locust's process group reaches Locust alone: they must outlive it until
    Locust has written the run folder, then they stop on SIGTERM from Locust (or die with it)."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def watch_parent(parent_pid: int, on_gone: Callable[[], None], every_s: float = 0.2) -> threading.Thread:
    """Call ``on_gone`` (once, from a daemon thread) when ``parent_pid`` is no longer our parent.

    This covers what PR_SET_PDEATHSIG cannot: a parent killed by SIGKILL before the child set it,
    or a platform without prctl. The check is a cheap ``getppid()``.
    """

    def run() -> None:
        stop = threading.Event()
        while not stop.wait(every_s):
            if os.getppid() != parent_pid:
                on_gone()
                return

    thread = threading.Thread(target=run, name="parent-watch", daemon=True)
    thread.start()
    return thread


def terminate(proc: subprocess.Popen, timeout_s: float = 5.0) -> int:
    """SIGTERM ``proc`` if it still runs, SIGKILL it after ``timeout_s``; return its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def signal_group(proc: subprocess.Popen, signum: int) -> None:
    """Signal the process group that ``proc`` leads (started with ``start_new_session=True``), as a
    terminal's Ctrl-C would. Nothing happens when the group is gone."""
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        pass


def stop_group(proc: subprocess.Popen, first: int = signal.SIGINT, grace_s: float = 15.0) -> int:
    """Send ``first`` to the group ``proc`` leads, wait up to ``grace_s`` for ``proc``, then SIGKILL
    whatever is left of the group. Returns ``proc``'s exit code."""
    signal_group(proc, first)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        signal_group(proc, signal.SIGKILL)
        proc.wait()
    signal_group(proc, signal.SIGKILL)  # anything of the group still left
    return proc.returncode


def exit_code(returncode: int) -> int:
    """A child's exit code as a shell reports it: 128+N when signal N ended it."""
    return 128 - returncode if returncode < 0 else returncode


# -- network namespaces ----------------------------------------------------------------------


def _has_sys_admin() -> bool:
    """True when this process holds CAP_SYS_ADMIN (what creating a network namespace needs)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> _CAP_SYS_ADMIN & 1)
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


def why_no_namespace() -> str | None:
    """Why a private network namespace cannot be made here, or None when it can."""
    if os.geteuid() != 0 or not _has_sys_admin():
        return _NO_ROOT
    for tool in ("unshare", "ip", "sysctl"):
        if shutil.which(tool) is None:
            return f"{tool!r} is not installed; install util-linux, iproute2 and procps"
    try:
        probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot create a network namespace here ({e})"
    if probe.returncode != 0:
        return f"cannot create a network namespace here ({probe.stderr.strip() or 'unshare failed'})"
    return None


def can_isolate() -> bool:
    """Root with a working ``unshare --net``."""
    return why_no_namespace() is None


def in_namespace(
    command: list[str],
    *,
    port_range: tuple[int, int] | None = None,
    tw_reuse: int | None = None,
    fork: bool = False,
) -> list[str]:
    """``command`` wrapped to run in a new private network namespace with loopback up.

    ``port_range`` and ``tw_reuse`` set ``net.ipv4.ip_local_port_range`` and
    ``net.ipv4.tcp_tw_reuse`` inside it. Without ``fork``, the command replaces ``unshare`` and
    gets signals directly. With ``fork`` (``--fork --kill-child``), ``unshare`` stays as the
    command's parent and kills whatever is left in the namespace when the command exits; it ignores
    SIGINT and SIGTERM itself, so reach the command through its process group
    (:func:`signal_group`).
    """
    setup = ["ip link set lo up"]
    if port_range is not None:
        setup.append(f"sysctl -qw net.ipv4.ip_local_port_range='{port_range[0]} {port_range[1]}'")
    if tw_reuse is not None:
        setup.append(f"sysctl -qw net.ipv4.tcp_tw_reuse={tw_reuse}")
    script = " && ".join([*setup, 'exec "$@"'])
    unshare = ["unshare", "--net", *(["--fork", "--kill-child"] if fork else [])]
    return [*unshare, "sh", "-c", script, "sh", *command]


def namespace_of(pid: int | str = "self") -> int | None:
    """The network namespace of a process, as its inode number; None when the process is gone."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def processes_in(namespace: int) -> list[int]:
    """The processes still running in a network namespace (empty: the namespace is gone)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and namespace_of(entry.name) == namespace:
            pids.append(int(entry.name))
    return pids


def namespace_name(namespace: int | None) -> str | None:
    """The name ``ip netns`` gave a network namespace (its file under /run/netns), if any."""
    if namespace is None:
        return None
    try:
        for entry in Path("/run/netns").iterdir():
            try:
                if entry.stat().st_ino == namespace:
                    return entry.name
            except OSError:
                continue
    except OSError:
        return None
    return None


def host_label() -> str:
    """This host's name in the suite's figures: the hostname, and the network namespace when it is not
    the one PID 1 runs in (several namespaces of one machine are several hosts): ``box/lab-b``."""
    name = socket.gethostname()
    here = namespace_of()
    named = namespace_name(here)
    if named:
        return f"{name}/{named}"
    init = namespace_of(1)  # unreadable in some containers: then the hostname alone
    return name if here is None or init is None or here == init else f"{name}/netns-{here}"
