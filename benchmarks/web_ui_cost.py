"""What watching costs: the same scenario headless, with the web UI open and polled by a browser on
the Connections tab, and headless with /metrics scraped every second.

Each variant runs ``concurrent.py`` (10 users, a pool each, no think time) against nginx (or the
embedded target when nginx is missing) for DURATION_S; the three alternate, ROUNDS rounds. Locust
runs on CPU 0; the server, the browser and this script on CPU 1, as a browser on another machine
would be: what is measured is what serving the tab, its polls and /metrics costs Locust, not the
browser's drawing. Locust is CPU-bound here, so its throughput is requests per CPU-second of its
process over the test (from its run folder's start to its final status, so start-up and what
comes after the test, such as the web UI's report, are left out).

Two figures per variant, from the same runs:

- the throughput ratio to headless: the median over rounds of each round's ratio (a round's
  variants run back to back). On a shared machine a run's CPU speed moves by several percent,
  so this ratio is shown with its spread and is not the goal's test;
- the share of Locust's CPU spent answering HTTP (the web UI's page and polls, /metrics): every
  answer gevent's WSGI server gives is timed with the process's CPU clock
  (``benchmarks/locustfiles/serving_cpu.py``), an upper bound measured inside each run, so the
  machine's speed cancels out. Watching leaves Locust at most ``1 - share`` of its throughput.

Goal: the web UI and /metrics each leave Locust at least 0.98 of its headless throughput, by the
share (and the median ratio is printed beside it).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from keepalive_lab.peers import NginxProcess, free_port, nginx_path
from keepalive_lab.target import TargetProcess

ROOT = Path(__file__).resolve().parent.parent
SERVING = ROOT / "benchmarks" / "locustfiles" / "serving_cpu.py"
DURATION_S = 8
ROUNDS = 5
GOAL = 0.98
LOCUST_CPU, OTHERS_CPU = 0, 1
SCENARIO = ["-u", "10", "-r", "10", "--requests-per-user", "0", "--pool-scope", "user", "--pool-size", "1",
            "--think-time", "0"]  # fmt: skip
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@dataclass
class Figures:
    rps: float
    per_cpu_s: float  # requests per CPU-second of the Locust process over its test
    serving_share: float  # of that CPU time, the share spent answering HTTP
    by_path: dict[str, float]  # that share by request path


def locust(host: str, run_dir: str, *extra: str) -> list[str]:
    return ["taskset", "-c", str(LOCUST_CPU), sys.executable, "-m", "locust", "-f",
            f"{ROOT / 'locustfiles' / 'concurrent.py'},{SERVING}", "--host", host, "--run-dir", run_dir,
            *SCENARIO, *extra]  # fmt: skip


class Watch:
    """The Locust process's CPU time over its test: from the run folder's run.json to its final status."""

    def __init__(self, proc: subprocess.Popen, run_dir: str) -> None:
        self.proc, self.run_dir = proc, Path(run_dir)
        self.cpu_start: float | None = None
        self.cpu_end: float | None = None

    def _cpu(self) -> float:
        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system

    def step(self) -> None:
        runs = list(self.run_dir.glob("*/run.json"))
        if not runs or self.cpu_end is not None:
            return
        try:
            if self.cpu_start is None:
                self.cpu_start = self._cpu()
            elif json.loads(runs[0].read_text())["status"] != "running":
                self.cpu_end = self._cpu()
        except (psutil.Error, ValueError, OSError):
            pass

    def figures(self, serving: Path) -> Figures:
        stats = next(self.run_dir.glob("*/stats.csv"))
        with open(stats) as f:
            total = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
        cpu = (self.cpu_end or 0.0) - (self.cpu_start or 0.0)
        answered = json.loads(serving.read_text())
        by_path = {path: spent / answered["cpu_s"] for path, spent in answered["spent_s"].items()}
        if answered["cpu_s"] <= 0:
            by_path = {}
        return Figures(float(total["Requests/s"]), int(total["Request Count"]) / cpu if cpu > 0 else 0.0,
                       sum(by_path.values()), by_path)  # fmt: skip


def measured(cmd: list[str], tmp: str, while_running: Callable[[], None] = lambda: None) -> Figures:
    serving = Path(tmp) / "serving.json"
    env = {**os.environ, "KEEPALIVE_BENCH_SERVING": str(serving)}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp, env=env)
    watch = Watch(proc, tmp)

    def poll() -> None:  # on its own thread, so that a slow page load cannot make it miss the test's end
        while proc.poll() is None:
            watch.step()
            time.sleep(0.005)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    while proc.poll() is None:
        while_running()
        time.sleep(0.02)
    poller.join()
    return watch.figures(serving)


def headless(host: str) -> Figures:
    with tempfile.TemporaryDirectory() as tmp:
        return measured(locust(host, tmp, "--headless", "-t", f"{DURATION_S}s"), tmp)


def scraped(host: str) -> Figures:
    port = free_port()
    last = [0.0]

    def scrape() -> None:
        if time.monotonic() - last[0] >= 1.0:
            last[0] = time.monotonic()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
            except OSError:
                pass

    with tempfile.TemporaryDirectory() as tmp:
        return measured(locust(host, tmp, "--headless", "-t", f"{DURATION_S}s", "--metrics-port", str(port)), tmp,
                        scrape)  # fmt: skip


def watched(host: str, browser: object) -> Figures:
    port = free_port()
    page = browser.new_page()  # type: ignore[attr-defined]
    opened = [False]

    def browse() -> None:
        if not opened[0]:
            try:  # open the page once, when the web UI answers, as a person would
                urllib.request.urlopen(f"http://127.0.0.1:{port}/keepalive-lab/panel.js", timeout=2).read()
            except OSError:
                return
            page.goto(f"http://127.0.0.1:{port}/?tab=connections")
            opened[0] = True
        page.wait_for_timeout(20)  # the page keeps polling, as a person's browser would

    with tempfile.TemporaryDirectory() as tmp:
        cmd = locust(host, tmp, "--web-host", "127.0.0.1", "--web-port", str(port), "--autostart", "--autoquit", "0",
                     "-t", f"{DURATION_S}s")  # fmt: skip
        try:
            return measured(cmd, tmp, browse)
        finally:
            page.close()


def run() -> bool:
    if (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        print("needs two CPUs and taskset (util-linux); skipped")
        return False
    if CHROMIUM is None:
        print("chromium is not installed; `make bench` installs it as root")
        return False
    os.sched_setaffinity(0, {OTHERS_CPU})  # the server and the browser start from here: they inherit it
    server = NginxProcess() if nginx_path() else TargetProcess("keepalive")
    name = "nginx" if nginx_path() else "embedded target"
    labels = ("headless", "web UI open on the Connections tab", "headless, /metrics scraped every 1 s")
    results: dict[str, list[Figures]] = {label: [] for label in labels}
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            for i in range(ROUNDS):
                results[labels[0]].append(headless(server.url))
                results[labels[1]].append(watched(server.url, browser))
                results[labels[2]].append(scraped(server.url))
                print(f"  round {i + 1}/{ROUNDS}: " + ", ".join(f"{r[-1].per_cpu_s:,.0f}" for r in results.values())
                      + " requests per CPU-s", flush=True)  # fmt: skip
            browser.close()
    finally:
        server.stop()
    print(f"concurrent.py, 10 users, sidecar on, {DURATION_S} s, {ROUNDS} rounds alternated, against {name}; medians")
    print(f"{'variant':<40}{'requests/s':>11}{'req per CPU-s':>15}{'ratio (spread)':>22}{'answering HTTP':>16}"
          f"{'leaves':>8}")  # fmt: skip
    ok = True
    for label, values in results.items():
        ratios = [v.per_cpu_s / h.per_cpu_s for v, h in zip(values, results[labels[0]], strict=True) if h.per_cpu_s]
        share = statistics.median(v.serving_share for v in values)
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else "-"
        print(f"{label:<40}{statistics.median(v.rps for v in values):>11,.0f}"
              f"{statistics.median(v.per_cpu_s for v in values):>15,.0f}"
              f"{statistics.median(ratios) if ratios else 0:>10.2f}x ({spread})"
              f"{share * 100:>15.2f}%{1 - share:>7.3f}x")  # fmt: skip
        if label != labels[0]:
            ok &= 1 - share >= GOAL
    for label in labels[1:]:
        paths = sorted({p for v in results[label] for p in v.by_path})
        shares = {p: statistics.median(v.by_path.get(p, 0.0) for v in results[label]) for p in paths}
        top = sorted(shares.items(), key=lambda kv: -kv[1])[:4]
        print(f"  {label}, by path: " + ", ".join(f"{p} {share * 100:.2f}%" for p, share in top))
    print(f"goal: watching leaves Locust at least {GOAL} of its throughput (by the CPU share answering HTTP): "
          f"{'met' if ok else 'MISSED'}")  # fmt: skip
    return ok
