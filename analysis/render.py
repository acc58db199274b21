"""Stage 4, render: the comparison report as one HTML page (pure: returns the text).

The page answers "is anything wrong, and where" on its first screen: a row per scenario (its
newest run), worst first, coloured by :func:`analysis.compare.severity` with a legend, each with a
verdict of at most 12 words; then the change against earlier runs (or ``--baseline``), the hosts,
the comparison charts and every run in detail. Column headers show their definition (from
:data:`keepalive_lab.schema.SUMMARY`) on hover.

The page loads ``plotly.min.js`` from beside itself (the CLI writes it there), so it works
offline; every link is relative and points inside the report's folder. Every string that comes
from run data is HTML-escaped; chart labels are reduced to safe characters before they reach the
charts' JSON.
"""

from __future__ import annotations

import html
import json
import math
import re
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from analysis.compare import SEVERITIES, SEVERITY_NAMES
from analysis.metrics import per_run
from keepalive_lab.schema import HOSTS, SUMMARY

PLOTLY_JS = "plotly.min.js"
MAX_POINTS = 700  # per series, about a point per pixel of a chart; each bucket keeps its maximum, so peaks survive
HORIZONTAL_FROM = 7  # comparison charts turn their bars sideways from this many scenarios
_CONFIG = {"displaylogo": False, "responsive": True}
MEANING = {c.name: c.meaning for c in SUMMARY}
HOST_MEANING = {c.name: c.meaning for c in HOSTS}
SEVERITY_COLOURS = {3: "#fde0dd", 2: "#feebc8", 1: "#fff8d6", 0: "#e8f5e9"}
SEVERITY_MARKS = {3: "#c62828", 2: "#e65100", 1: "#b08900", 0: "#2e7d32"}
# Sockets by side and state: a colour per side, a dash per state, so lines that coincide stay apart.
SOCKET_LINES = (
    ("client_time_wait", "client TIME_WAIT", {"color": "#d62728", "width": 2.5, "dash": "solid"}),
    ("server_time_wait", "server TIME_WAIT", {"color": "#1f77b4", "width": 2.5, "dash": "solid"}),
    ("client_established", "client ESTABLISHED", {"color": "#ff7f0e", "width": 4, "dash": "dash"}),
    ("server_established", "server ESTABLISHED", {"color": "#17becf", "width": 2, "dash": "dot"}),
)

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 20px 24px; color: #222; }
h1 { margin-bottom: 4px; } h2 { margin-top: 32px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; vertical-align: top; }
th { background: #f4f4f4; } th[title] { cursor: help; text-decoration: underline dotted; }
td.l, th.l { text-align: left; } .scroll { overflow-x: auto; max-width: 100%; }
td.name { max-width: 250px; overflow-wrap: anywhere; } td.short { min-width: 220px; }
#overview td, #overview th { padding: 3px 6px; }
.verdict { font-weight: 600; } .why { color: #555; } .muted { color: #777; }
.skipped li { color: #a00; } .settings td { text-align: left; }
.legend { display: flex; flex-wrap: wrap; gap: 6px 18px; margin: 6px 0 2px 0; font-size: 13px; }
.legend span.swatch { display: inline-block; width: 14px; height: 14px; border: 1px solid #999;
  vertical-align: -2px; margin-right: 5px; }
.headline { font-size: 16px; } .mark { font-weight: 700; }
td.worse { color: #c62828; font-weight: 600; } td.better { color: #2e7d32; }
"""


def safe_label(text: Any) -> str:
    """A chart label that cannot break out of the charts' JSON or HTML."""
    return re.sub(r"[^A-Za-z0-9 ._:%/()-]", "_", str(text))[:120]


def esc(value: Any) -> str:
    return html.escape("" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value))


def fmt(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, int | float | np.integer | np.floating):
        return f"{value:,.{digits}f}"
    return esc(value)


def th(title: str, column: str | None = None, left: bool = False, meanings: dict[str, str] = MEANING) -> str:
    """A header cell; with ``column``, its definition shows on hover."""
    meaning = meanings.get(column or "", "")
    attrs = (' class="l"' if left else "") + (f' title="{esc(meaning)}"' if meaning else "")
    return f"<th{attrs}>{esc(title)}</th>"


def run_labels(summary: pd.DataFrame) -> dict[str, str]:
    """A short name per run: its scenario, with its start time when the scenario ran more than once."""
    counts = summary["scenario"].value_counts()
    out = {}
    for r in summary.itertuples():
        name = str(r.scenario)
        if counts[r.scenario] > 1:
            name += " " + str(r.start)[11:19]
        out[r.run_id] = name
    return out


def downsample(t_s: np.ndarray, frame: pd.DataFrame, columns: list[str], max_points: int = MAX_POINTS) -> pd.DataFrame:
    """``t_s`` and ``frame``'s ``columns`` in at most ``max_points`` rows: each bucket of consecutive
    samples keeps its maximum (and its first time). Column by column, so a long run's samples are
    not copied whole."""
    if len(frame) <= max_points:
        return pd.DataFrame({"t_s": t_s, **{c: frame[c].to_numpy(dtype=float) for c in columns}})
    starts = np.unique(np.arange(max_points) * len(frame) // max_points)
    out = {"t_s": t_s[starts]}
    for c in columns:
        out[c] = np.fmax.reduceat(frame[c].to_numpy(), starts).astype(float)  # NaN-aware for a float column
    return pd.DataFrame(out)


def _plotly_tag(inline: str | None) -> str:
    if inline is None:
        return f'<script src="{PLOTLY_JS}"></script>'
    return "<script>" + inline.replace("</script", "<\\/script") + "</script>"


def _plot(div_id: str, data: list[dict[str, Any]], layout: dict[str, Any], height: int,
          shared_x: list[Any] | None = None) -> str:  # fmt: skip
    """A chart as plotly.js draws it, from plain JSON: what ``Figure.to_html`` writes, without building
    (and validating) a Figure, which costs tens of ms a chart when a report holds a hundred.
    ``shared_x``: the x values of every trace that has none, written once."""
    spec = json.dumps([data, {**layout, "height": height, "autosize": True}, _CONFIG, shared_x],
                      separators=(",", ":"))  # fmt: skip
    spec = spec.replace("</", "<\\/")
    return (f'<div id="{div_id}" class="plotly-graph-div" style="height:{height}px; width:100%;"></div>'
            f'<script>(function(){{var s={spec};s[0].forEach(function(t){{if(!t.x)t.x=s[3];}});'
            f'Plotly.newPlot("{div_id}",s[0],s[1],s[2]);}})();</script>')  # fmt: skip


def _series(values: Any, digits: int | None = None) -> list[Any]:
    """A column as JSON numbers: whole numbers as ints, NaN as null."""
    array = np.asarray(values, dtype=float)
    if digits is not None:
        array = array.round(digits)
    missing = np.isnan(array)
    if not missing.any():
        whole = array == np.floor(array)
        return array.astype(np.int64).tolist() if whole.all() else array.tolist()
    return [None if m else v for m, v in zip(missing.tolist(), array.tolist(), strict=True)]


def timeline_chart(samples: pd.DataFrame, port_range: float, div_id: str, errno99_ts: float | None = None) -> str:
    """Sockets by side and state, and ports in use against the range, over time (several hosts: summed)."""
    if samples.empty:
        return '<p class="muted">No socket samples (the sidecar was off or failed).</p>'
    from analysis.metrics import by_host, combined

    parts = by_host(samples)
    cols = [c for c, _, _ in SOCKET_LINES] + ["ports_in_use"]
    whole = combined(parts) if len(parts) > 1 else next(iter(parts.values()))
    ts = whole["ts"].to_numpy(dtype=float)
    s = downsample(ts - ts[0], whole, cols)
    x = _series(s["t_s"], 3)
    data: list[dict[str, Any]] = []
    for col, name, line in SOCKET_LINES:
        data.append({"type": "scatter", "mode": "lines", "y": _series(s[col]), "line": line,
                     "name": f"{name} (peak {fmt(s[col].max())})", "xaxis": "x", "yaxis": "y"})  # fmt: skip
    peak_ports = float(s["ports_in_use"].max() or 0)
    data.append({"type": "scatter", "mode": "lines", "y": _series(s["ports_in_use"]),
                 "name": f"ports in use (peak {fmt(peak_ports)})", "line": {"color": "#6a1b9a", "width": 2.5},
                 "xaxis": "x2", "yaxis": "y2"})  # fmt: skip
    top = max(peak_ports, 1.0)
    if port_range and not np.isnan(port_range):
        top = max(top, float(port_range))
        data.append({"type": "scatter", "mode": "lines", "x": [x[0], x[-1]], "y": [port_range, port_range],
                     "name": f"port range ({int(port_range):,})", "xaxis": "x2", "yaxis": "y2",
                     "line": {"dash": "dash", "color": "#c62828", "width": 1.5}})  # fmt: skip
    sockets_top = max(float(s[[c for c, _, _ in SOCKET_LINES]].max().max() or 0), 1.0)
    axis_x = {"title": {"text": "seconds since the first sample"}, "zeroline": False}
    title = {"font": {"size": 15}, "showarrow": False, "xref": "paper", "yref": "paper", "y": 1.0,
             "yanchor": "bottom"}  # fmt: skip
    layout: dict[str, Any] = {
        "margin": {"t": 40, "b": 50, "l": 60, "r": 20},
        "legend": {"orientation": "h", "y": -0.25},
        "xaxis": {**axis_x, "domain": [0, 0.45], "anchor": "y"},
        "xaxis2": {**axis_x, "domain": [0.55, 1], "anchor": "y2"},
        # Linear axes from just below 0, so a line at 0 stays visible; the ports axis ends at the range.
        "yaxis": {"title": {"text": "sockets"}, "anchor": "x", "range": [-0.03 * sockets_top, 1.08 * sockets_top]},
        "yaxis2": {"title": {"text": "ports"}, "anchor": "x2", "range": [-0.03 * top, 1.05 * top]},
        "annotations": [{**title, "text": "Sockets by state", "x": 0.225, "xanchor": "center"},
                        {**title, "text": "Ephemeral ports in use", "x": 0.775, "xanchor": "center"}],
        "shapes": [],
    }  # fmt: skip
    if errno99_ts is not None and not pd.isna(errno99_ts):
        at = round(float(errno99_ts - samples["ts"].min()), 3)
        for xref, yref in (("x", "y domain"), ("x2", "y2 domain")):
            line = {"color": "#c62828", "width": 1, "dash": "dot"}
            layout["shapes"].append({"type": "line", "x0": at, "x1": at, "y0": 0, "y1": 1, "xref": xref,
                                     "yref": yref, "line": line})  # fmt: skip
        layout["annotations"].append({"x": at, "y": 0.5, "xref": "x2", "yref": "y2 domain", "text": "first errno 99",
                                      "showarrow": True, "arrowhead": 2, "ax": 40, "ay": -30,
                                      "font": {"color": "#c62828"}, "bgcolor": "rgba(255,255,255,0.9)"})  # fmt: skip
    return _plot(div_id, data, layout, 360, shared_x=x)


def _bars(labels: list[str], series: list[tuple[str, list[float], str]], title: str, axis: str, log: bool,
          div_id: str, mode: str = "group") -> str:  # fmt: skip
    """Bars per scenario; sideways when there are many, so every name reads horizontally."""
    horizontal = len(labels) >= HORIZONTAL_FROM
    data = []
    for name, values, colour in series:
        numbers = _series(values)
        xy = {"y": labels, "x": numbers, "orientation": "h"} if horizontal else {"x": labels, "y": numbers}
        data.append({"type": "bar", "name": name, "marker": {"color": colour}, **xy})
    value_axis = {"title": {"text": axis + (" (log scale)" if log else "")}, "type": "log" if log else "linear"}
    name_axis = {"title": {"text": "scenario"}, "automargin": True, "tickangle": 0}
    layout: dict[str, Any] = {
        "title": {"text": title, "y": 0.98, "yanchor": "top"},
        "barmode": mode,
        "margin": {"t": 80, "b": 60, "l": 60, "r": 20},
        "legend": {"orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom"},
    }
    if horizontal:
        layout |= {"xaxis": value_axis, "yaxis": {**name_axis, "autorange": "reversed"}}
    else:
        layout |= {"yaxis": value_axis, "xaxis": name_axis}
    bars = len(series) if mode == "group" else 1
    height = 120 + 30 * len(labels) * (1 if bars == 1 else 0.6 * bars) if horizontal else 380
    return _plot(div_id, data, layout, int(max(height, 300)) + 40)


def _spans_decades(values: list[float]) -> bool:
    positive = [v for v in values if v and not math.isnan(v) and v > 0]
    return len(positive) > 1 and max(positive) / min(positive) >= 10


def comparison_charts(latest: pd.DataFrame) -> str:
    """Connections per request (coloured by the reuse threshold, with a legend) and latency, per scenario."""
    from analysis.metrics import REUSE_MAX

    labels = [safe_label(s) for s in latest["scenario"]]
    cpr = latest["connections_per_request"].fillna(0).tolist()
    churn = [v if v > REUSE_MAX else 0 for v in cpr]
    reuse = [v if v <= REUSE_MAX else 0 for v in cpr]
    first = _bars(labels, [(f"churns (more than {REUSE_MAX} per request)", churn, "#d9534f"),
                           (f"reuses (at most {REUSE_MAX})", reuse, "#5cb85c")],
                  "Connections per request (lower is better)",
                  "connections per request", False, "chart-cpr", mode="relative")  # fmt: skip
    latency = [(p, latest[f"{p}_ms"].tolist(), c) for p, c in (("p50", "#90caf9"), ("p95", "#1e88e5"),
                                                               ("p99", "#0d47a1"))]  # fmt: skip
    log = _spans_decades([v for _, vals, _ in latency for v in vals])
    second = _bars(labels, latency, "Response time percentiles", "milliseconds", log, "chart-latency")
    return first + second  # one above the other: each drawn at the page's full width


OVERVIEW = (
    ("scenario", "scenario", None),
    ("verdict", "short", None),
    ("status", "status", None),
    ("requests", "requests", 0),
    ("connections", "connections_opened", 0),
    ("conn/req", "connections_per_request", 3),
    ("reuse %", "reuse_pct", 1),
    ("client TW peak", "peak_client_time_wait", 0),
    ("server TW peak", "peak_server_time_wait", 0),
    ("ports peak / range", "peak_ports_in_use", 0),
    ("projection", "projected_port_use_pct", 1),
)


def legend() -> str:
    items = "".join(
        f'<span><span class="swatch" style="background:{SEVERITY_COLOURS[level]}"></span>'
        f"<b>{esc(name)}</b>: {esc(meaning)}</span>"
        for level, name, meaning in SEVERITIES
    )
    return f'<div class="legend" id="legend">{items}</div>'


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _projection_cell(r: dict[str, Any]) -> str:
    """The projected port use, and when the range runs out (or that tcp_tw_reuse keeps it from running out)."""
    pct, secs, limit = r.get("projected_port_use_pct"), r.get("seconds_to_exhaustion"), r.get("tw_reuse_limit_per_s")
    if _missing(pct):
        return ""
    text = f"{pct:,.0f}%" if pct >= 100 else f"{pct:,.1f}%"
    if not _missing(secs):
        holds = not _missing(limit) and r["churn_per_s"] < limit
        text += " (tcp_tw_reuse holds it)" if holds else f", out in {secs:,.1f} s"
    return esc(text)


def overview_table(latest: pd.DataFrame, verdicts: pd.DataFrame) -> str:
    """A row per scenario (its newest run), worst first: the first screen."""
    v = verdicts.set_index("run_id")
    head = "".join(th(title, col, left=digits is None) for title, col, digits in OVERVIEW)
    rows = []
    for r in latest.to_dict("records"):
        level = int(v.loc[r["run_id"], "severity"])
        cells = []
        for _, col, digits in OVERVIEW:
            if col == "scenario":
                cells.append(f'<td class="l name"><span class="mark" style="color:{SEVERITY_MARKS[level]}">●</span> '
                             f'<a href="#run-{esc(r["run_id"])}">{esc(r["scenario"])}</a></td>')  # fmt: skip
            elif col == "short":
                cells.append(f'<td class="l short">{esc(v.loc[r["run_id"], "short"])}</td>')
            elif col == "peak_ports_in_use":
                cells.append(f"<td>{fmt(r[col])} / {fmt(r['port_range'])}</td>")
            elif col == "projected_port_use_pct":
                cells.append(f"<td>{_projection_cell(r)}</td>")
            elif digits is None:
                cells.append(f'<td class="l">{esc(r[col])}</td>')
            else:
                cells.append(f"<td>{fmt(r[col], digits)}</td>")
        rows.append(f'<tr class="sev-{level}" data-severity="{level}" style="background:{SEVERITY_COLOURS[level]}">'
                    f'{"".join(cells)}</tr>')  # fmt: skip
    return (f'<div class="scroll"><table id="overview"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')  # fmt: skip


REGRESSION_SHOWN = {
    "connections_per_request": 3, "connections_opened": 0, "client_closes_per_request": 3, "churn_per_s": 1,
    "peak_client_time_wait": 0, "peak_ports_in_use": 0, "projected_port_use_pct": 1,
    "addr_not_available_errors": 0, "p95_ms": 0, "rps": 0,
}  # fmt: skip


def regression_table(changes: pd.DataFrame, labels: dict[str, str], against: str) -> str:
    """Each scenario's newest run against the previous one: did the client open more connections?
    The figures that changed by at least MATERIAL_PCT %, worse first; the rest are counted."""
    from analysis.compare import MATERIAL_PCT

    shown = changes[changes["metric"].isin(REGRESSION_SHOWN)] if len(changes) else changes
    if shown.empty:
        return ""
    order = {m: i for i, m in enumerate(REGRESSION_SHOWN)}
    moved = shown[shown["material"]]
    moved = moved.assign(_w=~moved["worse"], _m=moved["metric"].map(order)).sort_values(
        ["_w", "scenario", "_m"], kind="stable")  # fmt: skip
    rows = []
    for r in moved.to_dict("records"):
        digits = REGRESSION_SHOWN.get(r["metric"], 2)
        pct = r["delta_pct"]
        pct_text = "new" if math.isinf(pct) else f"{pct:+,.1f}%"
        arrow = "▲" if r["delta"] > 0 else "▼"
        kind = "worse" if r["worse"] else "better"
        rows.append(f'<tr class="{kind}"><td class="l">{esc(r["scenario"])}</td>'
                    f'<td class="l" title="{esc(MEANING.get(r["metric"], ""))}">{esc(r["metric"])}</td>'
                    f"<td>{fmt(r['previous'], digits)}</td><td>{fmt(r['current'], digits)}</td>"
                    f'<td class="{kind}">{arrow} {fmt(r["delta"], digits)}</td><td class="{kind}">{pct_text}</td>'
                    "</tr>")  # fmt: skip
    worse = moved[moved["worse"] & (moved["metric"] == "connections_per_request")]
    answer = (
        "Yes: the client opens more connections per request in " + ", ".join(esc(s) for s in worse["scenario"]) + "."
        if len(worse)
        else "No: no scenario opens more connections per request than before."
    )
    scenarios = shown["scenario"].nunique()
    rest = len(shown) - len(moved)
    table = (
        f"<div class='scroll'><table id='regression'><thead><tr>{th('scenario', left=True)}{th('metric', left=True)}"
        f"{th('before')}{th('now')}{th('change')}{th('change %')}</tr></thead><tbody>{''.join(rows)}</tbody>"
        "</table></div>"
        if rows
        else ""
    )
    return (
        f"<h2 id='regressions'>Against {esc(against)}</h2><p class='headline'>Did this change make the client open "
        f"more connections? <b>{answer}</b></p><p class='muted'>{scenarios} scenarios compared. Shown: the figures "
        f"that moved by {MATERIAL_PCT:g}% or more, worse first (▲ rose, ▼ fell; red is worse, green better: for "
        f"requests/s a rise is better, for every other figure a fall); {rest} other figures moved less.</p>{table}"
    )


SUMMARY_HEADERS = [
    ("run", "run_id", None),
    ("requests", "requests", 0),
    ("connections", "connections_opened", 0),
    ("source", "connections_source", None),
    ("conn/req", "connections_per_request", 3),
    ("churn /s", "churn_per_s", 1),
    ("client TW", "peak_client_time_wait", 0),
    ("server TW", "peak_server_time_wait", 0),
    ("ports", "peak_ports_in_use", 0),
    ("range", "port_range", 0),
    ("projected %", "projected_port_use_pct", 1),
    ("out in s", "seconds_to_exhaustion", 2),
    ("errno 99", "addr_not_available_errors", 0),
    ("p95 ms", "p95_ms", 0),
]


def summary_table(summary: pd.DataFrame, verdicts: pd.DataFrame, labels: dict[str, str]) -> str:
    """The numbers of summary.csv, one row per run (every run, not only the newest of each scenario)."""
    v = verdicts.set_index("run_id")
    head = "".join(th(h, col, left=d is None) for h, col, d in SUMMARY_HEADERS)
    rows = []
    for r in summary.to_dict("records"):
        level = int(v.loc[r["run_id"], "severity"])
        cells = []
        for _, col, digits in SUMMARY_HEADERS:
            val = r[col]
            if col == "run_id":
                cells.append(f'<td class="l"><a href="#run-{esc(val)}" title="{esc(val)}">{esc(labels[val])}</a></td>')
            elif digits is None:
                cells.append(f'<td class="l">{esc(val)}</td>')
            else:
                cells.append(f"<td>{fmt(val, digits)}</td>")
        rows.append(f'<tr class="sev-{level}" style="background:{SEVERITY_COLOURS[level]}">{"".join(cells)}</tr>')
    return (f'<div class="scroll"><table id="summary"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')  # fmt: skip


def exhaustion_table(summary: pd.DataFrame, labels: dict[str, str]) -> str:
    """Runs that ran out of ports: the projection next to what happened."""
    hit = summary[summary["observed_seconds_to_exhaustion"].notna()]
    if hit.empty:
        return ""
    head = (th("run", "run_id", left=True) + th("port range", "port_range") + th("new conn /s", "churn_per_s")
            + th("projected: out in s", "seconds_to_exhaustion")
            + th("observed: errno 99 after s", "observed_seconds_to_exhaustion")
            + th("apart", "projection_error_pct") + th("connections before", "connections_before_exhaustion")
            + th("errno 99", "addr_not_available_errors"))  # fmt: skip
    rows = "".join(
        f"<tr><td class='l'><a href='#run-{esc(r['run_id'])}'>{esc(labels[r['run_id']])}</a></td>"
        f"<td>{fmt(r['port_range'])}</td><td>{fmt(r['churn_per_s'])}</td>"
        f"<td>{fmt(r['seconds_to_exhaustion'], 2)}</td><td>{fmt(r['observed_seconds_to_exhaustion'], 2)}</td>"
        f"<td>{fmt(r['projection_error_pct'], 0)}%</td><td>{fmt(r['connections_before_exhaustion'])}</td>"
        f"<td>{fmt(r['addr_not_available_errors'])}</td></tr>"
        for r in hit.to_dict("records")
    )
    return (
        "<h2>Port exhaustion: projected and observed</h2><p class='muted'>Projected: port range ÷ the rate at "
        "which the run left TIME_WAIT before the first errno 99. Observed: from the client's first "
        f"connection to its first errno 99.</p><div class='scroll'><table id='exhaustion'><tr>{head}</tr>{rows}"
        "</table></div>"
    )


def hosts_table(hosts: pd.DataFrame | None, labels: dict[str, str]) -> str:
    """Runs on several client hosts: each host's own ports against its own range (hosts.csv)."""
    if hosts is None or hosts.empty:
        return ""
    shown = hosts[hosts.groupby("run_id")["host"].transform("size") > 1]
    if shown.empty:
        return ""
    columns = (("host", "host", None), ("workers", "workers", 0), ("connections", "connections_opened", 0),
               ("new conn /s", "churn_per_s", 1), ("client TW peak", "peak_client_time_wait", 0),
               ("ports peak", "peak_ports_in_use", 0), ("range", "port_range", 0),
               ("projected %", "projected_port_use_pct", 1), ("out in s", "seconds_to_exhaustion", 2),
               ("errno 99", "addr_not_available_errors", 0))  # fmt: skip
    head = th("run", left=True) + "".join(th(t, c, left=d is None, meanings=HOST_MEANING) for t, c, d in columns)
    rows = "".join(
        f"<tr><td class='l'><a href='#run-{esc(r['run_id'])}'>{esc(labels.get(r['run_id'], r['run_id']))}</a></td>"
        + "".join(f"<td class='l'>{esc(r[c])}</td>" if d is None else f"<td>{fmt(r[c], d)}</td>" for _, c, d in columns)
        + "</tr>"
        for r in shown.to_dict("records")
    )
    return (
        "<h2>Hosts</h2><p class='muted'>Ports run out per client host: each host's own connections, TIME_WAIT "
        f"and ports, against its own range (hosts.csv).</p><div class='scroll'><table id='hosts'><tr>{head}</tr>"
        f"{rows}</table></div>"
    )


def settings_table(run: dict[str, Any]) -> str:
    settings = dict(run.get("settings") or {})
    extra = {
        "host": run.get("host"),
        "target mode": run.get("target_mode"),
        "users": run.get("num_users"),
        "isolated namespace": run.get("isolated"),
        "tcp_tw_reuse": run.get("tcp_tw_reuse"),
        "client connections opened / closed / discarded": " / ".join(
            str(run.get(k)) for k in ("client_opened", "client_closed", "client_discarded")
        ),
        "sidecar": run.get("sidecar_status"),
    }
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in {**settings, **extra}.items())
    return f'<table class="settings">{rows}</table>'


BY_NAME_SHOWN = (
    ("name", "request name"), ("requests", "requests"), ("connections_opened", "connections"),
    ("reuse_pct", "reuse %"), ("closed_by_client", "closed by client"), ("closed_by_server", "closed by server"),
    ("discarded", "discarded"), ("connect_errors", "connect errors"), ("connect_ms_mean", "connect ms"),
    ("tls_ms_mean", "TLS ms"),
)  # fmt: skip


def by_name_table(rows: list[dict[str, Any]]) -> str:
    """The run's connections per request name (its connections.csv): which endpoint churns."""
    if not rows:
        return ""
    head = "".join(f"<th{' class=l' if k == 'name' else ''}>{esc(t)}</th>" for k, t in BY_NAME_SHOWN)
    body = "".join(
        "<tr>" + "".join(
            f"<td class='l'>{esc(r[k])}</td>" if k == "name" else f"<td>{fmt(r[k], 1 if k == 'reuse_pct' else 2)}</td>"
            if k in ("reuse_pct", "connect_ms_mean", "tls_ms_mean") else f"<td>{fmt(r[k])}</td>"
            for k, _ in BY_NAME_SHOWN
        ) + "</tr>"
        for r in rows
    )  # fmt: skip
    return f"<table class='by-name'><tr>{head}</tr>{body}</table>"


def run_section(run: dict[str, Any], row: dict[str, Any], verdict: pd.Series, samples: pd.DataFrame,
                locust_href: str | None, index: int, label: str) -> str:  # fmt: skip
    run_id = run["run_id"]
    reason = f" ({esc(run['status_reason'])})" if run.get("status_reason") else ""
    link = f'<a href="{esc(locust_href)}">Locust report</a> · ' if locust_href else ""
    return (
        f'<section id="run-{esc(run_id)}"><h3>{esc(label)} <span class="muted">{esc(run_id)}</span></h3>'
        f'<p><span class="verdict">{esc(verdict["verdict"])}</span><br>'
        f'<span class="why">{esc(verdict["why"])}</span></p>'
        + (f'<p class="cost">{esc(verdict["cost"])}</p>' if verdict.get("cost") else "")
        + f"{by_name_table(run.get('by_name') or [])}"
        f"<p>Status: {esc(run['status'])}{reason}. {link}run folder <code>{esc(run['path'])}</code></p>"
        f"{timeline_chart(samples, row['port_range'], f'chart-run-{index}', run.get('first_addr_not_available_ts'))}"
        f"<details><summary>Settings</summary>{settings_table(run)}</details></section>"
    )


def latest_per_scenario(summary: pd.DataFrame, verdicts: pd.DataFrame) -> pd.DataFrame:
    """Each scenario's newest run, worst first (severity, then projected port use, then connections per request)."""
    latest = summary.sort_values("start", kind="stable").groupby("scenario", sort=False).tail(1)
    keys = pd.DataFrame({
        "level": latest["run_id"].map(verdicts.set_index("run_id")["severity"]),
        "pct": latest["projected_port_use_pct"].fillna(-1),
        "cpr": latest["connections_per_request"].fillna(-1),
    })  # fmt: skip
    order = keys.sort_values(["level", "pct", "cpr"], ascending=False, kind="stable").index
    return latest.loc[order]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def headline(latest: pd.DataFrame, verdicts: pd.DataFrame) -> str:
    by_id = verdicts.set_index("run_id")
    levels = latest["run_id"].map(by_id["severity"])
    # The top level holds the runs that ran out of ports and those that failed otherwise: named apart.
    ran_out = latest["observed_seconds_to_exhaustion"].notna()
    failed = int(((levels == 3) & (latest["status"] == "failed") & ~ran_out).sum())
    counts = levels.value_counts()
    counts[3] = counts.get(3, 0) - failed
    parts = [f"{counts.get(lv, 0)} {SEVERITY_NAMES[lv]}" for lv in (3, 2, 1, 0) if counts.get(lv, 0)]
    if failed:
        parts.insert(1 if counts.get(3, 0) else 0, f"{failed} failed")
    worst = latest.iloc[0]
    lead = "Every scenario reuses its connections."
    if by_id.loc[worst["run_id"], "severity"] > 0:
        lead = f"Worst: <b>{esc(worst['scenario'])}</b>, {esc(by_id.loc[worst['run_id'], 'short'])}."
    return f"<p class='headline'>{_count(len(latest), 'scenario')}: {', '.join(parts)}. {lead}</p>"


def render_html(
    summary: pd.DataFrame,
    verdicts: pd.DataFrame,
    runs: pd.DataFrame,
    samples: pd.DataFrame | dict[str, pd.DataFrame],
    skipped: list[Any],
    out_dir: str,
    plotly_js: str | None = None,
    hosts: pd.DataFrame | None = None,
    changes: pd.DataFrame | None = None,
    against: str = "the previous run of each scenario",
    locust_links: dict[str, str] | None = None,
) -> str:
    """The whole page; it loads plotly.min.js from beside itself, or holds ``plotly_js`` inline (one file).

    ``changes``: :func:`analysis.compare.regressions`; ``locust_links``: run id -> the relative link
    to its Locust report (a run without one gets no link).
    """
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    by_id = {r["run_id"]: r for r in runs.to_dict("records")}
    v = verdicts.set_index("run_id")
    labels = run_labels(summary) if len(summary) else {}
    by_run = per_run(samples)
    links = locust_links or {}
    sections = "".join(
        run_section(
            by_id[row["run_id"]],
            row,
            v.loc[row["run_id"]],
            by_run.get(row["run_id"], pd.DataFrame()),
            links.get(row["run_id"]),
            i,
            labels[row["run_id"]],
        )  # fmt: skip
        for i, row in enumerate(summary.to_dict("records"))
    )
    latest = latest_per_scenario(summary, verdicts) if len(summary) else summary
    skipped_html = ""
    if skipped:
        items = "".join(f"<li>{esc(s)}</li>" for s in skipped)
        skipped_html = f'<h2>Skipped run folders</h2><ul class="skipped">{items}</ul>'
    body = (
        f"<h1>keepalive-lab report</h1><p class='muted'>{_count(len(summary), 'run')} of "
        f"{_count(len(latest), 'scenario')} · "
        f"generated {now} · column definitions show on hover</p>"
        + (headline(latest, verdicts) if len(latest) else "<p>No run.</p>")
        + legend()
        + (overview_table(latest, verdicts) if len(latest) else "")
        + "<p class='muted'>A run that reuses connections opens about one per user; one that churns opens a new "
        "TCP connection for many requests, and each connection the client closes first holds an ephemeral port "
        "in TIME_WAIT for 60 s. <b>projection</b> is churn × 60 s ÷ port range: at 100% or more the client runs "
        "out of ports (errno 99) after the time shown.</p>"
        + regression_table(changes if changes is not None else pd.DataFrame(), labels, against)
        + exhaustion_table(summary, labels)
        + hosts_table(hosts, labels)
        + (f"<h2>Comparison</h2>{comparison_charts(latest)}" if len(latest) else "")
        + f"<h2>Every run</h2>{summary_table(summary, verdicts, labels)}"
        + f"<h2>Each run over time</h2>{sections}{skipped_html}"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>keepalive-lab report</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{CSS}</style>{_plotly_tag(plotly_js)}</head><body>{body}"
        f"<script>window.KEEPALIVE_LAB = {json.dumps({'runs': len(summary)})};</script></body></html>"
    )
