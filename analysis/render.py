"""Stage 4, render: the comparison report as one HTML page (pure: returns the text).

The page loads ``plotly.min.js`` from beside itself (the CLI writes it there), so it works
offline. Every string that comes from run data is HTML-escaped; chart labels are reduced to
safe characters before they reach the charts' JSON.
"""

from __future__ import annotations

import html
import json
import os
import re
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PLOTLY_JS = "plotly.min.js"
MAX_POINTS = 1500  # per series; longer runs keep each bucket's maximum, so peaks survive
_CONFIG = {"displaylogo": False, "responsive": True}

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; vertical-align: top; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; } .wide { min-width: 480px; }
tr.churns td { background: #fff1f0; } tr.reuses td { background: #f3fbf3; }
.verdict { font-weight: 600; } .why { color: #555; } .muted { color: #777; }
.skipped li { color: #a00; } .settings td { text-align: left; }
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


def downsample(frame: pd.DataFrame, columns: list[str], max_points: int = MAX_POINTS) -> pd.DataFrame:
    """At most ``max_points`` rows: each bucket of consecutive samples keeps its maximum."""
    if len(frame) <= max_points:
        return frame
    bucket = np.arange(len(frame)) * max_points // len(frame)
    grouped = frame.groupby(bucket)
    out = grouped[columns].max()
    out["t_s"] = grouped["t_s"].first()
    return out.reset_index(drop=True)


def _plotly_tag(inline: str | None) -> str:
    if inline is None:
        return f'<script src="{PLOTLY_JS}"></script>'
    return "<script>" + inline.replace("</script", "<\\/script") + "</script>"


def _fig_html(fig: go.Figure, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, config=_CONFIG, div_id=div_id)


def timeline_chart(samples: pd.DataFrame, port_range: float, div_id: str, errno99_ts: float | None = None) -> str:
    """TIME_WAIT (client, server), ESTABLISHED, and ports in use against the range, over time."""
    if samples.empty:
        return '<p class="muted">No socket samples (the sidecar was off or failed).</p>'
    s = samples.sort_values("ts").assign(t_s=lambda d: d["ts"] - d["ts"].iloc[0])
    cols = ["client_time_wait", "server_time_wait", "client_established", "server_established", "ports_in_use"]
    s = downsample(s, cols)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Sockets by state", "Ephemeral ports in use"))
    for col, name in [
        ("client_time_wait", "client TIME_WAIT"),
        ("server_time_wait", "server TIME_WAIT"),
        ("client_established", "client ESTABLISHED"),
        ("server_established", "server ESTABLISHED"),
    ]:
        fig.add_trace(go.Scatter(x=s["t_s"], y=s[col], name=name, mode="lines"), row=1, col=1)
    fig.add_trace(go.Scatter(x=s["t_s"], y=s["ports_in_use"], name="ports in use", mode="lines"), row=1, col=2)
    if port_range and not np.isnan(port_range):
        fig.add_trace(
            go.Scatter(
                x=[s["t_s"].iloc[0], s["t_s"].iloc[-1]],
                y=[port_range, port_range],
                name=f"port range ({int(port_range):,})",
                mode="lines",
                line={"dash": "dash", "color": "red"},
            ),
            row=1,
            col=2,
        )
    if errno99_ts is not None and not pd.isna(errno99_ts):
        at = errno99_ts - samples["ts"].min()
        for col in (1, 2):
            fig.add_vline(x=at, line={"color": "red", "width": 1}, row=1, col=col)
        fig.add_annotation(
            x=at, y=1, yref="paper", text="first errno 99", showarrow=False, xanchor="left", font={"color": "red"}
        )
    fig.update_xaxes(title_text="seconds")
    # Log scale: a few hundred ports in use stay visible next to a range of 28,232.
    fig.update_yaxes(type="log", title_text="ports (log scale)", row=1, col=2)
    fig.update_layout(height=340, margin={"t": 40, "b": 40, "l": 50, "r": 20})
    return _fig_html(fig, div_id)


def comparison_charts(summary: pd.DataFrame) -> str:
    labels = [safe_label(r) for r in summary["run_id"]]
    cpr = go.Figure(
        go.Bar(
            x=labels,
            y=summary["connections_per_request"].fillna(0),
            marker_color=["#d9534f" if v > 0.1 else "#5cb85c" for v in summary["connections_per_request"].fillna(0)],
        )
    )
    cpr.update_layout(
        title="Connections per request (lower is better; 1.0 = a new connection every request)",
        height=380,
        margin={"b": 140},
        yaxis_title="connections / request",
    )
    lat = go.Figure([go.Bar(name=p, x=labels, y=summary[f"{p}_ms"]) for p in ("p50", "p95", "p99")])
    lat.update_layout(title="Latency percentiles", barmode="group", height=380, margin={"b": 140}, yaxis_title="ms")
    return _fig_html(cpr, "chart-cpr") + _fig_html(lat, "chart-latency")


SUMMARY_HEADERS = [
    ("run", "run_id", None),
    ("scenario", "scenario", None),
    ("requests", "requests", 0),
    ("connections", "connections_opened", 0),
    ("source", "connections_source", None),
    ("conn / request", "connections_per_request", 3),
    ("churn / s", "churn_per_s", 1),
    ("peak client TIME_WAIT", "peak_client_time_wait", 0),
    ("peak server TIME_WAIT", "peak_server_time_wait", 0),
    ("peak ports in use", "peak_ports_in_use", 0),
    ("port range", "port_range", 0),
    ("projected port use %", "projected_port_use_pct", 1),
    ("range runs out in (s)", "seconds_to_exhaustion", 2),
    ("errno 99", "addr_not_available_errors", 0),
    ("p95 ms", "p95_ms", 0),
]


def verdict_table(summary: pd.DataFrame, verdicts: pd.DataFrame) -> str:
    """Run by run, in words: what happened and why."""
    v = verdicts.set_index("run_id")
    rows = []
    for _, r in summary.iterrows():
        vv = v.loc[r["run_id"]]
        rows.append(
            f'<tr class="{"churns" if vv["churns"] else "reuses"}">'
            f'<td class="l"><a href="#run-{esc(r["run_id"])}">{esc(r["run_id"])}</a></td>'
            f'<td class="l">{esc(r["status"])}</td>'
            f'<td class="l wide"><span class="verdict">{esc(vv["verdict"])}</span>'
            f'<br><span class="why">{esc(vv["why"])}</span></td></tr>'
        )
    return (
        '<table id="verdicts"><thead><tr><th class="l">run</th><th class="l">status</th>'
        f'<th class="l wide">verdict</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def summary_table(summary: pd.DataFrame, verdicts: pd.DataFrame) -> str:
    """The numbers of summary.csv, one row per run."""
    churns = verdicts.set_index("run_id")["churns"]
    head = "".join(f'<th class="{"l" if d is None else ""}">{esc(h)}</th>' for h, _, d in SUMMARY_HEADERS)
    rows = []
    for _, r in summary.iterrows():
        cells = []
        for _, col, digits in SUMMARY_HEADERS:
            val = r[col]
            if col == "run_id":
                cells.append(f'<td class="l"><a href="#run-{esc(val)}">{esc(val)}</a></td>')
            elif digits is None:
                cells.append(f'<td class="l">{esc(val)}</td>')
            else:
                cells.append(f"<td>{fmt(val, digits)}</td>")
        rows.append(f'<tr class="{"churns" if churns[r["run_id"]] else "reuses"}">{"".join(cells)}</tr>')
    return f'<table id="summary"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def exhaustion_table(summary: pd.DataFrame) -> str:
    """Runs that ran out of ports: the projection next to what happened."""
    hit = summary[summary["observed_seconds_to_exhaustion"].notna()]
    if hit.empty:
        return ""
    head = (
        "<tr><th class='l'>run</th><th>port range</th><th>new connections / s</th>"
        "<th>projected: runs out in (s)</th><th>observed: first errno 99 after (s)</th><th>apart</th>"
        "<th>connections before</th><th>errno 99 failures</th></tr>"
    )
    rows = "".join(
        f"<tr><td class='l'><a href='#run-{esc(r['run_id'])}'>{esc(r['run_id'])}</a></td>"
        f"<td>{fmt(r['port_range'])}</td><td>{fmt(r['churn_per_s'])}</td>"
        f"<td>{fmt(r['seconds_to_exhaustion'], 2)}</td><td>{fmt(r['observed_seconds_to_exhaustion'], 2)}</td>"
        f"<td>{fmt(r['projection_error_pct'], 0)}%</td><td>{fmt(r['connections_before_exhaustion'])}</td>"
        f"<td>{fmt(r['addr_not_available_errors'])}</td></tr>"
        for _, r in hit.iterrows()
    )
    return (
        "<h2>Port exhaustion: projected and observed</h2><p class='muted'>Projected: port range ÷ the rate at "
        "which the kernel opened connections before the first errno 99. Observed: from the client's first "
        f"connection to its first errno 99.</p><table id='exhaustion'>{head}{rows}</table>"
    )


def hosts_table(hosts: pd.DataFrame | None) -> str:
    """Runs on several client hosts: each host's own ports against its own range (hosts.csv)."""
    if hosts is None or hosts.empty:
        return ""
    several = hosts.groupby("run_id")["host"].transform("size") > 1
    shown = hosts[several]
    if shown.empty:
        return ""
    head = (
        "<tr><th class='l'>run</th><th class='l'>host</th><th>workers</th><th>connections</th>"
        "<th>new connections / s</th><th>peak client TIME_WAIT</th><th>peak ports in use</th><th>port range</th>"
        "<th>projected port use</th><th>range runs out in (s)</th><th>errno 99 failures</th></tr>"
    )
    rows = "".join(
        f"<tr><td class='l'><a href='#run-{esc(r['run_id'])}'>{esc(r['run_id'])}</a></td>"
        f"<td class='l'>{esc(r['host'])}</td><td>{fmt(r['workers'])}</td><td>{fmt(r['connections_opened'])}</td>"
        f"<td>{fmt(r['churn_per_s'], 1)}</td><td>{fmt(r['peak_client_time_wait'])}</td>"
        f"<td>{fmt(r['peak_ports_in_use'])}</td><td>{fmt(r['port_range'])}</td>"
        f"<td>{fmt(r['projected_port_use_pct'], 1)}%</td><td>{fmt(r['seconds_to_exhaustion'], 2)}</td>"
        f"<td>{fmt(r['addr_not_available_errors'])}</td></tr>"
        for _, r in shown.iterrows()
    )
    return (
        "<h2>Hosts</h2><p class='muted'>Ports run out per client host: each host's own connections, TIME_WAIT "
        f"and ports, against its own range (hosts.csv).</p><table id='hosts'>{head}{rows}</table>"
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


def run_section(
    run: dict[str, Any], row: pd.Series, verdict: pd.Series, samples: pd.DataFrame, out_dir: str, index: int
) -> str:
    run_id = run["run_id"]
    link = os.path.relpath(os.path.join(run["path"], "locust.html"), out_dir)
    reason = f" ({esc(run['status_reason'])})" if run.get("status_reason") else ""
    return (
        f'<section id="run-{esc(run_id)}"><h3>{esc(run_id)}</h3>'
        f'<p><span class="verdict">{esc(verdict["verdict"])}</span><br>'
        f'<span class="why">{esc(verdict["why"])}</span></p>'
        + (f'<p class="cost">{esc(verdict["cost"])}</p>' if verdict.get("cost") else "")
        + f"{by_name_table(run.get('by_name') or [])}"
        f"<p>Status: {esc(run['status'])}{reason}. "
        f'<a href="{esc(link)}">Locust report</a> · run folder <code>{esc(run["path"])}</code></p>'
        f"{timeline_chart(samples, row['port_range'], f'chart-run-{index}', run.get('first_addr_not_available_ts'))}"
        f"<details><summary>Settings</summary>{settings_table(run)}</details></section>"
    )


def render_html(
    summary: pd.DataFrame,
    verdicts: pd.DataFrame,
    runs: pd.DataFrame,
    samples: pd.DataFrame,
    skipped: list[Any],
    out_dir: str,
    plotly_js: str | None = None,
    hosts: pd.DataFrame | None = None,
) -> str:
    """The whole page; it loads plotly.min.js from beside itself, or holds ``plotly_js`` inline (one file)."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    by_id = {r["run_id"]: r for r in runs.to_dict("records")}
    v = verdicts.set_index("run_id")
    per_run = {rid: g for rid, g in samples.groupby("run_id")} if len(samples) else {}
    sections = "".join(
        run_section(
            by_id[row["run_id"]], row, v.loc[row["run_id"]], per_run.get(row["run_id"], pd.DataFrame()), out_dir, i
        )
        for i, (_, row) in enumerate(summary.iterrows())
    )
    churners = [r for r in summary["run_id"] if v.loc[r, "churns"]]
    headline = (
        f"{len(churners)} of {len(summary)} runs churn connections (more than one new connection per ten "
        f"requests): {', '.join(esc(c) for c in churners)}."
        if churners
        else f"All {len(summary)} runs reuse their connections."
    )
    skipped_html = ""
    if skipped:
        items = "".join(f"<li>{esc(s)}</li>" for s in skipped)
        skipped_html = f'<h2>Skipped run folders</h2><ul class="skipped">{items}</ul>'
    body = (
        f"<h1>keepalive-lab report</h1><p class='muted'>{len(summary)} runs · generated {now}</p>"
        f"<p>{headline}</p>"
        "<p class='muted'>A run that reuses connections opens about one per user; one that churns opens a new "
        "TCP connection for many requests, and each connection the client closes first holds an ephemeral port "
        "in TIME_WAIT for 60 s. <b>projected port use</b> is churn × 60 s ÷ port range: at 100% or more the "
        "client runs out of ports (errno 99) after <b>range runs out in</b> seconds.</p>"
        f"<h2>Verdicts</h2>{verdict_table(summary, verdicts)}"
        f"<h2>Numbers</h2>{summary_table(summary, verdicts)}"
        f"{exhaustion_table(summary)}{hosts_table(hosts)}"
        f"<h2>Comparison</h2>{comparison_charts(summary) if len(summary) else ''}"
        f"<h2>Each run over time</h2>{sections}{skipped_html}"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>keepalive-lab report</title>'
        f"<style>{CSS}</style>{_plotly_tag(plotly_js)}</head><body>{body}"
        f"<script>window.KEEPALIVE_LAB = {json.dumps({'runs': len(summary)})};</script></body></html>"
    )
