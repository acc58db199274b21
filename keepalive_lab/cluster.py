"""A multi-host lab on one machine: Locust's master and workers on several simulated client hosts.

    python -m keepalive_lab.cluster [--hosts N] [--workers W] [--narrow-range PORTS] [--users U]
                                    [--requests-per-user R] [--run-time T] [--run-dir DIR]
                                    [--report DIR] [-- LOCUST OPTIONS...]

Needs root. It builds, in private network namespaces joined by a bridge (nothing of the host's
own network is touched):

- a server host running nginx (keep-alive on) with its ``stub_status`` counter of accepted
  connections;
- N client hosts (default 2). The first runs Locust's master; W workers (default one per
  host) are spread over the hosts in turn. The last host's ephemeral port range is narrowed to
  ``--narrow-range`` ports (default 200), so that it runs out of ports while the others do not.

It runs ``locustfiles/concurrent.py`` headless against nginx (each host sampled by its own
sidecar), prints the run's status and nginx's count of accepted connections next to the run's,
and builds the report, whose verdict names the host that ran out. Every namespace and process
it made is gone when it exits, on Ctrl-C too (the master gets SIGINT first, to finish its run
folder). Exit code: 0 when the run completed, else the master's (1 failed, 2 bad input, 130
interrupted).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from keepalive_lab.cli import one_line_errors
from keepalive_lab.netns import die_with_parent, exit_code, stop_group, why_no_namespace
from keepalive_lab.peers import nginx_path
from keepalive_lab.schema import HOSTS_CSV, RUN_JSON

PROG = "python -m keepalive_lab.cluster"
NGINX_PORT, STATUS_PORT = 8080, 8081
NARROW_LO = 40000
RUN_TIME_LIMIT_S = 600
NGINX_CONF = """daemon off;
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
    default_type text/plain;
    server {{
        listen {address}:{port} backlog=4096;
        keepalive_timeout 75s;
        keepalive_requests 1000000;
        location / {{ return 200 "Hello world"; }}
    }}
    server {{
        listen 127.0.0.1:{status_port};
        location / {{ stub_status; }}
    }}
}}
"""


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _run_time(text: str) -> int:
    m = re.fullmatch(r"(\d+)(s|m)?", text.strip())
    if not m or not 1 <= int(m.group(1)) * (60 if m.group(2) == "m" else 1) <= RUN_TIME_LIMIT_S:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a run time; use seconds (20, 20s) or minutes (2m), at most {RUN_TIME_LIMIT_S} s"
        )
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)


def _range_size(text: str) -> int:
    if not text.isdigit() or not 10 <= int(text) <= 20000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port count; use 10 to 20000 (0 is not allowed)")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Run locustfiles/concurrent.py on a master and workers spread over N simulated client "
        "hosts (network namespaces on a bridge) against nginx on a server host, with one host's port range "
        "narrowed so that it runs out of ports; then build the report, which names that host. Needs root.",
    )
    p.add_argument("--hosts", type=_positive, default=2, metavar="N", help="client hosts (default 2)")
    p.add_argument(
        "--workers",
        type=_positive,
        default=None,
        metavar="W",
        help="Locust workers, spread over the hosts in turn (default: one per host)",
    )
    p.add_argument(
        "--narrow-range",
        type=_range_size,
        default=200,
        metavar="PORTS",
        help="the last host's ephemeral port range, in ports (default 200: it runs out within seconds)",
    )
    p.add_argument("--users", "-u", type=_positive, default=20, metavar="U", help="users in all (default 20)")
    p.add_argument(
        "--requests-per-user", type=_positive, default=200, metavar="R", help="requests each user makes (default 200)"
    )
    p.add_argument(
        "--run-time",
        "-t",
        type=_run_time,
        default=60,
        metavar="T",
        help=f"the run's time limit (default 60s, at most {RUN_TIME_LIMIT_S}s)",
    )
    p.add_argument(
        "--run-dir",
        type=Path,
        default=Path("runs/cluster"),
        metavar="DIR",
        help="where the run folder goes (default runs/cluster)",
    )
    p.add_argument(
        "--report",
        type=Path,
        default=Path("reports/cluster"),
        metavar="DIR",
        help="where the report goes (default reports/cluster)",
    )
    p.add_argument("locust_args", nargs=argparse.REMAINDER, help="-- more options for the master's locust command")
    return p  # fmt: skip


def _sh(*cmd: str) -> None:
    subprocess.run(list(cmd), check=True, capture_output=True, text=True)


class Cluster:
    """The namespaces, bridge and veth pairs of the lab; ``close()`` removes every one."""

    def __init__(self, hosts: int) -> None:
        tag = os.getpid() % 10000
        self.prefix = f"klc{tag}"
        net = 10 + os.getpid() % 240
        self.subnet = f"10.79.{net}"
        self.switch = f"{self.prefix}-sw"
        self.server = f"{self.prefix}-server"
        self.clients = [f"{self.prefix}-h{i + 1}" for i in range(hosts)]
        self.address = {self.server: f"{self.subnet}.1", **{c: f"{self.subnet}.{10 + i}" for i, c in
                                                             enumerate(self.clients)}}  # fmt: skip
        self.made: list[str] = []

    def build(self) -> None:
        _sh("ip", "netns", "add", self.switch)
        self.made.append(self.switch)
        _sh("ip", "netns", "exec", self.switch, "ip", "link", "add", "br0", "type", "bridge")
        _sh("ip", "netns", "exec", self.switch, "ip", "link", "set", "br0", "up")
        for i, ns in enumerate([self.server, *self.clients]):
            _sh("ip", "netns", "add", ns)
            self.made.append(ns)
            a, b = f"{self.prefix}v{i}a", f"{self.prefix}v{i}b"
            _sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
            _sh("ip", "link", "set", a, "netns", ns)
            _sh("ip", "link", "set", b, "netns", self.switch)
            _sh("ip", "netns", "exec", self.switch, "ip", "link", "set", b, "master", "br0")
            _sh("ip", "netns", "exec", self.switch, "ip", "link", "set", b, "up")
            _sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{self.address[ns]}/24", "dev", a)
            _sh("ip", "netns", "exec", ns, "ip", "link", "set", a, "up")
            _sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            _sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=0")

    def narrow(self, ns: str, ports: int) -> None:
        hi = NARROW_LO + ports - 1
        _sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv4.ip_local_port_range={NARROW_LO} {hi}")

    def spawn(self, ns: str, cmd: list[str], **kwargs: Any) -> subprocess.Popen:
        """``cmd`` in namespace ``ns``, in a session of its own; it dies with the lab and takes SIGINT
        (the lab passes a Ctrl-C on to the master, whatever a shell set for the lab itself)."""
        return subprocess.Popen(["ip", "netns", "exec", ns, *cmd], preexec_fn=_lab_child, start_new_session=True,
                                **kwargs)  # fmt: skip

    def close(self) -> None:
        """Remove every namespace it made; a namespace's processes are killed first."""
        for ns in reversed(self.made):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.made.clear()


def _lab_child() -> None:
    die_with_parent(signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def nginx_accepts(cluster: Cluster) -> int:
    """nginx's count of accepted connections (its stub_status; this query's own connection included)."""
    probe = (f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{STATUS_PORT}/', "
             "timeout=5).read().decode())")  # fmt: skip
    out = subprocess.run(["ip", "netns", "exec", cluster.server, sys.executable, "-c", probe],
                         capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip
    return int(out.splitlines()[2].split()[0])


def locust_command(*args: str) -> list[str]:
    locust = shutil.which("locust", path=str(Path(sys.executable).parent)) or "locust"
    return [locust, "-f", str(locustfile()), *args]


def locustfile() -> Path:
    """locustfiles/concurrent.py of the repo (the cluster runs from a checkout)."""
    here = Path.cwd() / "locustfiles" / "concurrent.py"
    if here.exists():
        return here
    return Path(__file__).resolve().parent.parent / "locustfiles" / "concurrent.py"


def run(args: argparse.Namespace) -> int:
    workers = args.workers or args.hosts
    cluster = Cluster(args.hosts)
    prefix = Path(tempfile.mkdtemp(prefix="keepalive-lab-cluster-"))
    procs: list[subprocess.Popen] = []
    master: subprocess.Popen | None = None
    interrupted = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal interrupted
        interrupted = True
        if master is not None and master.poll() is None:
            os.killpg(master.pid, signal.SIGINT)  # the master finishes its run folder, marked interrupted

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"building the lab: a server host and {args.hosts} client hosts on a bridge ({cluster.subnet}.0/24)",
              flush=True)  # fmt: skip
        cluster.build()
        narrowed = cluster.clients[-1]
        cluster.narrow(narrowed, args.narrow_range)
        (prefix / "tmp").mkdir()
        server_ip = cluster.address[cluster.server]
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_CONF.format(prefix=prefix, address=server_ip, port=NGINX_PORT, status_port=STATUS_PORT))
        procs.append(cluster.spawn(cluster.server, [nginx_path() or "nginx", "-p", str(prefix), "-c", str(conf)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        _wait_for(lambda: _accepts_or_none(cluster) is not None, "nginx did not start on the server host")
        before = nginx_accepts(cluster)
        master_ip = cluster.address[cluster.clients[0]]
        args.run_dir.mkdir(parents=True, exist_ok=True)
        existing = set(args.run_dir.iterdir())
        master = cluster.spawn(cluster.clients[0], locust_command(
            "--headless", "--master", "--master-bind-host", master_ip, "--expect-workers", str(workers),
            "--host", f"http://{server_ip}:{NGINX_PORT}", "-u", str(args.users), "-r", str(args.users),
            "--requests-per-user", str(args.requests_per_user), "-t", f"{args.run_time}s",
            "--run-dir", str(args.run_dir), "--exit-code-on-error", "0", *args.locust_args))  # fmt: skip
        spread = [cluster.clients[i % args.hosts] for i in range(workers)]
        for ns in spread:
            procs.append(cluster.spawn(ns, locust_command("--worker", "--master-host", master_ip),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        print(f"master on {cluster.clients[0]}; workers: " + ", ".join(spread) +
              f"; {narrowed}'s port range narrowed to {args.narrow_range} ports", flush=True)  # fmt: skip
        try:
            code = master.wait(timeout=args.run_time + 120)
        except subprocess.TimeoutExpired:
            code = stop_group(master, signal.SIGINT, 15.0)
        after = nginx_accepts(cluster)
        folders = sorted(set(args.run_dir.iterdir()) - existing)
        if not folders:
            print(f"{PROG}: error: the master wrote no run folder under {args.run_dir}", file=sys.stderr)
            return exit_code(code) or 1
        folder = folders[-1]
        record = json.loads((folder / RUN_JSON).read_text())
        opened = (record.get("client_connections") or {}).get("opened")
        per_host = ", ".join(f"{h['host']}: {h['opened']}" for h in record.get("hosts", []))
        print(f"nginx accepted {after - before - 1} connections during the run; the run counted {opened} opened "
              f"({per_host})")  # fmt: skip
        report = subprocess.run([sys.executable, "-m", "analysis", "report", str(folder), "-o", str(args.report)],
                                capture_output=True, text=True)  # fmt: skip
        print(report.stdout.strip())
        if report.returncode != 0:
            print(report.stderr.strip(), file=sys.stderr)
        print(f"per host: {args.report / HOSTS_CSV}; status {record['status']}", flush=True)
        if interrupted:
            return 130
        return 0 if record["status"] == "completed" else (exit_code(code) or 1)
    finally:
        for proc in [*procs, *([master] if master is not None else [])]:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait()
        cluster.close()
        shutil.rmtree(prefix, ignore_errors=True)
        for s, handler in old.items():
            signal.signal(s, handler)


def _accepts_or_none(cluster: Cluster) -> int | None:
    try:
        return nginx_accepts(cluster)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, IndexError, ValueError):
        return None


def _wait_for(ready: Any, failure: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(failure)
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = one_line_errors(build_parser())
    args = parser.parse_args(argv)
    args.locust_args = args.locust_args[1:] if args.locust_args[:1] == ["--"] else args.locust_args
    why = why_no_namespace()
    if why:
        parser.error(why)
    if nginx_path() is None:
        parser.error("nginx is not installed; install Debian's nginx-light (make tools, as root)")
    try:
        return run(args)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", None) or str(e)
        print(f"{PROG}: error: {str(detail).strip().splitlines()[-1]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
