"""Headless runs: the connections line at Locust's console interval, and /metrics on --metrics-port."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

from conftest import locust_command, only_run_folder, wait_for

from keepalive_lab.peers import free_port

DATA = Path(__file__).parent / "data" / "runs"


def test_a_connections_line_every_console_interval_and_none_with_only_summary(run_locust):
    r = run_locust("sequential.py", "--think-time", "0.6", "--requests-per-user", "8")
    assert r.returncode == 0, r.output
    lines = [line for line in r.output.splitlines() if line.startswith("keepalive-lab: ") and "requests," in line]
    assert len(lines) >= 2, r.output  # about 5 s of load, a line every 2 s
    assert "per request" in lines[-1] and "ports in use" in lines[-1] and "churn" in lines[-1]
    quiet = run_locust("sequential.py", "--think-time", "0.6", "--requests-per-user", "8", "--only-summary")
    assert [line for line in quiet.output.splitlines() if "requests," in line and "keepalive-lab" in line] == []


def test_metrics_port_serves_the_run_in_headless_mode(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    run_dir = tmp_path / "runs"
    proc = subprocess.Popen(
        locust_command("sequential.py", "--headless", "--run-dir", str(run_dir), "--think-time", "0.3",
                       "--drain", "close", "--metrics-port", str(port)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
    )  # fmt: skip

    def scrape() -> dict | None:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            return None
        values = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                values[(s.name, s.labels.get("side") or s.labels.get("by") or "")] = (s.value, s.labels)
        return values if values.get(("keepalive_requests_total", ""), (0,))[0] >= 3 else None

    values = wait_for(scrape, "three requests in /metrics", timeout_s=30)
    assert proc.wait(timeout=60) == 0
    run = json.loads((only_run_folder(run_dir) / "run.json").read_text())
    requests, labels = values[("keepalive_requests_total", "")]
    assert labels["scenario"] == "sequential" and labels["host"]
    opened = values[("keepalive_connections_opened_total", "")][0]
    assert 3 <= requests <= run["requests"] == 10
    assert opened == requests or opened == requests + 1  # drain close: one connection per request
    assert values[("keepalive_port_range", "")][0] == run["kernel"]["port_range"]
    assert values[("keepalive_tcp_active_opens_total", "")][0] > 0


def test_the_live_view_reads_sockets_csv_as_it_grows_and_ends_with_the_whole_file(tmp_path):
    import pandas as pd

    from analysis.load import samples_from_text
    from keepalive_lab.live import SamplesTail

    text = (DATA / "20261123T145958Z-conc-pool-2" / "sockets.csv").read_text()
    lines = text.splitlines(keepends=True)
    assert len(lines) >= 4
    path, tail = tmp_path / "sockets.csv", SamplesTail()
    path.write_text("")
    assert len(tail.read(path)) == 0
    path.write_text(lines[0] + lines[1])
    assert len(tail.read(path)) == 1
    half = len(lines[2]) // 2
    with open(path, "a") as f:  # a row the sidecar is writing: not read until it is whole
        f.write(lines[2][:half])
    assert len(tail.read(path)) == 1
    with open(path, "a") as f:
        f.write(lines[2][half:] + "".join(lines[3:]))
    pd.testing.assert_frame_equal(tail.read(path), samples_from_text(text))
    assert len(tail.read(path)) == len(lines) - 1
