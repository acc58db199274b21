"""The embedded target: a small HTTP/1.x server on 127.0.0.1 that counts connections exactly.

Run it on its own::

    python -m keepalive_lab.target --port 0 --mode keepalive
    # prints its URL, e.g. http://127.0.0.1:41234, then serves until SIGINT/SIGTERM

Modes (``--mode``):

``keepalive``
    persistent HTTP/1.1 (the connection stays open until the client closes it).
``close``
    answers ``Connection: close`` and closes after every response.
``http10``
    answers as HTTP/1.0 and closes after every response, as ``python3 -m http.server`` does.
``close-after:N``
    closes a connection after its N-th response (nginx's ``keepalive_requests``).
``idle-timeout:SECONDS``
    closes a connection that has been idle for SECONDS (nginx's ``keepalive_timeout``).

A client that asks for ``Connection: close`` (or speaks HTTP/1.0 without keep-alive) is answered
and then closed, in every mode.

``GET /_stats`` returns the counters as JSON; neither that request nor its connection is counted.
The second line printed at start names a control port that answers ``/_stats`` too, without
adding any socket on the target port (the plugin reads the counters there).
The same JSON is written to ``--stats-out`` (whole, temporary file then rename) at shutdown.

Counters (:class:`keepalive_lab.schema.TargetCounts`, the format of ``target.json``):

``connections_accepted``
    connections that sent at least one counted request, or none at all.
``requests``
    requests answered, ``/_stats`` excluded.
``closed_by``
    ``{"client": n, "server": n, "client_reset": n}``: who closed each finished connection.
    The side that closes first with a FIN holds the TIME_WAIT; a reset leaves no TIME_WAIT.
``open_connections``
    counted connections still open.
``requests_per_connection``
    ``{"requests on one connection": number of connections}``, open ones included.

The server is asyncio with one write per response; asyncio sets TCP_NODELAY on every accepted
socket, so keep-alive responses never wait for Nagle's algorithm and a delayed ACK.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from keepalive_lab.certs import self_signed
from keepalive_lab.cli import one_line_errors
from keepalive_lab.config import DEFAULTS, MODE_HELP, ModeError, TargetMode, TargetModeKind
from keepalive_lab.netns import managed_child, terminate, watch_parent
from keepalive_lab.schema import TargetCounts, write_json_atomic

BIND_HOST = "127.0.0.1"
_TCP_CORK = getattr(socket, "TCP_CORK", None)
STATS_PATH = "/_stats"


def make_body(size_bytes: int) -> bytes:
    """A response body of exactly ``size_bytes`` bytes."""
    unit = b"Hello world\n"
    return (unit * (size_bytes // len(unit) + 1))[:size_bytes]


class Counters:
    """The target's exact counts. Only the event loop thread touches them."""

    def __init__(self) -> None:
        self.connections_accepted = 0
        self.requests = 0
        self.closed_by: collections.Counter[str] = collections.Counter(client=0, server=0, client_reset=0)
        self.finished_per_connection: collections.Counter[int] = collections.Counter()
        self.open: set[_Connection] = set()

    def snapshot(self) -> dict[str, Any]:
        per_conn = collections.Counter(self.finished_per_connection)
        for conn in self.open:
            per_conn[conn.requests] += 1
        return {
            "connections_accepted": self.connections_accepted,
            "requests": self.requests,
            "closed_by": dict(self.closed_by),
            "open_connections": len(self.open),
            "requests_per_connection": {str(k): v for k, v in sorted(per_conn.items())},
        }


class _Connection(asyncio.Protocol):
    """One accepted connection: parses requests, answers them in order, closes per mode."""

    def __init__(self, server: TargetServer, control: bool = False) -> None:
        self.server = server
        self.control = control
        self.counters = server.counters
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.requests = 0
        self.counted = False
        self.busy = False
        self.server_closing = False
        self.idle_handle: asyncio.TimerHandle | None = None

    # -- asyncio callbacks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self.idle_handle is not None:
            self.idle_handle.cancel()
            self.idle_handle = None
        self.buf += data
        self._process()

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle_handle is not None:
            self.idle_handle.cancel()
        if not self.counted:
            return
        c = self.counters
        c.open.discard(self)
        c.finished_per_connection[self.requests] += 1
        if self.server_closing:
            c.closed_by["server"] += 1
        elif exc is not None:
            c.closed_by["client_reset"] += 1
        else:
            c.closed_by["client"] += 1

    # -- request handling --------------------------------------------------------------------
    def _count_connection(self) -> None:
        if not self.counted:
            self.counted = True
            self.counters.connections_accepted += 1
            self.counters.open.add(self)

    def _process(self) -> None:
        while not self.busy and not self.server_closing and self.transport is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536:
                    self._close_now()
                return
            head = self.buf[:end]
            lines = head.split(b"\r\n")
            parts = lines[0].split()
            if len(parts) != 3:
                self._close_now()
                return
            path, version = parts[1], parts[2]
            length = 0
            conn_header = b""
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip() or 0)
                elif name == b"connection":
                    conn_header = value.strip().lower()
            total = end + 4 + length
            if len(self.buf) < total:
                return
            self.buf = self.buf[total:]
            if path == STATS_PATH.encode() or self.control:
                self._reply_stats(version)
                continue
            self._count_connection()
            self.requests += 1
            self.counters.requests += 1
            client_wants_close = conn_header == b"close" or (version == b"HTTP/1.0" and conn_header != b"keep-alive")
            close = client_wants_close or self.server.closes_after(self.requests)
            # An HTTP/1.0 client that asked for keep-alive (ab -k) is told it got it.
            announce = not close and version == b"HTTP/1.0"
            if self.server.delay_s > 0:
                self.busy = True
                self.loop.call_later(self.server.delay_s, self._respond, close, announce)
                return
            self._respond(close, announce)

    def _respond(self, close: bool, announce_keep_alive: bool = False) -> None:
        self.busy = False
        if self.transport is None or self.transport.is_closing():
            return
        if close:
            # The FIN must leave in the same segment as the response's last bytes. A client that
            # closes as soon as it has read a non-keep-alive body (http.client does) would
            # otherwise close first, now and then, and take the TIME_WAIT that the closing server
            # should hold. With TCP_CORK set, shutdown() puts the FIN on the held segment.
            sock = self.transport.get_extra_info("socket")
            if _TCP_CORK is not None and sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1)
            self.transport.write(self.server.response(close=True))
            self.server_closing = True
            if self.transport.can_write_eof():  # not over TLS: close() sends close_notify, then the FIN
                self.transport.write_eof()
            self.transport.close()
            return
        self.transport.write(self.server.response(close=False, announce_keep_alive=announce_keep_alive))
        self._arm_idle()
        if self.buf:
            self._process()

    def _reply_stats(self, version: bytes) -> None:
        body = json.dumps(self.counters.snapshot()).encode()
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )

    def _arm_idle(self) -> None:
        timeout = self.server.mode.idle_timeout_s
        if timeout > 0:
            self.idle_handle = self.loop.call_later(timeout, self._idle_close)

    def _idle_close(self) -> None:
        self.idle_handle = None
        if not self.busy and self.transport is not None and not self.transport.is_closing():
            self.server_closing = True
            self.transport.close()

    def _close_now(self) -> None:
        if self.transport is not None:
            self.server_closing = True
            self.transport.close()


class TargetServer:
    """The server object: settings, prebuilt responses and counters."""

    def __init__(self, mode: TargetMode, delay_s: float = 0.0, body_bytes: int = DEFAULTS.target_body_bytes) -> None:
        self.mode = mode
        self.delay_s = delay_s
        self.body = make_body(body_bytes)
        self.counters = Counters()
        self.loop = asyncio.get_event_loop()
        self._responses = {
            (close, announce): self._build(close, announce) for close in (False, True) for announce in (False, True)
        }

    def _build(self, close: bool, announce_keep_alive: bool) -> bytes:
        if self.mode.kind is TargetModeKind.HTTP10:
            status, conn = b"HTTP/1.0 200 OK", b""
        else:
            status = b"HTTP/1.1 200 OK"
            conn = b"Connection: close\r\n" if close else b"Connection: keep-alive\r\n" if announce_keep_alive else b""
        return (
            status + b"\r\nServer: keepalive-lab-target\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\n%s\r\n%s" % (len(self.body), conn, self.body)
        )

    def closes_after(self, requests_on_connection: int) -> bool:
        kind = self.mode.kind
        if kind in (TargetModeKind.CLOSE, TargetModeKind.HTTP10):
            return True
        if kind is TargetModeKind.CLOSE_AFTER:
            return requests_on_connection >= self.mode.close_after
        return False

    def response(self, close: bool, announce_keep_alive: bool = False) -> bytes:
        return self._responses[(close, announce_keep_alive and not close)]


async def _serve(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    server = TargetServer(args.mode, delay_s=args.delay_ms / 1000.0, body_bytes=args.body_bytes)
    server.loop = loop
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    srv = await loop.create_server(lambda: _Connection(server), args.bind, args.port, backlog=4096, ssl=tls)
    port = srv.sockets[0].getsockname()[1]
    # A second listener that answers only /_stats, so that reading the counters never adds a
    # socket (or a TIME_WAIT) on the target port that the sidecar is watching.
    control = await loop.create_server(lambda: _Connection(server, control=True), BIND_HOST, 0)
    control_port = control.sockets[0].getsockname()[1]
    print(f"{'https' if tls else 'http'}://{url_host(args.bind)}:{port}", flush=True)
    print(f"control http://{BIND_HOST}:{control_port}{STATS_PATH}", flush=True)
    done = asyncio.Event()
    # Run by the plugin (--parent-pid), a terminal's Ctrl-C is Locust's to handle: the target
    # stops on SIGTERM once Locust has read its counters.
    for sig in (signal.SIGTERM,) if args.parent_pid else (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    if args.parent_pid:
        watch_parent(args.parent_pid, lambda: loop.call_soon_threadsafe(done.set))
    await done.wait()
    srv.close()
    control.close()
    snapshot = server.counters.snapshot()
    snapshot.update(mode=str(args.mode), port=port, delay_ms=args.delay_ms, body_bytes=args.body_bytes)
    return snapshot


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def _mode(text: str) -> TargetMode:
    try:
        return TargetMode.parse(text)
    except ModeError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def url_host(address: str) -> str:
    """An IP address as a URL's host: IPv6 in brackets."""
    return f"[{address}]" if ":" in address else address


def bind_address(text: str) -> str:
    """An IP address of this host to listen on; not a wildcard, since clients are given it as the URL."""
    try:
        address = ipaddress.ip_address(str(text).strip())
    except ValueError:
        address = None
    if address is None or address.is_unspecified:
        raise ValueError(BIND_HELP)
    return str(address)


BIND_HELP = "an IP address of this host that clients can reach (not a wildcard such as 0.0.0.0)"


def _bind(text: str) -> str:
    try:
        return bind_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; use {BIND_HELP}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m keepalive_lab.target",
        description="HTTP target (on 127.0.0.1 unless --bind says otherwise) that counts connections, requests and "
        "who closed each "
        "connection. Prints its URL, then serves until SIGINT or SIGTERM.",
    )
    p.add_argument("--port", type=_nonneg_int, default=0, help="TCP port; 0 picks a free one (default 0)")
    p.add_argument("--bind", type=_bind, default=BIND_HOST, metavar="ADDRESS",
                   help=f"the address to listen on (default {BIND_HOST}: this host only)")  # fmt: skip
    p.add_argument("--mode", type=_mode, default=TargetMode("keepalive"), help=f"{MODE_HELP} (default keepalive)")
    p.add_argument("--delay-ms", type=_nonneg_int, default=DEFAULTS.target_delay_ms,
                   help=f"wait before each response (default {DEFAULTS.target_delay_ms})")  # fmt: skip
    body = DEFAULTS.target_body_bytes
    p.add_argument("--body-bytes", type=_nonneg_int, default=body, help=f"response body size (default {body})")
    p.add_argument("--stats-out", type=Path, help="write the final counters here as JSON at shutdown")
    p.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM); needs --tls-key")
    p.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")
    p.add_argument("--parent-pid", type=int, default=0, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = one_line_errors(build_parser())
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together; give both (PEM files) or neither")
    snapshot = asyncio.run(_serve(args))
    if args.stats_out:
        write_json_atomic(args.stats_out, snapshot)
    return 0


class TargetProcess:
    """Start the target as a child process and talk to it; used by the plugin and the tests.

    The child dies with its parent (PR_SET_PDEATHSIG plus a parent watch), so a killed Locust
    never leaves a target behind.
    """

    def __init__(
        self,
        mode: str | TargetMode = "keepalive",
        delay_ms: int = DEFAULTS.target_delay_ms,
        body_bytes: int = DEFAULTS.target_body_bytes,
        stats_out: str | os.PathLike[str] | None = None,
        port: int = 0,
        tls: bool = False,
        bind: str = BIND_HOST,
    ) -> None:
        self.mode = TargetMode.parse(mode)
        self.settings: dict[str, Any] = {"delay_ms": delay_ms, "body_bytes": body_bytes, "tls": tls, "bind": bind}
        cmd = [
            sys.executable,
            "-P",
            "-m",
            "keepalive_lab.target",  # -P: the cwd may shadow modules
            "--port",
            str(port),
            "--mode",
            str(self.mode),
            "--delay-ms",
            str(delay_ms),
            "--body-bytes",
            str(body_bytes),
            "--parent-pid",
            str(os.getpid()),
            "--bind",
            bind,
        ]
        self.stats_out = Path(stats_out) if stats_out else None
        if self.stats_out:
            cmd += ["--stats-out", str(self.stats_out)]
        self._tls_dir = None
        if tls:  # a self-signed certificate, for this target's life
            self._tls_dir = tempfile.TemporaryDirectory(prefix="keepalive-lab-tls-")
            cert, key = self_signed(Path(self._tls_dir.name), host=bind)
            cmd += ["--tls-cert", str(cert), "--tls-key", str(key)]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            preexec_fn=managed_child,
            start_new_session=True,  # a signal to Locust's process group is Locust's to handle
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith(("http://", "https://")):
            self.proc.kill()
            raise RuntimeError(f"embedded target did not start (exit code {self.proc.wait()})")
        self.url = line
        self.port = int(line.rsplit(":", 1)[1])
        self.control_url = self.proc.stdout.readline().split()[-1]

    def stats(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """The live counters, from the control port (so no socket touches the target port)."""
        with urllib.request.urlopen(self.control_url, timeout=timeout_s) as resp:
            return json.loads(resp.read())

    def counts(self, timeout_s: float = 5.0) -> TargetCounts:
        """The live counters as :class:`~keepalive_lab.schema.TargetCounts`."""
        return TargetCounts.from_dict(self.stats(timeout_s), self.control_url)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 5.0) -> dict[str, Any] | None:
        """Stop the target; return its final counters when it wrote them."""
        terminate(self.proc, timeout_s)
        if self.proc.stdout:
            self.proc.stdout.close()
        if self._tls_dir is not None:
            self._tls_dir.cleanup()
        if self.stats_out and self.stats_out.exists():
            return json.loads(self.stats_out.read_text())
        return None

    def __enter__(self) -> TargetProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
