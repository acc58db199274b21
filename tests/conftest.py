"""Shared fixtures: a real embedded target on 127.0.0.1 and a helper that runs the real `locust`."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keepalive_lab.netns import can_isolate, in_namespace
from keepalive_lab.target import TargetProcess

# A shell that starts a job in the background (`make test &`, some CI runners) leaves SIGINT
# ignored, and an ignored signal stays ignored in every child: the Ctrl-C tests would then send a
# SIGINT nobody hears. The tests' children get the default, as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
    """Poll ``condition`` until it returns something true, and return that; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"waited {timeout_s:g} s for {what}")


def socket_rows(path: Path) -> list[dict[str, str]]:
    """The whole rows of a sockets.csv written so far (empty while it does not exist)."""
    try:
        lines = path.read_text().splitlines(keepends=True)
    except FileNotFoundError:
        return []
    whole = [line for line in lines if line.endswith("\n")]
    return list(csv.DictReader(whole))


def in_sockets_csv(
    run_dir: Path, condition: Callable[[dict[str, str]], Any], pattern: str = "*/sockets.csv"
) -> Callable[[], bool]:
    """A condition for :func:`wait_for`: some row of a sockets.csv under ``run_dir`` satisfies ``condition``."""
    return lambda: any(condition(row) for path in run_dir.glob(pattern) for row in socket_rows(path))


def start_locust(tmp_path: Path, locustfile: str, *args: str) -> tuple[Any, Path]:
    """Start a headless locust in its own process group; return once its test is under way: the
    sidecar's sockets.csv shows the client's connection established."""
    run_dir = tmp_path / "runs"
    proc = subprocess.Popen(
        locust_command(locustfile, "--headless", "--run-dir", str(run_dir), *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
    )
    wait_for(in_sockets_csv(run_dir, lambda row: int(row["client_established"]) >= 1), "the first connection")
    return proc, run_dir


def end_group(proc: subprocess.Popen) -> None:
    """SIGKILL what is left of a process group started with start_new_session (a lingering worker)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


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

    def run(
        locustfile: str, *args: str, timeout_s: float = 120, isolated: bool = False, env: dict | None = None
    ) -> LocustRun:
        calls.append(locustfile)
        run_dir = tmp_path / f"runs-{len(calls)}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        cmd = locust_command(locustfile, "--headless", "--run-dir", str(run_dir), *args)
        out_path = tmp_path / f"locust-{len(calls)}.out"
        with open(out_path, "w") as out:
            # Its own process group: whatever it leaves (a --processes worker, say) is ended with it.
            proc = subprocess.Popen(in_namespace(cmd) if isolated else cmd, stdout=out, stderr=subprocess.STDOUT,
                                    text=True, cwd=tmp_path, env=env, start_new_session=True)  # fmt: skip
            try:
                returncode = proc.wait(timeout=timeout_s)
            finally:
                end_group(proc)
        return LocustRun(returncode, out_path.read_text(), only_run_folder(run_dir))

    return run


@pytest.fixture(scope="session")
def target():
    """The embedded target in keep-alive mode on 127.0.0.1, port 0; exposes `.url` and `.stats()`."""
    with TargetProcess(mode="keepalive") as t:
        yield t
