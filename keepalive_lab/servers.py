"""The server a Locust process starts when no ``--host`` is given: the embedded target or a real peer.

One :class:`Servers` per process that writes run folders. It starts the server the scenario's
settings name, restarts it when a web-UI test changes them, says when it has died, reads the
embedded target's counters, and stops it when Locust exits.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable

from keepalive_lab.config import Peer, ScenarioConfig
from keepalive_lab.peers import PeerProcess
from keepalive_lab.schema import TargetCounts, TargetInfo
from keepalive_lab.target import TargetProcess

log = logging.getLogger("keepalive_lab")
SETTLE_S = 1.0  # at the end of a test, how long the target may take to see the client's closes


class Servers:
    """The embedded target or the peer this process started, if any."""

    def __init__(self) -> None:
        self.target: TargetProcess | None = None
        self.peer: PeerProcess | None = None
        self._served: set[str] = set()  # every URL this process's servers have had

    @property
    def url(self) -> str | None:
        server = self.target or self.peer
        return server.url if server is not None else None

    def loopback_target(self) -> str | None:
        """The embedded target's URL when it listens on loopback (this host only), else None."""
        if self.target is None or not ipaddress.ip_address(self.target.settings["bind"]).is_loopback:
            return None
        return self.target.url

    def served(self, host: str | None) -> bool:
        """True for a URL of a server this process started (now or before), or no host at all."""
        return self.url is not None and (host is None or host in self._served)

    def start(self, cfg: ScenarioConfig) -> str:
        """Start the server ``cfg`` names (``--peer``, else the embedded target); return its URL."""
        url = self._start(cfg)
        self._served.add(url)
        return url

    def _start(self, cfg: ScenarioConfig) -> str:
        if cfg.peer is not Peer.EMBEDDED:
            self.peer = PeerProcess(cfg.peer)
            log.info("no --host given: %s (%s) at %s", cfg.peer, self.peer.note, self.peer.url)
            return self.peer.url
        self.target = TargetProcess(
            mode=cfg.target_mode,
            delay_ms=cfg.target_delay_ms,
            body_bytes=cfg.target_body_bytes,
            tls=cfg.target_tls,
            bind=cfg.target_bind,
        )
        log.info("no --host given: embedded target (%s) at %s", cfg.target_mode, self.target.url)
        return self.target.url

    def restart_if_changed(self, cfg: ScenarioConfig, host: str | None) -> str | None:
        """A web-UI test changed the server's settings: start the server it names; return its URL.

        None when nothing changed, or when ``host`` is not ours (the user gave their own).
        """
        if self.url is None or host != self.url:
            return None
        if self.peer is not None:
            changed = cfg.peer != self.peer.name
        else:
            assert self.target is not None
            wanted = (
                cfg.target_mode,
                {
                    "delay_ms": cfg.target_delay_ms,
                    "body_bytes": cfg.target_body_bytes,
                    "tls": cfg.target_tls,
                    "bind": cfg.target_bind,
                },
            )
            changed = cfg.peer is not Peer.EMBEDDED or (self.target.mode, self.target.settings) != wanted
        if not changed:
            return None
        self.stop()
        return self.start(cfg)

    def stop(self) -> None:
        for server in (self.target, self.peer):
            if server is not None:
                server.stop()
        self.target = self.peer = None

    def death(self) -> str | None:
        """Why the server is gone, or None while it runs (or when this process started none)."""
        if self.target is not None and not self.target.alive():
            return f"the embedded target died during the test (exit code {self.target.proc.returncode})"
        if self.peer is not None and not self.peer.alive():
            return f"the {self.peer.name} peer died during the test"
        return None

    def info(self, host: str | None) -> TargetInfo:
        """What ``host`` is, for ``run.json``: our embedded target, our peer, or the user's server."""
        if self.peer is not None and host == self.peer.url:
            return TargetInfo(embedded=False, peer=str(self.peer.name), peer_note=self.peer.note, url=self.peer.url)
        if self.target is None or host != self.target.url:
            return TargetInfo(embedded=False, url=host)
        return TargetInfo(embedded=True, url=self.target.url, mode=str(self.target.mode), **self.target.settings)

    def target_counts(self) -> TargetCounts | None:
        """The embedded target's live counters; None when this process started no target."""
        return self.target.counts() if self.target is not None else None

    def settled_target_counts(self, sleep: Callable[[float], object] = time.sleep) -> TargetCounts | None:
        """The target's counters once it has seen every connection close (at most :data:`SETTLE_S`).

        The pools were just shut; waiting lets the sidecar's last sample show the closed
        connections settled in TIME_WAIT. Raises when the target cannot be reached.
        """
        target = self.target
        if target is None:
            return None
        if not target.alive():
            raise RuntimeError(f"exit code {target.proc.returncode}")
        deadline = time.monotonic() + SETTLE_S
        counts = target.counts()
        while counts.open_connections > 0 and time.monotonic() < deadline:
            sleep(0.02)
            counts = target.counts()
        return counts
