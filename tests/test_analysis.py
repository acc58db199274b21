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
from analysis.compare import verdict, verdicts
from analysis.load import load_runs
from analysis.metrics import summarize

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "runs"  # recorded by tests/data/record.py, each in a private namespace
SEQ_DRAINED = DATA / "20261123T145950Z-seq-drained"
SEQ_UNDRAINED = DATA / "20261123T145954Z-seq-undrained"
CONC_POOL_2 = DATA / "20261123T145958Z-conc-pool-2"
CONC_POOL_10 = DATA / "20261123T150001Z-conc-pool-10"
ALL = [SEQ_DRAINED, SEQ_UNDRAINED, CONC_POOL_2, CONC_POOL_10]
OLD_FORMAT = HERE / "data" / "old-format" / "20261122T131209Z-sequential"  # before closes and own sockets
# SEQ_UNDRAINED's sockets.csv, first and last row: its 10 connections and the plugin's one read of
# the target's counters (on the target's control port) at the end.
ACTIVE_OPENS_FIRST, ACTIVE_OPENS_LAST = 1, 12
ANALYSIS = [sys.executable, "-m", "analysis"]


def summary_of(folders):
    loaded = load_runs(folders)
    assert not loaded.skipped, loaded.skipped
    return summarize(loaded.runs, loaded.stats, loaded.samples, loaded.failures).set_index("run_id"), loaded


def load_window_s(folder: Path) -> float:
    """From the run's first connection to its last request, as run.json recorded them."""
    run = json.loads((folder / "run.json").read_text())
    return run["last_request_ts"] - run["client_connections"]["first_connect_ts"]


def test_drained_sequential_run_reuses_one_connection():
    s, _ = summary_of([SEQ_DRAINED])
    row = s.loc[SEQ_DRAINED.name]
    assert row["requests"] == 10
    assert row["connections_opened"] == 1 and row["connections_source"] == "target"
    assert row["connections_per_request"] == pytest.approx(0.1)
    # The one connection's TIME_WAIT comes from closing the idle pool at the end: not churn.
    assert row["peak_client_time_wait"] == 1
    assert row["client_closes"] == 0 and row["churn_per_s"] == 0 and row["churn_source"] == "kernel"
    assert row["projected_port_use_pct"] == 0 and math.isnan(row["seconds_to_exhaustion"])


def test_undrained_sequential_run_opens_one_per_request():
    s, _ = summary_of([SEQ_UNDRAINED])
    row = s.loc[SEQ_UNDRAINED.name]
    assert row["connections_per_request"] == pytest.approx(1.0)
    assert row["client_closes"] == 10 and row["client_closes_per_request"] == 1
    assert row["peak_client_time_wait"] == 10 and row["peak_server_time_wait"] == 0
    assert row["peak_ports_in_use"] == 10 and row["preexisting_client_time_wait"] == 0
    assert row["peak_port_use_pct"] == pytest.approx(10 / 28232 * 100)
    assert row["churn_per_s"] == pytest.approx(10 / load_window_s(SEQ_UNDRAINED))
    assert row["projected_port_use_pct"] == pytest.approx(10 / load_window_s(SEQ_UNDRAINED) * 60 / 28232 * 100)
    assert math.isnan(row["seconds_to_exhaustion"])  # about 1% of the range: sustainable


def test_concurrent_runs_closes_peaks_and_sources():
    s, _ = summary_of([CONC_POOL_2, CONC_POOL_10])
    small, big = s.loc[CONC_POOL_2.name], s.loc[CONC_POOL_10.name]
    assert small["connections_opened"] == 35 and small["peak_client_time_wait"] == 35
    assert small["client_closes"] == 33  # the 33 discards; the pool's last 2 closed idle at the end
    assert small["churn_per_s"] == pytest.approx(33 / load_window_s(CONC_POOL_2))
    assert big["connections_opened"] == 10 and big["peak_client_time_wait"] == 10
    assert big["client_closes"] == 0 and big["churn_per_s"] == 0 and big["projected_port_use_pct"] == 0


def test_projection_arithmetic_and_zero_guards():
    s, loaded = summary_of([SEQ_UNDRAINED])
    run = loaded.runs.iloc[0].to_dict()
    from analysis.metrics import run_figures

    window = load_window_s(SEQ_UNDRAINED)
    samples = loaded.samples.sort_values("ts")
    # 470 new connections/s hold 28,200 of 28,232 ports: sustainable; 1,000/s run out in 28.2 s.
    for churned, pct, secs in ((470 * window, 470 * 60 / 28232 * 100, math.nan), (1000 * window, 212.5, 28.232)):
        s2 = samples.assign(client_time_wait_churned=samples["client_time_wait_churned"].clip(upper=0).astype(float))
        s2.loc[s2.index[-1], "client_time_wait_churned"] = churned
        figures = run_figures(run, {"requests": 10}, s2)
        assert figures["projected_port_use_pct"] == pytest.approx(pct, rel=1e-3)
        assert (math.isnan(secs) and math.isnan(figures["seconds_to_exhaustion"])) or figures[
            "seconds_to_exhaustion"
        ] == pytest.approx(secs, rel=1e-3)
    empty = run_figures({**run, "first_connect_ts": None, "last_request_ts": None}, {"requests": 0}, samples[:0])
    for name in ("client_closes_per_request", "churn_per_s", "projected_port_use_pct", "seconds_to_exhaustion",
                 "server_churn_per_s", "projected_server_tw_pct", "peak_client_time_wait"):  # fmt: skip
        assert math.isnan(empty[name]), name  # no request, no load window, no sample: empty, not an error


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
    assert s.loc["r1", "client_closes"] == 10  # no client counts: the kernel's count of its TIME_WAIT


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
    assert v.loc[SEQ_UNDRAINED.name, "verdict"].startswith("churns: the client closes 1 connection per request")
    assert "drain none" in v.loc[SEQ_UNDRAINED.name, "why"]
    assert "TIME_WAIT on the client" in v.loc[SEQ_UNDRAINED.name, "why"]
    assert "full pool of 2" in v.loc[CONC_POOL_2.name, "why"]
    assert v.loc[CONC_POOL_10.name, "verdict"] == "reuses connections: 10 connections for 100 requests"
    assert v.loc[CONC_POOL_10.name, "why"] == ""


def test_older_run_folders_still_load():
    s, _ = summary_of([OLD_FORMAT])
    row = s.loc[OLD_FORMAT.name]
    assert row["connections_opened"] == 10 and row["peak_client_time_wait"] == 10
    assert math.isnan(row["client_closes"]) and math.isnan(row["churn_per_s"])  # not counted then


def row_with(**figures) -> pd.Series:
    s, _ = summary_of([SEQ_UNDRAINED])
    row = s.reset_index().iloc[0].copy()
    for name, value in figures.items():
        row[name] = value
    return row


def test_exhaustion_and_tw_reuse_wording_never_contradict():
    churning = row_with(client_closes_per_request=0.82, churn_per_s=1000.0, seconds_to_exhaustion=28.2,
                        projected_port_use_pct=212.0, tw_reuse_limit_per_s=float("nan"))  # fmt: skip
    assert verdict(churning) == (
        "churns: the client closes 0.82 connections per request; at 1,000 new connections/s the 28,232-port "
        "range runs out in 28 s"
    )
    reused = row_with(client_closes_per_request=0.82, churn_per_s=1000.0, seconds_to_exhaustion=28.2,
                      projected_port_use_pct=212.0, tw_reuse_limit_per_s=28232.0)  # fmt: skip
    assert verdict(reused) == (
        "churns: the client closes 0.82 connections per request; with no TIME_WAIT reuse the 28,232-port range "
        "would run out in 28 s, but tcp_tw_reuse lets it hold up to 28,232 new connections/s"
    )
    sustainable = row_with(client_closes_per_request=1.0, churn_per_s=5.0, seconds_to_exhaustion=float("nan"),
                           projected_port_use_pct=1.06, tw_reuse_limit_per_s=28232.0)  # fmt: skip
    assert "tcp_tw_reuse" not in verdict(sustainable)


def test_a_short_stopped_run_on_one_connection_reuses():
    row = row_with(requests=4, connections_opened=1, connections_per_request=0.25, client_closes=0,
                   client_closes_per_request=0.0, status="stopped")  # fmt: skip
    assert verdict(row) == "[stopped] reuses connections: 1 connection for 4 requests"


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


def test_report_of_a_folder_of_run_folders_takes_every_run_under_it(tmp_path):
    matrix = tmp_path / "matrix-20261123T145950Z"
    for run in (SEQ_DRAINED, CONC_POOL_2):
        shutil.copytree(run, matrix / run.name.split("Z-")[1] / run.name)
    out = tmp_path / "report"
    proc = subprocess.run([*ANALYSIS, "report", str(matrix), "-o", str(out)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "(2 runs, 0 skipped" in proc.stdout
    assert list(pd.read_csv(out / "summary.csv")["run_id"]) == [SEQ_DRAINED.name, CONC_POOL_2.name]


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
[scenarios."seq-*"]
addr_not_available_errors = "== 0"

[scenarios.conc-pool-10]
connections_opened = "== 10"
"""


def test_rules_evaluate_against_the_newest_run_per_scenario():
    s, _ = summary_of(ALL)
    both = s.reset_index()
    both.loc[both["scenario"].str.startswith("seq-"), "scenario"] = "sequential"  # two runs of one scenario
    results = evaluate(parse_rules('[scenarios.sequential]\nconnections_per_request = "== 1"\n'), both)
    assert list(results["run_id"]) == [SEQ_UNDRAINED.name] and results["passed"].all()
    results = evaluate(parse_rules(RULES), s.reset_index())
    assert len(results) == 3 and results["passed"].all()
    assert set(results["run_id"]) == {SEQ_DRAINED.name, SEQ_UNDRAINED.name, CONC_POOL_10.name}


def test_a_rule_on_a_run_that_did_not_complete_fails_unless_allowed():
    s, _ = summary_of([CONC_POOL_10])
    row = s.reset_index()
    row["status"] = "interrupted"
    rules = parse_rules(RULES.split("\n\n", 1)[1])
    held = evaluate(rules, row)
    assert list(held["passed"]) == [False] and list(held["status"]) == ["interrupted"]
    assert list(evaluate(rules, row, ("completed", "interrupted"))["passed"]) == [True]


@pytest.mark.parametrize(
    "text, needle",
    [
        ('[scenarios.x]\nconnections_per_request = "<= 1"', "matches no run"),
        ('[scenarios.seq-drained]\nbogus = "<= 1"', "unknown metric 'bogus'"),
        ('[scenarios.seq-drained]\nrps = "about 5"', "bound 'about 5' is not valid"),
        ("[scenarios.seq-drained]\nrps = 5", "bound 5 is not valid"),
        ("[scenarios.seq-drained\n", "not valid TOML"),
        ("title = 'x'\n", "no [scenarios.NAME] tables"),
    ],
)
def test_bad_rules_are_refused(text, needle):
    s, _ = summary_of(ALL)
    with pytest.raises(RulesError, match=None) as e:
        evaluate(parse_rules(text), s.reset_index())
    assert needle in str(e.value)


def run_check(tmp_path, rules, *extra, folders=ALL):
    path = tmp_path / "rules.toml"
    path.write_text(rules)
    return subprocess.run(
        [*ANALYSIS, "check", *map(str, folders), "--rules", str(path), *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_exit_codes_table_and_junit(tmp_path):
    ok = run_check(tmp_path, RULES, "--junit", str(tmp_path / "ok.xml"))
    assert ok.returncode == 0, ok.stderr
    assert "3 passed, 0 failed" in ok.stdout
    assert ok.stdout.splitlines()[1].split()[1] == "completed"  # each run's status is printed
    failing = RULES + '\n[scenarios."conc-pool-2"]\nconnections_per_request = "<= 0.01"\n'
    bad = run_check(tmp_path, failing, "--junit", str(tmp_path / "bad.xml"))
    assert bad.returncode == 1
    assert "FAIL" in bad.stdout and "3 passed, 1 failed" in bad.stdout
    suite = ET.parse(tmp_path / "bad.xml").getroot()
    assert suite.get("tests") == "4" and suite.get("failures") == "1"
    assert len(suite.findall("testcase/failure")) == 1
    broken_rules = run_check(tmp_path, '[scenarios.seq-drained]\nnope = "== 1"\n')
    assert broken_rules.returncode == 2
    assert len(broken_rules.stderr.strip().splitlines()) == 1
    missing = subprocess.run(
        [*ANALYSIS, "check", "--rules", str(tmp_path / "absent.toml")], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2 and "cannot be read" in missing.stderr


def test_check_fails_a_rule_on_an_interrupted_run_unless_allowed(tmp_path):
    run = shutil.copytree(CONC_POOL_10, tmp_path / "runs" / CONC_POOL_10.name)
    data = json.loads((run / "run.json").read_text())
    data["status"], data["status_reason"] = "interrupted", "stopped by SIGTERM before the test ended"
    (run / "run.json").write_text(json.dumps(data))
    rules = '[scenarios.conc-pool-10]\nconnections_opened = "== 10"\n'
    held = run_check(tmp_path, rules, folders=[run])
    assert held.returncode == 1 and "FAIL (run interrupted)" in held.stdout
    allowed = run_check(tmp_path, rules, "--allow-status", "interrupted", folders=[run])
    assert allowed.returncode == 0, allowed.stdout
