"""One sidecar per client host: the first process of a host to claim the run samples it.

Ports run out per client host, so every host that runs users is sampled. A host is a network
namespace (plus its hostname, see :func:`keepalive_lab.netns.host_label`). When a test starts,
the process that writes the run folder claims its own host, then each worker tries to claim its
host: the claim is an abstract Unix socket named after the run, and abstract names belong to a
network namespace, so exactly one process per host gets it. A worker that gets it runs
:class:`HostSidecar`: the sidecar writes its rows to a private temporary file, and the worker
sends them on to the master with the suite's ``keepalive_lab_samples`` message
(:mod:`keepalive_lab.workers`), about once a second. The master appends them to the run's
``sockets.csv``, whose ``host`` column tells the hosts apart, and records each host's kernel
facts and sidecar state in ``run.json``'s ``hosts``.
"""

from __future__ import annotations

import errno
import logging
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent

from keepalive_lab import feed, kernel
from keepalive_lab.netns import host_label
from keepalive_lab.schema import SOCKETS_CSV, SidecarState
from keepalive_lab.sidecar import SidecarProcess

log = logging.getLogger("keepalive_lab")
SHIP_EVERY_S = 1.0  # rows reach the master at most this late (the live view refreshes every 2 s)
FIRST_SAMPLE_TIMEOUT_S = 10.0


def claim(token: str) -> socket.socket | None:
    """This host's claim on the run's sampling: the bound socket (keep it open), or None when another
    process of this host holds it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(feed.address(token) + "/sidecar")
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            return None
        raise
    return sock


def host_facts() -> dict[str, Any]:
    """What ``run.json`` records of a host: its label, kernel facts and the counters' baseline."""
    return {"host": host_label(), "kernel": {**kernel.facts(), "baseline": kernel.baseline()}}


class HostSidecar:
    """In a worker that claimed its host: the host's sidecar, its rows sent on to the master.

    ``send(data)`` sends one ``keepalive_lab_samples`` message; ``spec`` is what the master
    announced: ``port``, ``interval_s`` and ``family``.
    """

    def __init__(self, token: str, spec: dict[str, Any], claimed: socket.socket,
                 send: Callable[[dict[str, Any]], None], worker: str) -> None:  # fmt: skip
        self.token, self.send, self.claimed = token, send, claimed
        self.label = host_label()
        self.dir = Path(tempfile.mkdtemp(prefix="keepalive-lab-sidecar-"))
        self.path = self.dir / SOCKETS_CSV
        self.offset = 0
        self.state: SidecarState | None = None
        self.proc = SidecarProcess(int(spec["port"]), self.path, float(spec["interval_s"]),
                                   family=str(spec.get("family", "both")), token=token)  # fmt: skip
        if not self.proc.wait_first_row(FIRST_SAMPLE_TIMEOUT_S, sleep=gevent.sleep):
            log.warning("the socket sidecar of host %s took no sample within %s s", self.label,
                        FIRST_SAMPLE_TIMEOUT_S)  # fmt: skip
        self.send({"token": token, "host": self.label, "facts": {**host_facts(), "worker": worker},
                   "text": self._new_rows()})  # fmt: skip
        self._loop = gevent.spawn(self._ship_loop)

    def _new_rows(self) -> str:
        """The whole rows written since the last call (the file's header line left out: the run's
        ``sockets.csv`` has its own)."""
        first = self.offset == 0
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return ""
        whole = data[: data.rfind(b"\n") + 1]
        self.offset += len(whole)
        if first:
            whole = whole.split(b"\n", 1)[1] if b"\n" in whole else b""
        return whole.decode("utf-8", errors="replace")

    def _ship_loop(self) -> None:
        while True:
            gevent.sleep(SHIP_EVERY_S)
            text = self._new_rows()
            if text:
                self.send({"token": self.token, "host": self.label, "text": text})

    def stop(self) -> None:
        """Take the last sample, send every row left and the sidecar's state; remove the temporary file."""
        if self.state is not None:
            return
        self._loop.kill(block=False)
        self.state = self.proc.stop()
        try:
            self.send({"token": self.token, "host": self.label, "text": self._new_rows(),
                       "sidecar": self.state.to_dict()})  # fmt: skip
        finally:
            self.claimed.close()
            shutil.rmtree(self.dir, ignore_errors=True)
