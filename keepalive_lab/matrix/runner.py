"""Running a matrix: each scenario headless, in its own process group, isolated when it can be.

As root, every scenario runs in its own private network namespace (``unshare --net``, loopback
up) with its target inside: counters start at zero and no run inherits another's TIME_WAIT. A
scenario with ``lab`` runs in the port-exhaustion lab instead. Otherwise each run gets a fresh
target port and its ``run.json`` records the counters' baseline. A run that overruns its
``timeout_s`` is stopped and marked ``failed``; Ctrl-C stops the current run (its folder is
marked ``interrupted``) and leaves no process or namespace behind.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from keepalive_lab.matrix.spec import Scenario
from keepalive_lab.netns import in_namespace, stop_group
from keepalive_lab.schema import RUN_JSON, RunRecord, SchemaError, Status

GRACE_S = 15.0  # after SIGINT at the time bound or on Ctrl-C, before SIGKILL


@dataclass
class Outcome:
    """How one scenario's run ended: its folder (None when it left none), status and a note."""

    scenario: Scenario
    folder: Path | None
    status: str
    seconds: float
    note: str = ""


def mark_failed(folder: Path, reason: str) -> None:
    """Record in a finished run folder that the matrix stopped it."""
    try:
        record = RunRecord.read(folder)
    except SchemaError:
        return
    record.status, record.status_reason = Status.FAILED, reason
    record.write(folder)


class Runner:
    """Runs scenarios one at a time, each in its own process group (and namespace when ``isolate``)."""

    def __init__(self, run_dir: Path, isolate: bool) -> None:
        self.run_dir = run_dir
        self.isolate = isolate
        self.current: subprocess.Popen | None = None
        self.interrupted = False

    def command(self, sc: Scenario) -> list[str]:
        cmd = sc.locust_args(self.run_dir / sc.name)
        if sc.lab is not None:
            port_range, tw_reuse = sc.lab
            return in_namespace(cmd, port_range=port_range, tw_reuse=tw_reuse, fork=True)
        if self.isolate and sc.isolated:
            return in_namespace(cmd)
        return cmd

    def run(self, sc: Scenario) -> Outcome:
        scenario_dir = self.run_dir / sc.name
        t0 = time.monotonic()
        log = scenario_dir.with_suffix(".log")
        scenario_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            self.current = proc = subprocess.Popen(
                self.command(sc),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the matrix only; it stops the run itself
            )
            note = ""
            try:
                proc.wait(timeout=sc.timeout_s)
            except subprocess.TimeoutExpired:
                note = f"stopped at its time bound ({sc.timeout_s:g} s)"
                self.stop_current()
            except KeyboardInterrupt:
                self.interrupted = True
                note = "interrupted by Ctrl-C"
                self.stop_current()
            finally:
                self.current = None
        seconds = time.monotonic() - t0
        folders = sorted(p.parent for p in scenario_dir.glob(f"*/{RUN_JSON}")) if scenario_dir.exists() else []
        folder = folders[-1] if folders else None
        if folder is None:
            return Outcome(sc, None, "failed", seconds, note=note or f"locust exited {proc.returncode}; see {log}")
        if note.startswith("stopped"):
            mark_failed(folder, f"matrix: {note}")
        try:
            status = str(RunRecord.read(folder).status)
        except SchemaError as e:
            status, note = "failed", note or str(e)
        return Outcome(sc, folder, status, seconds, note)

    def stop_current(self) -> None:
        """SIGINT to Locust's group (it finishes its folder; its helpers ignore SIGINT), then SIGKILL
        to whatever is left of the group after a grace."""
        proc = self.current
        if proc is not None and proc.poll() is None:
            stop_group(proc, signal.SIGINT, GRACE_S)
