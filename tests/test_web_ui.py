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


def test_options_show_with_class_defaults(web_ui):
    url, _ = web_ui
    page = urllib.request.urlopen(url, timeout=10).read().decode()
    for name in (
        "pool_size",
        "pool_scope",
        "pool_full",
        "drain",
        "keep_alive",
        "think_time_s",
        "requests_per_user",
        "target_mode",
        "client_type",
        "run_dir",
    ):
        assert f'"{name}"' in page, name
    assert '"choices": ["full", "close", "none"]' in page


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
        "think_time_s": "0.02",
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
