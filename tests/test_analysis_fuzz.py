"""Property tests: whatever the run folders hold, ``report`` and ``check`` never raise.

Run folders are generated from a real recorded one: numbers anywhere from 0 to huge (no request,
no connection, no duration, no sample), fields missing or of the wrong type, files emptied or
truncated. ``report`` must build (skipping what it cannot read, one line each); ``check`` must
answer 0, 1 or 2.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.__main__ import check, report

TEMPLATE = Path(__file__).resolve().parent / "data" / "runs" / "20261123T145954Z-seq-undrained"
COUNTS = st.one_of(st.just(0), st.integers(min_value=0, max_value=10**9), st.none())
ANY_JSON = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
RUN_FIELDS = ["requests", "failures", "duration_s", "last_request_ts", "status", "scenario", "settings", "kernel",
              "client_connections", "target", "sidecar", "host", "locust_options", "start"]  # fmt: skip
CLIENT_FIELDS = ["opened", "closed_by_client", "reset_by_client", "closed_by_server", "closed_at_end",
                 "first_connect_ts", "first_addr_not_available_ts", "tls_errors"]  # fmt: skip


@st.composite
def run_folder(draw: st.DrawFn) -> dict:
    """A description of how to bend the template run folder."""
    return {
        "requests": draw(COUNTS),
        "failures": draw(COUNTS),
        "stats_row": draw(
            st.lists(st.one_of(st.integers(0, 10**6), st.just(0), st.just("N/A")), min_size=5, max_size=5)
        ),  # fmt: skip
        "client": {k: draw(st.one_of(COUNTS, st.floats(0, 2e9))) for k in CLIENT_FIELDS},
        "replace": draw(st.dictionaries(st.sampled_from(RUN_FIELDS), ANY_JSON, max_size=3)),
        "drop": draw(st.lists(st.sampled_from(RUN_FIELDS), max_size=2)),
        "samples": draw(st.integers(0, 4)),  # rows of sockets.csv kept
        "sample_value": draw(st.sampled_from(["0", "7", "99999999", "", "x"])),
        "empty_file": draw(st.sampled_from([None, "stats.csv", "sockets.csv", "failures.csv", "target.json"])),
        "status": draw(st.sampled_from(["completed", "failed", "interrupted", "stopped", "stuck", "running", "bogus"])),
    }


def bend(folder: Path, how: dict) -> None:
    run = json.loads((folder / "run.json").read_text())
    run["requests"], run["failures"], run["status"] = how["requests"], how["failures"], how["status"]
    if isinstance(run.get("client_connections"), dict):
        run["client_connections"].update(how["client"])
    run.update(how["replace"])
    for key in how["drop"]:
        run.pop(key, None)
    (folder / "run.json").write_text(json.dumps(run))
    stats = (folder / "stats.csv").read_text().splitlines()
    last = stats[-1].split(",")
    last[2:7] = map(str, how["stats_row"])
    stats[-1] = ",".join(last)
    (folder / "stats.csv").write_text("\n".join(stats) + "\n")
    rows = (folder / "sockets.csv").read_text().splitlines()
    kept = [rows[0], *rows[1 : 1 + how["samples"]]]
    if len(kept) > 1:
        cells = kept[-1].split(",")
        cells[4] = how["sample_value"]
        kept[-1] = ",".join(cells)
    (folder / "sockets.csv").write_text("\n".join(kept) + "\n")
    if how["empty_file"]:
        (folder / how["empty_file"]).write_text("")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(run_folder(), min_size=1, max_size=3))
def test_report_and_check_never_raise(bends):
    with tempfile.TemporaryDirectory() as tmp:
        folders = []
        for i, how in enumerate(bends):
            folder = Path(tmp) / "runs" / f"20261123T00000{i}Z-fuzz"
            shutil.copytree(TEMPLATE, folder)
            bend(folder, how)
            folders.append(folder)
        rules = Path(tmp) / "rules.toml"
        rules.write_text('[scenarios."*"]\nconnections_per_request = "<= 1"\nchurn_per_s = ">= 0"\n')
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            built = report(folders, Path(tmp) / "report")
            checked = check(folders, rules, None)
        assert built in (0, 2)
        assert checked in (0, 1, 2)
        if built == 0:
            assert (Path(tmp) / "report" / "index.html").stat().st_size > 0
