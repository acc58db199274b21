"""The client's own sockets, told to the sidecar as they happen: how a run's figures stay its own.

Every process that runs users sends one record per event to the sidecar of its host, over a Unix
datagram socket in the abstract namespace (no file; the name is scoped to the network namespace,
which is what a host is here). The sidecar counts as the run's own exactly the sockets it was
told of, so neither sockets left by an earlier run nor another process's connections to the same
port enter the run's figures.

Record (:data:`RECORD`, 12 bytes, little-endian): kind (``O``: a connection opened; ``E``: a
connection closed because the test or its user ended, such as an idle pooled connection when its
pool shuts down, which is the end of reuse, not churn), a pad byte, the
connection's local port, and its socket cookie (Linux ``SO_COOKIE``, 0 where there is none). The
cookie is the kernel's identity of the socket, kept when it enters TIME_WAIT, so a recycled
4-tuple is never mistaken for an earlier connection.
"""

from __future__ import annotations

import collections
import errno
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

RECORD = struct.Struct("<cxHQ")
OPENED = b"O"
CLOSED_AT_END = b"E"
SO_COOKIE = getattr(socket, "SO_COOKIE", 57)  # Linux >= 4.12
_PREFIX = "\0keepalive-lab/"
_MAX_DATAGRAM = RECORD.size * 1024
_MAX_PENDING = 100_000  # records kept while the sidecar is not reading (then the oldest are dropped)


def address(token: str) -> str:
    """The abstract socket name of a run's feed (``token`` names the run)."""
    return _PREFIX + token


def cookie_of(sock: socket.socket) -> int:
    """The socket's kernel cookie (stable across states, TIME_WAIT included), or 0."""
    try:
        return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), "little")
    except (OSError, AttributeError):
        return 0


def local_port(sock: socket.socket) -> int:
    try:
        return int(sock.getsockname()[1])
    except (OSError, IndexError, TypeError):
        return 0


def decode(datagram: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(kind, local port, cookie) for each record of a datagram."""
    for offset in range(0, len(datagram) - RECORD.size + 1, RECORD.size):
        yield RECORD.unpack_from(datagram, offset)


class Sender:
    """One process's side: records are sent at once, or kept until the sidecar can take them.

    It never blocks and never raises: a run without a sidecar (or whose sidecar died) simply has
    nobody listening.
    """

    def __init__(self) -> None:
        self.token: str | None = None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._pending: list[bytes] = []

    def connect(self, token: str | None) -> None:
        """Send to the run named ``token`` from now on (None: nobody listens)."""
        self.token = token
        self._pending.clear()

    def opened(self, sock: socket.socket) -> None:
        self._send(RECORD.pack(OPENED, local_port(sock), cookie_of(sock)))

    def closed_at_end(self, sock: socket.socket) -> None:
        self._send(RECORD.pack(CLOSED_AT_END, local_port(sock), cookie_of(sock)))

    def _send(self, record: bytes) -> None:
        if self.token is None:
            return
        self._pending.append(record)
        self.flush()

    def flush_all(self, timeout_s: float = 1.0, sleep: Callable[[float], object] = time.sleep) -> None:
        """Send everything pending, waiting up to ``timeout_s`` for the sidecar to take it (the end of a test)."""
        deadline = time.monotonic() + timeout_s
        self.flush()
        while self._pending and time.monotonic() < deadline:
            sleep(0.005)
            self.flush()

    def flush(self) -> None:
        """Send what is pending; keep it when the sidecar's queue is full."""
        while self._pending:
            batch = b"".join(self._pending[: _MAX_DATAGRAM // RECORD.size])
            try:
                self._sock.sendto(batch, address(self.token or ""))
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):  # the sidecar is behind
                    del self._pending[:-_MAX_PENDING]
                    return
                self._pending.clear()  # nobody listens: no sidecar on this host, or it stopped
                return
            del self._pending[: len(batch) // RECORD.size]


class Receiver:
    """The sidecar's side: bound to the run's name; a thread takes each datagram as it comes (the
    kernel queues only ``net.unix.max_dgram_qlen`` of them, 10 by default), and the sampler drains
    what arrived before each sample."""

    def __init__(self, token: str) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._sock.bind(address(token))
        self._received: collections.deque[bytes] = collections.deque()
        self._thread = threading.Thread(target=self._pump, name="feed", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while True:
            try:
                self._received.append(self._sock.recv(_MAX_DATAGRAM))
            except OSError:  # closed
                return

    def drain(self) -> Iterator[tuple[bytes, int, int]]:
        """Every record received since the last drain."""
        while self._received:
            yield from decode(self._received.popleft())

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
