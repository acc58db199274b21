"""A self-signed certificate for the suite's HTTPS servers (the embedded target, nginx), made with
the ``openssl`` command into a folder of the caller's. Clients that verify certificates (Locust's
``HttpUser`` by default) refuse it; that is the point of some tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CERT, KEY = "cert.pem", "key.pem"


def self_signed(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` for ``host`` into ``folder``; return their paths."""
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl command is not installed; install Debian's openssl")
    cert, key = folder / CERT, folder / KEY
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={host}",
         "-addext", f"subjectAltName=IP:{host}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key
