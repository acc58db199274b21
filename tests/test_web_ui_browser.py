"""Locust's web UI in real Chromium (Debian's, driven by Playwright): the start form, the
Connections tab, the live charts, the downloads and /metrics, against the numbers the run folder
ends with. Screenshots are kept in reports/test-artifacts/."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, locust_command, wait_for

from keepalive_lab.peers import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = ROOT / "reports" / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make tools installs it as root)")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.console_errors = []  # type: ignore[attr-defined]
    page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)  # type: ignore[attr-defined]
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))  # type: ignore[attr-defined]
    yield page
    context.close()


class WebUI:
    def __init__(self, url: str, run_dir: Path) -> None:
        self.url, self.run_dir = url, run_dir

    def finished(self, count: int) -> list[Path]:
        def done() -> list[Path] | None:
            folders = sorted(p.parent for p in self.run_dir.glob("*/run.json"))
            finished = [f for f in folders if json.loads((f / "run.json").read_text())["status"] != "running"]
            return finished if len(finished) >= count else None

        folders = wait_for(done, f"{count} finished run(s)", timeout_s=60)
        # Locust's /stats/requests is cached for 2 s, and its page takes the test's state from it:
        # a page loaded before the cache says "stopped" would show the start form of a test that
        # has not begun, and keep it.
        wait_for(lambda: self.state() == "stopped", "Locust's stats to say stopped", timeout_s=30)
        return folders

    def state(self) -> str:
        with urllib.request.urlopen(f"{self.url}/stats/requests", timeout=5) as resp:
            return json.loads(resp.read())["state"]


@pytest.fixture
def web_ui(tmp_path):
    port = free_port()
    run_dir = tmp_path / "runs"
    log = open(tmp_path / "locust.log", "wb")  # noqa: SIM115 - Locust's output, kept for a failing test
    proc = subprocess.Popen(
        locust_command("concurrent.py", "--web-host", "127.0.0.1", "--web-port", str(port), "--run-dir",
                       str(run_dir)),
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _reachable(url), "the web UI")
    yield WebUI(url, run_dir)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    log.close()


def _reachable(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).read()
        return True
    except OSError:
        return False


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def start_from_the_form(page, url: str, **fields: str) -> None:
    page.goto(url)
    page.get_by_text("Custom parameters").click()
    for name, value in fields.items():
        field = page.locator(f'[name="{camel(name)}"]')  # the form names its fields in camelCase
        if field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)
    page.get_by_role("button", name="Start").click()


def camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.title() for word in rest)


def table_rows(page) -> dict[str, list[str]]:
    rows = {}
    for row in page.locator("table tbody tr").all():
        cells = [c.inner_text().strip() for c in row.locator("td").all()]
        if cells:
            rows[cells[0]] = cells
    return rows


def report_verdict(folder: Path) -> str:
    out = folder.parent / f"report-{folder.name}"
    proc = subprocess.run([sys.executable, "-m", "analysis", "report", str(folder), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    return proc.stdout.splitlines()[0].split(": ", 1)[1]


def test_the_form_starts_a_test_and_the_connections_tab_shows_what_the_run_folder_ends_with(web_ui, page):
    start_from_the_form(page, web_ui.url, requests_per_user="20", think_time="0.01")
    folder = web_ui.finished(1)[0]
    run = json.loads((folder / "run.json").read_text())
    target = json.loads((folder / "target.json").read_text())
    page.goto(f"{web_ui.url}/?tab=connections")
    page.wait_for_selector("#keepalive-lab-verdict")
    wait_for(lambda: table_rows(page).get("Total"), "the Connections table")
    page.wait_for_timeout(2500)  # one more poll: the figures of the finished run
    shot(page, "web-ui-connections-tab")
    rows = table_rows(page)
    conns = run["client_connections"]
    total = rows["Total"]
    assert total[1] == f"{run['requests']:,}".replace(",", "") or total[1] == str(run["requests"])
    assert int(total[2]) == target["connections_accepted"] == conns["opened"]
    assert int(total[5]) == conns["closed_by_client"] + conns["reset_by_client"]
    assert int(total[6]) == conns["closed_by_server"] and int(total[7]) == conns["discarded"]
    assert int(rows["/"][1]) == run["requests"] == 200 and int(rows["/"][2]) == conns["opened"]
    verdict = page.locator("#keepalive-lab-verdict").inner_text()
    assert verdict == report_verdict(folder)  # the report's own sentence
    assert "Client TIME_WAIT" in page.locator("#keepalive-lab-sockets").inner_text()
    # No horizontal overflow at 1366 px.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert page.console_errors == []


def test_the_chart_page_renders_with_no_console_errors(web_ui, page):
    start_from_the_form(page, web_ui.url, requests_per_user="10", think_time="0.05")
    folder = web_ui.finished(1)[0]
    with open(folder / "sockets.csv") as f:
        rows = list(csv.DictReader(f))
    series = json.loads(urllib.request.urlopen(f"{web_ui.url}/keepalive-lab/samples.json", timeout=10).read())
    assert len(series["t"]) == len(rows) >= 2  # every sample of a short run, in the file's order
    assert series["t"][0] == 0 and series["t"][-1] == round(float(rows[-1]["ts"]) - float(rows[0]["ts"]), 3)
    assert series["client_time_wait"] == [float(r["client_time_wait"]) for r in rows]
    assert series["ports_in_use"] == [float(r["ports_in_use"]) for r in rows]
    page.goto(f"{web_ui.url}/?tab=connections")
    link = page.locator("#keepalive-lab-charts-link")
    link.wait_for()
    charts = page.context.new_page()
    charts.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
    charts.goto(f"{web_ui.url}/keepalive-lab/charts")
    charts.wait_for_selector("#chart-ports .main-svg")
    charts.wait_for_timeout(500)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    charts.screenshot(path=str(ARTIFACTS / "web-ui-live-charts.png"), full_page=True)
    assert charts.locator(".js-plotly-plot").count() == 2
    assert "TIME_WAIT per side" in charts.locator("#chart-time-wait").inner_text()
    assert charts.locator("#verdict").inner_text() != ""
    assert link.get_attribute("href") == "./keepalive-lab/charts"
    assert page.console_errors == []


def test_a_second_test_from_the_same_page_shows_only_its_own_numbers(web_ui, page):
    start_from_the_form(page, web_ui.url, requests_per_user="5", drain="close", think_time="0.01")
    web_ui.finished(1)
    page.get_by_role("button", name="New").click()
    page.get_by_text("Custom parameters").click()
    page.locator('[name="requestsPerUser"]').fill("3")
    page.get_by_role("button", name="Start").click()
    second = web_ui.finished(2)[1]
    run = json.loads((second / "run.json").read_text())
    page.goto(f"{web_ui.url}/?tab=connections")
    wait_for(lambda: table_rows(page).get("Total", [None, None])[1] == str(run["requests"]), "the second run's rows",
             timeout_s=10)  # fmt: skip
    shot(page, "web-ui-second-test")
    assert run["requests"] == 30
    assert int(table_rows(page)["Total"][2]) == run["client_connections"]["opened"] == 30
    sockets = page.locator("#keepalive-lab-sockets").inner_text()
    assert "Already there at the start" in sockets  # the first test's TIME_WAIT, reported apart


def test_a_host_that_is_down_fails_the_test_and_the_tab_says_why(web_ui, page):
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    start_from_the_form(page, web_ui.url, host=down, requests_per_user="5")
    folder = web_ui.finished(1)[0]
    run = json.loads((folder / "run.json").read_text())
    page.goto(f"{web_ui.url}/?tab=connections")
    reason = page.locator("#keepalive-lab-status-reason")
    reason.wait_for()
    shot(page, "web-ui-host-down")
    assert run["status"] == "failed" and run["status_reason"].startswith("server unreachable: ")
    assert reason.inner_text() == f"failed: {run['status_reason']}"
    assert page.locator("#keepalive-lab-verdict").inner_text().startswith("[failed] no connection opened")
    total = table_rows(page)["Total"]
    assert (int(total[1]), int(total[2]), total[4]) == (run["requests"], 0, "0")  # requests, opened, reuse %
    assert page.console_errors == []


def test_an_impossible_combination_is_refused_in_the_form(web_ui, page):
    start_from_the_form(page, web_ui.url, client="fasthttp")  # with the scenario's pool_full discard
    message = page.get_by_text("does not work with --client fasthttp")
    message.wait_for()
    shot(page, "web-ui-refused")
    assert "--pool-full 'discard' does not work with --client fasthttp" in message.inner_text()
    time.sleep(0.5)
    assert not list(web_ui.run_dir.glob("*/run.json"))  # no test started


def test_downloads_and_metrics_match_the_run_folder(web_ui, page):
    from prometheus_client.parser import text_string_to_metric_families

    start_from_the_form(page, web_ui.url, requests_per_user="10", think_time="0.01")
    folder = web_ui.finished(1)[0]
    run = json.loads((folder / "run.json").read_text())
    page.goto(web_ui.url)
    page.get_by_role("tab", name="Download Data").click()
    page.get_by_text("connection report (keepalive-lab").wait_for()
    shot(page, "web-ui-downloads")
    anchors = page.locator("a").all()
    links = {a.text_content(): a.get_attribute("href") for a in anchors if "keepalive-lab" in (a.text_content() or "")}
    assert len(links) == 4
    for href in links.values():
        body = urllib.request.urlopen(web_ui.url + href.lstrip("."), timeout=10).read()
        assert body
        if href.endswith("run.json"):
            assert json.loads(body) == run
        if href.endswith("connections.csv"):
            assert body == (folder / "connections.csv").read_bytes()
            assert body.decode().splitlines()[1].startswith(f"/,{run['requests']},")  # every request is named "/"
        if href.endswith("report.html"):
            assert b"<html" in body[:200].lower() and b"Plotly" in body  # one file, plotly inside
    text = urllib.request.urlopen(f"{web_ui.url}/metrics", timeout=10).read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, sample.labels.get("by") or sample.labels.get("side") or "")] = sample.value
            assert sample.labels["scenario"] == "concurrent"
    conns = run["client_connections"]
    assert values[("keepalive_requests_total", "")] == run["requests"]
    assert values[("keepalive_connections_opened_total", "")] == conns["opened"]
    by_client = conns["closed_by_client"] + conns["reset_by_client"] + conns["closed_at_end"]
    assert values[("keepalive_connections_closed_total", "client")] == by_client
    assert values[("keepalive_connections_closed_total", "server")] == conns["closed_by_server"]
    assert values[("keepalive_connection_discards_total", "")] == conns["discarded"]
    last = (folder / "sockets.csv").read_text().splitlines()
    header, final = last[0].split(","), dict(zip(last[0].split(","), last[-1].split(","), strict=True))
    assert header
    assert values[("keepalive_time_wait", "client")] == float(final["client_time_wait"])
    assert values[("keepalive_port_range", "")] == float(final["port_range"])


def test_a_locustfile_measured_as_written_shows_its_request_names_in_the_connections_tab(tmp_path, page, target):
    # Locust's own fast_http_locust.py, unmodified, with the suite's measure.py beside it.
    examples = ROOT / "tests" / "data" / "locust_examples"
    port, run_dir = free_port(), tmp_path / "runs"
    log = open(tmp_path / "locust.log", "wb")  # noqa: SIM115 - Locust's output, kept for a failing test
    proc = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", f"{examples / 'fast_http_locust.py'},{ROOT / 'locustfiles/measure.py'}",
         "--web-host", "127.0.0.1", "--web-port", str(port), "--run-dir", str(run_dir), "-u", "4", "-r", "4",
         "--host", target.url],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    try:
        ui = WebUI(f"http://127.0.0.1:{port}", run_dir)
        wait_for(lambda: _reachable(ui.url), "the web UI")
        accepted = target.stats()["connections_accepted"]
        page.goto(ui.url)
        # Only the options that act on a locustfile measured as written are in the form.
        page.get_by_text("Custom parameters").click()
        assert page.locator('[name="drain"]').count() == 0 and page.locator('[name="sampleInterval"]').count() == 1
        shot(page, "web-ui-measured-form")
        page.get_by_role("button", name="Start").click()
        wait_for(lambda: list(run_dir.glob("*/sockets.csv")), "the test to start")
        time.sleep(2)
        page.get_by_role("button", name="Stop").click()
        folder = ui.finished(1)[0]
        run = json.loads((folder / "run.json").read_text())
        assert run["status"] == "stopped" and run["settings"]["own_client"] is True
        with open(folder / "connections.csv") as f:
            by_name = {row["name"]: row for row in csv.DictReader(f)}
        assert set(by_name) == {"/", "/stats/requests"}
        page.goto(f"{ui.url}/?tab=connections")
        wait_for(lambda: table_rows(page).get("Total"), "the Connections table")
        page.wait_for_timeout(2500)  # one more poll: the figures of the finished run
        shot(page, "web-ui-measured-locustfile")
        rows = table_rows(page)
        for name, row in by_name.items():
            assert rows[name][1] == row["requests"] and rows[name][2] == row["connections_opened"], name
            if row["connect_ms_mean"]:  # a name whose requests all reused a connection timed no connect
                assert float(rows[name][9]) == pytest.approx(float(row["connect_ms_mean"]), abs=0.01)
        assert int(rows["Total"][2]) == run["client_connections"]["opened"] == 4
        assert target.stats()["connections_accepted"] - accepted == 4
        assert page.console_errors == []
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
