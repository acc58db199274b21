"""Real servers the suite starts on loopback: nginx (Debian's ``nginx-light``).

:class:`NginxProcess` writes a one-server config into a private folder and runs nginx in the
foreground as a child of the caller, bound to 127.0.0.1 only. The config's keep-alive settings
are what the seed experiments vary: ``keepalive_timeout 0`` makes nginx close every connection.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from keepalive_lab.procs import die_with_parent

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
    keepalive_timeout {keepalive_timeout};
    keepalive_requests {keepalive_requests};
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ default_type text/plain; return 200 "Hello world"; }}
    }}
}}
"""


def nginx_path() -> str | None:
    """The nginx binary, or None when Debian's ``nginx-light`` is not installed."""
    return shutil.which("nginx") or (str(Path("/usr/sbin/nginx")) if Path("/usr/sbin/nginx").exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


class NginxProcess:
    """nginx on 127.0.0.1 with the given keep-alive settings; ``.url``; ``stop()`` ends it."""

    def __init__(self, keepalive_timeout: str = "75s", keepalive_requests: int = 1000000) -> None:
        binary = nginx_path()
        if binary is None:
            raise RuntimeError("nginx is not installed; install Debian's nginx-light (apt-get install nginx-light)")
        self.prefix = Path(tempfile.mkdtemp(prefix="keepalive-lab-nginx-"))
        (self.prefix / "tmp").mkdir()
        self.port = free_port()
        conf = self.prefix / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                prefix=self.prefix,
                port=self.port,
                keepalive_timeout=keepalive_timeout,
                keepalive_requests=keepalive_requests,
            )
        )
        self.proc = subprocess.Popen(
            [binary, "-p", str(self.prefix), "-c", str(conf), "-e", str(self.prefix / "error.log")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        try:
            wait_listening(self.port)
        except RuntimeError:
            self.stop()
            raise
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        shutil.rmtree(self.prefix, ignore_errors=True)

    def __enter__(self) -> NginxProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
