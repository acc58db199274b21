"""The report page in headless Chromium (Debian's chromium): it loads offline with no console
errors, and its tables and charts are there. The screenshot is kept in reports/test-artifacts/."""

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
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=8000",
]

# Put in front of a copy of the page: collects uncaught errors and console.error calls into the DOM.
COLLECTOR = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e)));
const __ce = console.error; console.error = (...a) => { window.__errors.push(a.join(' ')); __ce(...a); };
window.addEventListener('load', () => setTimeout(() => {
  const p = document.createElement('pre'); p.id = 'console-errors';
  p.textContent = JSON.stringify(window.__errors); document.body.appendChild(p); }, 1000));
</script>"""


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (make tools installs Debian's chromium as root)"
)
def test_report_loads_in_chromium_without_errors(tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "analysis", "report", *map(str, ALL), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    page = (out / "index.html").read_text()
    probe = out / "probe.html"
    probe.write_text(page.replace("<head>", "<head>" + COLLECTOR, 1))
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run(
        [CHROMIUM, *FLAGS, *profile, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    errors = re.search(r'<pre id="console-errors">(.*?)</pre>', dom, re.S)
    assert errors, "the page never finished loading"
    assert json.loads(errors.group(1).replace("&quot;", '"')) == []
    assert dom.count('class="sev-') == 2 * len(ALL)  # the first screen's rows (4 scenarios) + every run's
    assert 'id="summary"' in dom and 'id="overview"' in dom
    assert dom.count("js-plotly-plot") == 2 + len(ALL)  # two comparison charts, one timeline per run
    assert dom.count('class="main-svg"') >= 2 + len(ALL)  # plotly drew them (offline, from plotly.min.js)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    subprocess.run(
        [CHROMIUM, *FLAGS, *profile, "--window-size=1400,2600", f"--screenshot={shot}", (out / "index.html").as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 50_000
