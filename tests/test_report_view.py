"""The report as a reviewer meets it: the first screen, the change against earlier runs, the gate on
that change, and the page in real Chromium at 1366x768 from a copied folder. Screenshots are kept
in reports/test-artifacts/."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_analysis import ALL

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "reports" / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ANALYSIS = [sys.executable, "-m", "analysis"]


def analysis(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ANALYSIS, *map(str, args)], capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def before_and_after(tmp_path_factory):
    """The same scenario run twice for real: first reusing its connection (drain full), then with a
    change that makes it open one per request (drain none)."""
    from conftest import locust_command

    tmp = tmp_path_factory.mktemp("regression")
    folders = []
    for i, drain in enumerate(("full", "none")):
        run_dir = tmp / f"runs-{i}"
        proc = subprocess.run(locust_command("sequential.py", "--headless", "--run-dir", str(run_dir), "--scenario",
                                             "pr-check", "--drain", drain), capture_output=True, text=True,
                              timeout=120, cwd=tmp)  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        (folder,) = run_dir.iterdir()
        folders.append(folder)
    return folders


def test_the_first_screen_has_a_row_per_scenario_worst_first(tmp_path, before_and_after):
    before, after = before_and_after
    out = tmp_path / "report"
    proc = analysis("report", *ALL, before, after, "-o", out)
    assert proc.returncode == 0, proc.stderr
    page = (out / "index.html").read_text()
    overview = page[page.index('<table id="overview">') : page.index("</table>", page.index('<table id="overview">'))]
    # One row per scenario (pr-check ran twice: its newest run), named by the scenario, not a run id.
    rows = overview.split("<tr ")[1:]
    assert len(rows) == 5
    assert "pr-check</a>" in overview and after.name not in overview.replace(f"#run-{after.name}", "")
    levels = [int(r.split('data-severity="')[1][0]) for r in rows]
    assert levels == sorted(levels, reverse=True) and levels[0] == 1 and levels[-1] == 0
    # Each verdict at most 12 words; every header's definition on hover; a legend for the colours.
    shorts = [r.split('<td class="l short">')[1].split("</td>")[0] for r in rows]
    assert all(len(s.split()) <= 12 for s in shorts), shorts
    assert "reuses: 1 connection for 10 requests" in shorts  # conc-pool-10's neighbour, seq-drained
    assert overview.count(' title="') >= 10 and 'id="legend"' in page


def test_the_headline_names_failed_runs_apart_from_those_out_of_ports(tmp_path):
    from test_analysis import SEQ_DRAINED

    down = shutil.copytree(SEQ_DRAINED, tmp_path / "20261123T150500Z-down")
    record = json.loads((down / "run.json").read_text())
    record.update(scenario="down", status="failed", status_reason="server unreachable: …")
    (down / "run.json").write_text(json.dumps(record))
    proc = analysis("report", *ALL, down, "-o", tmp_path / "report")
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "report" / "index.html").read_text()
    headline = page.split("<p class='headline'>")[1].split(" Worst:")[0]
    assert headline == "5 scenarios: 1 failed, 2 churns, 2 reuses."


def test_a_change_that_opens_more_connections_is_shown_and_gated(tmp_path, before_and_after):
    before, after = before_and_after
    out = tmp_path / "report"
    proc = analysis("report", before, after, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "pr-check: connections per request rose from 0.100 to 1.000 (+900.0%)" in proc.stdout
    page = (out / "index.html").read_text()
    assert "Did this change make the client open more connections? <b>Yes" in page
    table = page[page.index("<table id='regression'>") :]
    row = next(r for r in table.split("<tr")[1:] if ">connections_per_request<" in r)
    cells = [re.sub("<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
    assert cells == ["pr-check", "connections_per_request", "0.100", "1.000", "▲ 0.900", "+900.0%"], cells
    assert 'class="worse"' in row
    # The gate bounds the change: against the previous run, or a baseline folder.
    rules = tmp_path / "rules.toml"
    rules.write_text('[scenarios.pr-check]\n"connections_per_request.delta_pct" = "<= 10"\n')
    for args in ((before, after), (after, "--baseline", before.parent)):
        check = analysis("check", *args, "--rules", rules)
        assert check.returncode == 1, check.stdout + check.stderr
        assert "connections_per_request.delta_pct" in check.stdout and "900" in check.stdout
    same = analysis("check", before, "--baseline", before.parent, "--rules", rules)
    assert same.returncode == 0, same.stdout  # the baseline against itself: no change
    alone = analysis("check", after, "--rules", rules)
    assert alone.returncode == 1 and "missing" in alone.stdout  # nothing to compare with: not measured
    bad = analysis("check", after, "--rules", rules, "--baseline", tmp_path / "nowhere")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--baseline" in bad.stderr


@pytest.fixture
def many_scenarios(tmp_path):
    """Nine scenarios with long names (copies of the recorded runs, renamed): the charts turn sideways."""
    folders = []
    for i in range(9):
        source = ALL[i % len(ALL)]
        folder = tmp_path / "runs" / f"20261123T1600{i:02d}Z-copy-{i}"
        shutil.copytree(source, folder)
        run = json.loads((folder / "run.json").read_text())
        run["scenario"] = f"a-rather-long-scenario-name-number-{i}-{source.name.split('-', 1)[1]}"
        run["start"] = f"2026-11-23T16:00:{i:02d}.000Z"
        (folder / "run.json").write_text(json.dumps(run))
        folders.append(folder)
    return folders


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make tools installs it as root)")
@pytest.mark.parametrize("which", ["few", "many"])
def test_the_page_reads_at_1366_from_a_copied_folder(tmp_path, which, many_scenarios):
    from playwright.sync_api import sync_playwright

    out = tmp_path / "report"
    folders = ALL if which == "few" else many_scenarios
    assert analysis("report", *folders, "-o", out).returncode == 0
    copied = tmp_path / "elsewhere" / "artifact"
    shutil.copytree(out, copied)  # as a CI artifact is: the run folders are not beside it
    shutil.rmtree(out)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((copied / "index.html").as_uri())
        page.wait_for_function("document.querySelectorAll('.main-svg').length >= 2", timeout=20000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"report-1366-{which}.png"))
        page.screenshot(path=str(ARTIFACTS / f"report-1366-{which}-full.png"), full_page=True)
        assert errors == []
        # No horizontal overflow, and the first screen's table fits without scrolling.
        assert page.evaluate("document.documentElement.scrollWidth") <= 1366
        assert page.evaluate("document.getElementById('overview').parentElement.scrollWidth") <= page.evaluate(
            "document.getElementById('overview').parentElement.clientWidth")  # fmt: skip
        # Every chart has its axis titles.
        for chart in page.locator(".js-plotly-plot").all():
            titles = [t.text_content() or "" for t in chart.locator(".g-xtitle text, .g-x2title text").all()]
            ytitles = [t.text_content() or "" for t in chart.locator(".g-ytitle text, .g-y2title text").all()]
            assert titles and all(t.strip() for t in titles) and ytitles and all(t.strip() for t in ytitles)
        # No two tick labels of a comparison chart overlap.
        for chart_id in ("chart-cpr", "chart-latency"):
            for axis in ("xtick", "ytick"):
                boxes = page.evaluate(
                    f"[...document.querySelectorAll('#{chart_id} .{axis} text')].map(t => t.getBoundingClientRect())"
                    ".filter(b => b.width > 0).map(b => [b.left, b.top, b.right, b.bottom])"
                )
                for i, a in enumerate(boxes):
                    for b in boxes[i + 1 :]:
                        overlap = a[0] < b[2] - 1 and b[0] < a[2] - 1 and a[1] < b[3] - 1 and b[1] < a[3] - 1
                        assert not overlap, (chart_id, axis, a, b)
        if which == "many":  # nine long names: bars turn sideways, names read horizontally
            names = [t.text_content() or "" for t in page.locator("#chart-cpr .ytick text").all()]
            assert len(names) == 9 and all(n.startswith("a-rather-long") for n in names)
        # Every link resolves inside the copied folder.
        hrefs = page.evaluate("[...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))")
        anchors = set(page.evaluate("[...document.querySelectorAll('[id]')].map(e => e.id)"))
        browser.close()
    files = [h for h in hrefs if not h.startswith("#")]
    assert len(files) == len(folders)  # each run's Locust report, copied in
    for href in hrefs:
        if href.startswith("#"):
            assert href[1:] in anchors, href
        else:
            assert "://" not in href and not href.startswith(("/", "..")) and (copied / href).is_file(), href
