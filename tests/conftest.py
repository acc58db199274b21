"""Shared fixtures: a real embedded target on 127.0.0.1 and a helper that runs the real `locust`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keepalive_lab.netns import can_isolate, in_namespace
from keepalive_lab.target import TargetProcess

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILES = ROOT / "locustfiles"


@dataclass
class LocustRun:
    """One finished `locust` process and the run folder it left."""

    returncode: int
    output: str
    folder: Path | None

    @property
    def run(self) -> dict[str, Any]:
        assert self.folder is not None, f"no run folder; locust said:\n{self.output}"
        return json.loads((self.folder / "run.json").read_text())

    @property
    def target(self) -> dict[str, Any]:
        assert self.folder is not None, f"no run folder; locust said:\n{self.output}"
        return json.loads((self.folder / "target.json").read_text())

    @property
    def accepted(self) -> int:
        return self.target["connections_accepted"]


def locust_command(locustfile: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILES / locustfile), *args]


def start_locust(tmp_path: Path, locustfile: str, *args: str, wait_for: str = "run.json") -> tuple[Any, Path]:
    """Start a headless locust in its own process group; return once its run folder has ``wait_for``."""
    import time

    run_dir = tmp_path / "runs"
    proc = subprocess.Popen(
        locust_command(locustfile, "--headless", "--run-dir", str(run_dir), *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(run_dir.glob(f"*/{wait_for}")):
        time.sleep(0.05)
    return proc, run_dir


def only_run_folder(run_dir: Path) -> Path | None:
    folders = sorted(p for p in run_dir.iterdir() if p.is_dir()) if run_dir.exists() else []
    assert len(folders) <= 1, folders
    return folders[0] if folders else None


NETNS = can_isolate()
requires_netns = pytest.mark.skipif(
    not NETNS, reason="needs root and `unshare --net` for a private network namespace (exact socket counts)"
)


@pytest.fixture
def run_locust(tmp_path: Path):
    """Run `locust -f locustfiles/<file> --headless ... --run-dir <tmp>` to the end; bounded at 120 s."""

    calls = []

    def run(locustfile: str, *args: str, timeout_s: float = 120, isolated: bool = False) -> LocustRun:
        calls.append(locustfile)
        run_dir = tmp_path / f"runs-{len(calls)}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        cmd = locust_command(locustfile, "--headless", "--run-dir", str(run_dir), *args)
        proc = subprocess.run(
            in_namespace(cmd) if isolated else cmd,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=tmp_path,
            env=env,
        )
        return LocustRun(proc.returncode, proc.stdout + proc.stderr, only_run_folder(run_dir))

    return run


@pytest.fixture(scope="session")
def target():
    """The embedded target in keep-alive mode on 127.0.0.1, port 0; exposes `.url` and `.stats()`."""
    with TargetProcess(mode="keepalive") as t:
        yield t
