"""Across hosts: what the workers' sidecar samples cost the master, and what a second process gives.

Sidecar messages. The multi-host lab of ``keepalive_lab.cluster`` (network namespaces on a bridge,
nginx on a server host) with Locust's master alone on one host and one worker on each of four
other hosts, each host sampled at 10 Hz by its own sidecar, for DURATION_S. The master times, with
its process's CPU clock, the receiving, decoding and handling of every sample message
(``benchmarks/locustfiles/samples_cpu.py``). Goal: at most 1 % of one core.

Processes. ``concurrent.py`` (20 users, a pool of one each, no think time) against nginx on
loopback, as one Locust process and with ``--processes 2``, back to back, ROUNDS rounds; the
figure is the median of the rounds' paired ratios of requests/s. Goal: at least 1.5x.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from keepalive_lab.cluster import NGINX_CONF, NGINX_PORT, STATUS_PORT, Cluster, nginx_accepts
from keepalive_lab.netns import why_no_namespace
from keepalive_lab.peers import NginxProcess, nginx_path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES_CPU = ROOT / "benchmarks" / "locustfiles" / "samples_cpu.py"
CONCURRENT = ROOT / "locustfiles" / "concurrent.py"
DURATION_S = 20
HOSTS = 4
MESSAGE_GOAL_PCT = 1.0
PROCESSES_GOAL = 1.5
ROUNDS = 3


def _locust(*args: str) -> list[str]:
    return [sys.executable, "-m", "locust", *args]


def sidecar_messages() -> bool:
    why = why_no_namespace() or (None if nginx_path() else "nginx is not installed")
    if why:
        print(f"skipped: {why}")
        return True
    cluster = Cluster(HOSTS + 1)
    prefix = Path(tempfile.mkdtemp(prefix="keepalive-lab-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        cluster.build()
        (prefix / "tmp").mkdir()
        server_ip = cluster.address[cluster.server]
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_CONF.format(prefix=prefix, address=server_ip, port=NGINX_PORT, status_port=STATUS_PORT))
        procs.append(cluster.spawn(cluster.server, [nginx_path() or "nginx", "-p", str(prefix), "-c", str(conf)]))
        time.sleep(1)
        before = nginx_accepts(cluster)
        master_host, worker_hosts = cluster.clients[0], cluster.clients[1:]
        master_ip = cluster.address[master_host]
        out = prefix / "samples.json"
        master = cluster.spawn(master_host, _locust(
            "-f", f"{CONCURRENT},{SAMPLES_CPU}", "--headless", "--master", "--master-bind-host", master_ip,
            "--expect-workers", str(HOSTS), "--host", f"http://{server_ip}:{NGINX_PORT}", "-u", "8", "-r", "8",
            "--requests-per-user", "0", "--pool-scope", "user", "--think-time", "0.01", "--sample-interval",
            "0.1", "-t", f"{DURATION_S}s", "--run-dir", str(prefix / "runs"), "--only-summary", "--loglevel",
            "WARNING"), env={**os.environ, "KEEPALIVE_BENCH_SAMPLES": str(out)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        for ns in worker_hosts:
            procs.append(cluster.spawn(ns, _locust("-f", str(CONCURRENT), "--worker", "--master-host", master_ip),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        master.wait(timeout=DURATION_S + 120)
        accepted = nginx_accepts(cluster) - before - 1
        figures = json.loads(out.read_text())
        (folder,) = (prefix / "runs").iterdir()
        run = json.loads((folder / "run.json").read_text())
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        cluster.close()
        shutil.rmtree(prefix, ignore_errors=True)
    pct = 100 * figures["cpu_s"] / figures["wall_s"]
    sampled = sorted(h["host"] for h in run["hosts"] if h.get("sampled_by"))
    print(f"master alone on one host, one worker on each of {HOSTS} other hosts, each sampled at 10 Hz, "
          f"{DURATION_S} s against nginx")  # fmt: skip
    print(f"hosts sampled by a worker: {len(sampled)}; sample messages: {figures['messages']} "
          f"({figures['rows']} rows); master CPU on them: {figures['cpu_s'] * 1000:.1f} ms over "
          f"{figures['wall_s']:.1f} s = {pct:.3f} % of one core (goal <= {MESSAGE_GOAL_PCT:g} %)")  # fmt: skip
    opened = run["client_connections"]["opened"]
    print(f"connections: nginx accepted {accepted}, the run counted {opened}")
    return pct <= MESSAGE_GOAL_PCT and len(sampled) == HOSTS and accepted == opened


def _rps(url: str, *extra: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(_locust("-f", str(CONCURRENT), "--headless", "--only-summary", "-u", "20", "-r", "20",
                               "-t", "10s", "--host", url, "--requests-per-user", "0", "--pool-scope", "user",
                               "--pool-size", "1", "--think-time", "0", "--csv", f"{tmp}/b", "--run-dir",
                               f"{tmp}/runs", "--loglevel", "WARNING", *extra),
                       capture_output=True, text=True, timeout=120, cwd=tmp)  # fmt: skip
        for line in Path(f"{tmp}/b_stats.csv").read_text().splitlines():
            if ",Aggregated," in line:
                return float(line.split(",")[9])
    return float("nan")


def processes() -> bool:
    if nginx_path() is None:
        print("skipped: nginx is not installed")
        return True
    one, two, ratios = [], [], []
    with NginxProcess() as nginx:
        for _ in range(ROUNDS):
            one.append(_rps(nginx.url))
            two.append(_rps(nginx.url, "--processes", "2"))
            ratios.append(two[-1] / one[-1])
    ratio = statistics.median(ratios)
    print(f"concurrent.py, 20 users, no think time, against nginx on loopback, {ROUNDS} rounds of 10 s "
          f"on {os.cpu_count()} cores")  # fmt: skip
    print(f"requests/s: one process {statistics.median(one):,.0f}, --processes 2 {statistics.median(two):,.0f}; "
          f"ratio {ratio:.2f}x [{min(ratios):.2f}-{max(ratios):.2f}] (goal >= {PROCESSES_GOAL:g}x)")  # fmt: skip
    return ratio >= PROCESSES_GOAL


def run() -> bool:
    ok = sidecar_messages()
    return processes() and ok
