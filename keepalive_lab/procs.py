"""Helpers for the suite's child processes: they must never outlive the process that made them."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (a ``preexec_fn``)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent watch below still works
        pass


def managed_child() -> None:
    """``preexec_fn`` for the suite's helpers (target, sidecar, peers): die with the parent, and
    ignore SIGINT. A terminal's Ctrl-C reaches the whole process group; the helpers must outlive
    it until Locust has written the run folder, then they stop on SIGTERM (or with Locust)."""
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
