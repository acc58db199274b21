"""The suite's options in Locust's web UI: shown, validated, and applied to the run folder."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
from conftest import locust_command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, form: dict[str, str]) -> dict:
    data = urllib.parse.urlencode(form).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as resp:
        return json.loads(resp.read())


@pytest.fixture
def web_ui(tmp_path):
    port = free_port()
    run_dir = tmp_path / "runs"
    proc = subprocess.Popen(
        locust_command("sequential.py", "--web-host", "127.0.0.1", "--web-port", str(port), "--run-dir", str(run_dir)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            break
        except OSError:
            time.sleep(0.1)
    yield url, run_dir
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)


def test_options_show_with_class_defaults_in_their_order(web_ui):
    from keepalive_lab.options import OPTIONS

    url, _ = web_ui
    page = urllib.request.urlopen(url, timeout=10).read().decode()
    args = json.loads(page.split("window.templateArgs = ", 1)[1].split("</script>", 1)[0].strip().rstrip(";"))
    extra = args["extra_options"]
    assert list(extra) == [o.dest for o in OPTIONS]  # the suite's order, not sorted
    assert extra["drain"]["choices"] == ["full", "close", "none"]
    assert extra["keep_alive"]["default_value"] is True  # a checkbox
    assert extra["think_time"]["help_text"] == "s between a user's requests; default 1"  # sequential.py's
    assert all("LOCUST_" not in o["help_text"] for o in extra.values())


def test_bad_value_is_refused_in_the_ui(web_ui):
    url, run_dir = web_ui
    reply = post(f"{url}/swarm", {"user_count": "1", "spawn_rate": "1", "drain": "maybe"})
    assert reply["success"] is False
    assert reply["message"] == "--drain 'maybe' is not valid; choose one of: full, close, none"
    assert not run_dir.exists() or not list(run_dir.iterdir())


def test_ui_run_applies_the_form_and_writes_a_folder(web_ui):
    url, run_dir = web_ui
    form = {
        "user_count": "1",
        "spawn_rate": "1",
        "drain": "none",
        "think_time": "0.02",
        "requests_per_user": "4",
        "target_mode": "close-after:2",
    }
    assert post(f"{url}/swarm", form)["success"] is True
    deadline = time.monotonic() + 30
    run = {}
    while time.monotonic() < deadline:
        found = list(run_dir.glob("*/run.json"))
        if found:
            run = json.loads(found[0].read_text())
            if run["status"] != "running":
                break
        time.sleep(0.1)
    assert run["status"] == "completed"
    assert run["settings"]["drain"] == "none"
    target = json.loads((found[0].parent / "target.json").read_text())
    assert target["connections_accepted"] == 4  # drain none: one connection per request
    assert run["target"]["mode"] == "close-after:2"  # the target was restarted with the form's mode


def finished_runs(run_dir, count: int) -> list[dict]:
    """Wait for ``count`` finished run folders; return their run.json, oldest first."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = [json.loads(p.read_text()) for p in sorted(run_dir.glob("*/run.json"))]
        done = [r for r in runs if r["status"] != "running"]
        if len(done) >= count:
            return done
        time.sleep(0.05)
    raise AssertionError(f"{count} finished runs expected in {run_dir}")


def test_each_test_loads_the_server_its_form_names(web_ui):
    """Three tests from one page: the form keeps the first target's host, the settings change."""
    url, run_dir = web_ui
    base = {"user_count": "1", "spawn_rate": "1", "think_time": "0.02", "requests_per_user": "3"}
    first = post(f"{url}/swarm", base)
    first_host = finished_runs(run_dir, 1)[0]["host"]
    assert first["host"] == first_host
    # The page's form still holds the first host; the target mode changes.
    second = post(f"{url}/swarm", {**base, "host": first_host, "target_mode": "close"})
    run = finished_runs(run_dir, 2)[1]
    assert second["host"] == run["host"] == run["target"]["url"] != first_host
    assert run["status"] == "completed" and run["failures"] == 0
    assert run["target"]["mode"] == "close" and run["target_connections_accepted"] == 3
    # A third test from the same page, still with the first (now stopped) target's host in the form.
    third = post(f"{url}/swarm", {**base, "host": first_host, "target_mode": "close"})
    run = finished_runs(run_dir, 3)[2]
    assert third["host"] == run["host"] == second["host"]
    assert run["status"] == "completed" and run["failures"] == 0 and run["target_connections_accepted"] == 3


def test_a_second_test_shows_only_its_own_sockets(web_ui):
    url, run_dir = web_ui
    form = {"user_count": "1", "spawn_rate": "1", "think_time": "0.02", "requests_per_user": "5",
            "drain": "close"}  # fmt: skip
    post(f"{url}/swarm", form)
    finished_runs(run_dir, 1)
    post(f"{url}/swarm", form)
    finished_runs(run_dir, 2)
    second = sorted(run_dir.glob("*/sockets.csv"))[1]
    import csv

    rows = list(csv.DictReader(open(second)))
    assert int(rows[-1]["client_time_wait"]) == 5  # its own 5, not 10
    assert int(rows[0]["preexisting_client_time_wait"]) == 5  # the first test's, apart
