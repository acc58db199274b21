"""Real servers the suite starts on loopback, as children of the caller: nginx and python's http.server.

:class:`~keepalive_lab.config.Peer` names what ``--peer`` can choose:

``embedded``
    the suite's own target (see :mod:`keepalive_lab.target`), in ``--target-mode``.
``http.server``
    ``python3 -m http.server`` serving a small ``index.html``: it answers HTTP/1.0 and closes
    every connection.
``nginx-keepalive``, ``nginx-close``, ``nginx-low-requests``
    Debian's ``nginx-light`` with ``keepalive_lab/nginx.conf``: keep-alive on;
    ``keepalive_timeout 0`` (closes every connection); ``keepalive_requests 3``.

Each binds 127.0.0.1 only and dies with its parent.
"""

from __future__ import annotations

import importlib.resources
import shutil
import socket
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from keepalive_lab import kernel
from keepalive_lab.config import Peer
from keepalive_lab.netns import managed_child, terminate

# The placeholder in nginx.conf that holds each server's port.
NGINX_SERVERS = {Peer.NGINX_KEEPALIVE: "port_keepalive", Peer.NGINX_CLOSE: "port_close",
                 Peer.NGINX_LOW_REQUESTS: "port_low_requests"}  # fmt: skip
PEER_NOTES = {
    Peer.HTTP_SERVER: "HTTP/1.0: closes every connection",
    Peer.NGINX_KEEPALIVE: "nginx, keep-alive on",
    Peer.NGINX_CLOSE: "nginx keepalive_timeout 0: closes every connection",
    Peer.NGINX_LOW_REQUESTS: "nginx keepalive_requests 3: closes after 3 requests",
}
BODY = b"Hello world"


def nginx_path() -> str | None:
    """The nginx binary, or None when Debian's ``nginx-light`` is not installed."""
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout_s: float = 10.0) -> None:
    """Wait for a listener on ``port``; it looks in /proc rather than connecting, since a probe
    connection would leave a TIME_WAIT on the very port the sidecar watches."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if kernel.listening(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


class _Child:
    """A server child process with a private folder; ``stop()`` ends it and removes the folder."""

    proc: subprocess.Popen
    prefix: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        terminate(self.proc)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
        shutil.rmtree(self.prefix, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class NginxProcess(_Child):
    """nginx with the repo's three servers; ``url_for(peer)`` gives each one's URL."""

    def __init__(self) -> None:
        binary = nginx_path()
        if binary is None:
            raise RuntimeError("nginx is not installed; install Debian's nginx-light (apt-get install nginx-light)")
        self.prefix = Path(tempfile.mkdtemp(prefix="keepalive-lab-nginx-"))
        (self.prefix / "tmp").mkdir()
        self.ports = {peer: free_port() for peer in NGINX_SERVERS}
        fill = {NGINX_SERVERS[p]: port for p, port in self.ports.items()}
        conf = self.prefix / "nginx.conf"
        template = importlib.resources.files("keepalive_lab").joinpath("nginx.conf").read_text(encoding="utf-8")
        conf.write_text(string.Template(template).substitute(prefix=self.prefix, **fill))
        self.proc = subprocess.Popen(
            [binary, "-p", str(self.prefix), "-c", str(conf), "-e", str(self.prefix / "error.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=managed_child,
            start_new_session=True,  # a signal to Locust's process group is Locust's to handle
        )  # fmt: skip
        try:
            for port in self.ports.values():
                wait_listening(port)
        except RuntimeError:
            self.stop()
            raise

    def url_for(self, peer: str = Peer.NGINX_KEEPALIVE) -> str:
        return f"http://127.0.0.1:{self.ports[Peer(peer)]}"

    @property
    def url(self) -> str:
        return self.url_for(Peer.NGINX_KEEPALIVE)


class HttpServerProcess(_Child):
    """``python3 -m http.server`` on 127.0.0.1 serving an ``index.html`` of "Hello world"."""

    def __init__(self) -> None:
        self.prefix = Path(tempfile.mkdtemp(prefix="keepalive-lab-http-server-"))
        (self.prefix / "index.html").write_bytes(BODY)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1", "--directory",
             str(self.prefix)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=managed_child,
            start_new_session=True,  # a signal to Locust's process group is Locust's to handle
        )  # fmt: skip
        try:
            wait_listening(self.port)
        except RuntimeError:
            self.stop()
            raise
        self.url = f"http://127.0.0.1:{self.port}"


class PeerProcess:
    """One chosen real peer: ``.url``, ``.alive()``, ``.stop()``."""

    def __init__(self, peer: Peer) -> None:
        if peer is Peer.EMBEDDED:
            raise ValueError("the embedded target is not a peer process; use keepalive_lab.target.TargetProcess")
        self.name = Peer(peer)
        self.note = PEER_NOTES[self.name]
        if self.name is Peer.HTTP_SERVER:
            self.server: _Child = HttpServerProcess()
            self.url = self.server.url  # type: ignore[attr-defined]
        else:
            nginx = NginxProcess()
            self.server, self.url = nginx, nginx.url_for(self.name)

    def alive(self) -> bool:
        return self.server.alive()

    def stop(self) -> None:
        self.server.stop()
