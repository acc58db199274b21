"""The analysis stages over small recorded run folders (real runs, trimmed) in tests/data/runs."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from analysis.check import RulesError, evaluate, parse_rules
from analysis.compare import verdicts
from analysis.load import load_runs
from analysis.metrics import projection, summarize

DATA = Path(__file__).resolve().parent / "data" / "runs"
SEQ_DRAINED = DATA / "20261122T131206Z-sequential"
SEQ_UNDRAINED = DATA / "20261122T131209Z-sequential"
CONC_POOL_2 = DATA / "20261122T131213Z-concurrent"
CONC_POOL_10 = DATA / "20261122T131214Z-concurrent"
ALL = [SEQ_DRAINED, SEQ_UNDRAINED, CONC_POOL_2, CONC_POOL_10]
ACTIVE_OPENS_FIRST, ACTIVE_OPENS_LAST = 28166, 28176  # SEQ_UNDRAINED's sockets.csv, first and last row
ANALYSIS = [sys.executable, "-m", "analysis"]


def summary_of(folders):
    loaded = load_runs(folders)
    assert not loaded.skipped, loaded.skipped
    return summarize(loaded.runs, loaded.stats, loaded.samples, loaded.failures).set_index("run_id"), loaded


def test_drained_sequential_run_reuses_one_connection():
    s, _ = summary_of([SEQ_DRAINED])
    row = s.loc[SEQ_DRAINED.name]
    assert row["requests"] == 10
    assert row["connections_opened"] == 1 and row["connections_source"] == "target"
    assert row["connections_per_request"] == pytest.approx(0.1)
    assert row["churn_per_s"] == pytest.approx(1 / 2.269)


def test_undrained_sequential_run_opens_one_per_request():
    s, _ = summary_of([SEQ_UNDRAINED])
    row = s.loc[SEQ_UNDRAINED.name]
    assert row["connections_per_request"] == pytest.approx(1.0)
    assert row["peak_client_time_wait"] == 10 and row["peak_server_time_wait"] == 0
    assert row["peak_ports_in_use"] == 10
    assert row["peak_port_use_pct"] == pytest.approx(10 / 28232 * 100)
    assert row["projected_port_use_pct"] == pytest.approx(10 / 2.255 * 60 / 28232 * 100)
    assert math.isnan(row["seconds_to_exhaustion"])  # 0.9% of the range: sustainable


def test_concurrent_runs_peaks_and_sources():
    s, _ = summary_of([CONC_POOL_2, CONC_POOL_10])
    assert s.loc[CONC_POOL_2.name, "connections_opened"] == 52
    assert s.loc[CONC_POOL_2.name, "peak_client_time_wait"] == 52
    assert s.loc[CONC_POOL_10.name, "connections_opened"] == 10


def test_projection_arithmetic():
    churn = pd.Series([1000.0, 470.0, 10.0])
    port_range = pd.Series([28232.0, 28232.0, 500.0])
    p = projection(churn, port_range)
    assert p["projected_port_use_pct"].tolist() == pytest.approx(
        [1000 * 60 / 28232 * 100, 470 * 60 / 28232 * 100, 120.0]
    )
    assert p["seconds_to_exhaustion"][0] == pytest.approx(28.232)
    assert math.isnan(p["seconds_to_exhaustion"][1])  # 470/s x 60 s = 28,200 < 28,232: just sustainable
    assert p["seconds_to_exhaustion"][2] == pytest.approx(50.0)


def test_connection_source_precedence_client_then_kernel(tmp_path):
    run = shutil.copytree(SEQ_UNDRAINED, tmp_path / "r1")
    (run / "target.json").unlink()
    s, _ = summary_of([run])
    assert s.loc["r1", "connections_source"] == "client"
    assert s.loc["r1", "connections_opened"] == 10
    data = json.loads((run / "run.json").read_text())
    data["client_connections"] = None
    data["kernel"]["isolated"] = True
    (run / "run.json").write_text(json.dumps(data))
    s, _ = summary_of([run])
    assert s.loc["r1", "connections_source"] == "kernel"
    # sockets.csv's active_opens go from ACTIVE_OPENS_FIRST to ACTIVE_OPENS_LAST in this recorded run
    assert s.loc["r1", "connections_opened"] == ACTIVE_OPENS_LAST - ACTIVE_OPENS_FIRST


def test_errno_99_failures_are_counted(tmp_path):
    run = shutil.copytree(SEQ_UNDRAINED, tmp_path / "r99")
    (run / "failures.csv").write_text(
        "Method,Name,Error,Occurrences,First Seen,Last Seen\n"
        "GET,/,\"ConnectionError(NewConnectionError('Failed to establish a new connection: [Errno 99] Cannot "
        "assign requested address'))\",37,,\n"
        "GET,/,\"RemoteDisconnected('Remote end closed connection')\",5,,\n"
    )
    s, _ = summary_of([run])
    assert s.loc["r99", "addr_not_available_errors"] == 37
    assert s.loc["r99", "connection_errors"] == 5


def test_verdicts_name_the_churning_run_and_why():
    s, loaded = summary_of(ALL)
    v = verdicts(s.reset_index(), loaded.runs).set_index("run_id")
    assert v.loc[SEQ_DRAINED.name, "verdict"] == "reuses connections: 1 connection for 10 requests"
    assert not v.loc[SEQ_DRAINED.name, "churns"]
    assert v.loc[SEQ_UNDRAINED.name, "verdict"].startswith("opens 1.00 connections per request")
    assert "drain none" in v.loc[SEQ_UNDRAINED.name, "why"]
    assert "TIME_WAIT on the client" in v.loc[SEQ_UNDRAINED.name, "why"]
    assert "full pool of 2" in v.loc[CONC_POOL_2.name, "why"]
    assert v.loc[CONC_POOL_10.name, "verdict"] == "reuses connections: 10 connections for 100 requests"


def test_exhaustion_verdict_wording():
    s, loaded = summary_of([SEQ_UNDRAINED])
    row = s.reset_index()
    row.loc[0, ["connections_per_request", "seconds_to_exhaustion", "projected_port_use_pct"]] = [0.82, 35.0, 171.0]
    text = verdicts(row, loaded.runs)["verdict"][0]
    assert text == "opens 0.82 connections per request: at this rate the 28,232-port range runs out in 35 s"


# -- bad input -------------------------------------------------------------------------------


def broken(tmp_path, name, edit):
    run = shutil.copytree(SEQ_DRAINED, tmp_path / name)
    edit(run)
    return run


BROKEN = {
    "missing": lambda r: shutil.rmtree(r),
    "empty": lambda r: [p.unlink() for p in r.iterdir()],
    "badjson": lambda r: (r / "run.json").write_text('{"scenario": "x",'),
    "nokey": lambda r: (r / "run.json").write_text('{"status": "completed"}'),
    "torn": lambda r: (r / "sockets.csv").write_text((r / "sockets.csv").read_text() + "1795352000.1,vm,3,4"),
    "nocols": lambda r: (r / "stats.csv").write_text("Type,Name\nGET,/\n"),
    "running": lambda r: (r / "run.json").write_text(
        (r / "run.json").read_text().replace('"status": "completed"', '"status": "running"')
    ),
}
EXPECTED = {
    "missing": "no such folder",
    "empty": "empty folder",
    "badjson": "run.json: not valid JSON",
    "nokey": "run.json: missing key 'scenario'",
    "torn": "sockets.csv: last line is torn",
    "nocols": "stats.csv: missing columns Request Count",
    "running": "status 'running'",
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_bad_run_folders_are_skipped_with_one_line(tmp_path, name):
    run = broken(tmp_path, name, BROKEN[name])
    loaded = load_runs([run, SEQ_UNDRAINED])
    assert len(loaded.runs) == 1
    assert len(loaded.skipped) == 1
    reason = str(loaded.skipped[0])
    assert "\n" not in reason and str(run) in reason and EXPECTED[name] in reason


def test_report_skips_bad_runs_lists_them_and_escapes_run_data(tmp_path):
    bad = broken(tmp_path, "badjson", BROKEN["badjson"])
    evil = shutil.copytree(SEQ_UNDRAINED, tmp_path / "evil")
    data = json.loads((evil / "run.json").read_text())
    data["status_reason"] = "<script>alert('x')</script>"
    data["settings"]["drain"] = "<img src=x onerror=alert(1)>"
    (evil / "run.json").write_text(json.dumps(data))
    out = tmp_path / "report"
    proc = subprocess.run(
        [*ANALYSIS, "report", str(SEQ_DRAINED), str(evil), str(bad), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("skipped:") == 1 and "run.json: not valid JSON" in proc.stderr
    page = (out / "index.html").read_text()
    assert "Skipped run folders" in page and "not valid JSON" in page
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    assert "<img src=x" not in page
    assert (out / "plotly.min.js").stat().st_size > 1_000_000
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["run_id"]) == [SEQ_DRAINED.name, "evil"]


def test_report_with_nothing_to_report_is_exit_2(tmp_path):
    proc = subprocess.run(
        [*ANALYSIS, "report", str(tmp_path / "nope"), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("python -m analysis: error: no run folder could be loaded")


# -- the gate --------------------------------------------------------------------------------

RULES = """
[scenarios.sequential]
connections_per_request = "== 1"
addr_not_available_errors = "== 0"

[scenarios."concur*"]
connections_opened = "== 10"
"""


def test_rules_evaluate_against_the_newest_run_per_scenario():
    s, _ = summary_of(ALL)
    results = evaluate(parse_rules(RULES), s.reset_index())
    assert len(results) == 3
    assert results["passed"].all()
    assert set(results["run_id"]) == {SEQ_UNDRAINED.name, CONC_POOL_10.name}


@pytest.mark.parametrize(
    "text, needle",
    [
        ('[scenarios.x]\nconnections_per_request = "<= 1"', "matches no run"),
        ('[scenarios.sequential]\nbogus = "<= 1"', "unknown metric 'bogus'"),
        ('[scenarios.sequential]\nrps = "about 5"', "bound 'about 5' is not valid"),
        ("[scenarios.sequential]\nrps = 5", "bound 5 is not valid"),
        ("[scenarios.sequential\n", "not valid TOML"),
        ("title = 'x'\n", "no [scenarios.NAME] tables"),
    ],
)
def test_bad_rules_are_refused(text, needle):
    s, _ = summary_of(ALL)
    with pytest.raises(RulesError, match=None) as e:
        evaluate(parse_rules(text), s.reset_index())
    assert needle in str(e.value)


def run_check(tmp_path, rules, *extra):
    path = tmp_path / "rules.toml"
    path.write_text(rules)
    return subprocess.run(
        [*ANALYSIS, "check", *map(str, ALL), "--rules", str(path), *extra], capture_output=True, text=True, timeout=120
    )


def test_check_exit_codes_table_and_junit(tmp_path):
    ok = run_check(tmp_path, RULES, "--junit", str(tmp_path / "ok.xml"))
    assert ok.returncode == 0, ok.stderr
    assert "3 passed, 0 failed" in ok.stdout
    failing = RULES + '\n[scenarios."concurrent"]\nconnections_per_request = "<= 0.01"\n'
    bad = run_check(tmp_path, failing, "--junit", str(tmp_path / "bad.xml"))
    assert bad.returncode == 1
    assert "FAIL" in bad.stdout and "3 passed, 1 failed" in bad.stdout
    suite = ET.parse(tmp_path / "bad.xml").getroot()
    assert suite.get("tests") == "4" and suite.get("failures") == "1"
    assert len(suite.findall("testcase/failure")) == 1
    broken_rules = run_check(tmp_path, '[scenarios.sequential]\nnope = "== 1"\n')
    assert broken_rules.returncode == 2
    assert len(broken_rules.stderr.strip().splitlines()) == 1
    missing = subprocess.run(
        [*ANALYSIS, "check", "--rules", str(tmp_path / "absent.toml")], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2 and "cannot be read" in missing.stderr
