"""Stage 2, metrics: one summary row per run (``reports/summary.csv``).

Definitions (the columns are :data:`keepalive_lab.schema.SUMMARY`):

``connections_opened``, ``connections_source``
    the best exact source: the target's accept count (``target``), else the client pool's count
    (``client``), else the ``active_opens`` delta of an isolated run (``kernel``).
``connections_per_request``
    ``connections_opened / requests``; reuse is 1 minus it.
``churn_per_s``
    connections opened per second of the run; in a run that ran out of ports, per second before
    the first errno 99, measured by the kernel (the sidecar's ``active_opens``) when it can be.
``peak_client_time_wait``, ``peak_server_time_wait``, ``peak_ports_in_use``
    peaks over the sidecar's samples.
``peak_port_use_pct``
    ``100 * peak_ports_in_use / port_range``.
``projected_port_use_pct``
    ``100 * churn_per_s * 60 / port_range``: the steady state with no TIME_WAIT reuse (60 s is
    Linux's fixed TIME_WAIT length).
``seconds_to_exhaustion``
    ``port_range / churn_per_s`` when the projection is at least 100 %, else empty.
``server_time_wait_pct``
    the server's share of the TIME_WAIT sockets, ``100 * server / (server + client)`` at their
    peaks: who closes first holds them (100: the server closes; 0: the client does).
``addr_not_available_errors``
    failures with errno 99 (EADDRNOTAVAIL, "Cannot assign requested address").
``observed_seconds_to_exhaustion``, ``connections_before_exhaustion``
    when the client ran out of ports: seconds from its first connection to its first errno 99,
    and the connections it had opened by then.
``projection_error_pct``
    ``100 * |seconds_to_exhaustion - observed| / observed``: how well the projection held.
``connection_errors``
    failures from a connection the server had closed: RemoteDisconnected, ConnectionResetError,
    BrokenPipeError, connection aborted (a stale keep-alive connection was reused).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from keepalive_lab.schema import SUMMARY_COLUMNS

TIME_WAIT_S = 60
ERRNO_99_PATTERN = r"Errno 99\b|Cannot assign requested address|EADDRNOTAVAIL"
STALE_PATTERN = (
    r"RemoteDisconnected|ConnectionResetError|Connection reset|BrokenPipe|Broken pipe|Connection aborted"
    r"|ConnectionAborted|connection closed|HTTPConnectionClosed"
)


def connections(runs: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """``connections_opened`` and ``connections_source`` per run, by DESIGN's precedence."""
    kernel = pd.Series(np.nan, index=runs["run_id"])
    if len(samples):
        grouped = samples.groupby("run_id")["active_opens"]
        kernel = (grouped.max() - grouped.min()).reindex(runs["run_id"])
    out = pd.DataFrame({"run_id": runs["run_id"].to_numpy()})
    target = pd.to_numeric(runs["target_accepted"], errors="coerce").to_numpy()
    client = pd.to_numeric(runs["client_opened"], errors="coerce").to_numpy()
    kern = np.where(runs["isolated"].to_numpy(dtype=bool), kernel.to_numpy(dtype=float), np.nan)
    out["connections_opened"] = np.where(~np.isnan(target), target, np.where(~np.isnan(client), client, kern))
    out["connections_source"] = np.where(
        ~np.isnan(target), "target", np.where(~np.isnan(client), "client", np.where(~np.isnan(kern), "kernel", ""))
    )
    return out


def peaks(samples: pd.DataFrame) -> pd.DataFrame:
    cols = {
        "client_time_wait": "peak_client_time_wait",
        "server_time_wait": "peak_server_time_wait",
        "ports_in_use": "peak_ports_in_use",
    }
    if not len(samples):
        return pd.DataFrame(columns=["run_id", *cols.values()])
    return samples.groupby("run_id")[list(cols)].max().rename(columns=cols).reset_index()


def failures_matching(failures: pd.DataFrame, pattern: str, column: str) -> pd.DataFrame:
    """Per run, the occurrences of failures whose error matches ``pattern``."""
    if not len(failures):
        return pd.DataFrame(columns=["run_id", column])
    hit = failures["error"].astype(str).str.contains(pattern, regex=True)
    occ = pd.to_numeric(failures["occurrences"], errors="coerce").fillna(0).where(hit, 0)
    return occ.groupby(failures["run_id"]).sum().rename(column).reset_index()


def exhaustion(runs: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """Per run that hit errno 99: when, after how many connections, and the churn before it."""
    rows = []
    for run in runs.itertuples():
        t0, t99 = run.first_connect_ts, run.first_addr_not_available_ts
        if t0 is None or t99 is None or pd.isna(t0) or pd.isna(t99):
            continue
        observed = t99 - t0
        churn = kernel_rate(samples[samples["run_id"] == run.run_id], t99) if len(samples) else None
        if churn is None and observed > 0:
            churn = (run.opened_before_addr_not_available or 0) / observed
        rows.append((run.run_id, observed, run.opened_before_addr_not_available, churn))
    return pd.DataFrame(
        rows, columns=["run_id", "observed_seconds_to_exhaustion", "connections_before_exhaustion", "churn_before_s"]
    )


def kernel_rate(samples: pd.DataFrame, until_ts: float) -> float | None:
    """Connections opened per second by the kernel's count (ActiveOpens), from the first sample
    that shows load to the last sample before ``until_ts``; None with fewer than two such samples."""
    s = samples[samples["ts"] <= until_ts].sort_values("ts")
    if len(s) < 2:
        return None
    moving = s[s["active_opens"] > s["active_opens"].iloc[0]]
    start = s.iloc[max(0, s.index.get_loc(moving.index[0]) - 1)] if len(moving) else None
    end = s.iloc[-1]
    if start is None or end["ts"] <= start["ts"] or end["active_opens"] <= start["active_opens"]:
        return None
    return float((end["active_opens"] - start["active_opens"]) / (end["ts"] - start["ts"]))


def projection(churn_per_s: pd.Series, port_range: pd.Series) -> pd.DataFrame:
    """Steady-state port use with no TIME_WAIT reuse, and the seconds until the range runs out."""
    pct = churn_per_s * TIME_WAIT_S / port_range * 100
    seconds = (port_range / churn_per_s).where(pct >= 100)
    return pd.DataFrame({"projected_port_use_pct": pct, "seconds_to_exhaustion": seconds})


def summarize(runs: pd.DataFrame, stats: pd.DataFrame, samples: pd.DataFrame, failures: pd.DataFrame) -> pd.DataFrame:
    """The summary frame: one row per run, :data:`SUMMARY_COLUMNS`."""
    df = runs[["run_id", "scenario", "status", "duration_s", "start", "port_range"]].merge(stats, on="run_id")
    df = df.merge(connections(runs, samples), on="run_id")
    df = df.merge(peaks(samples), on="run_id", how="left")
    for pattern, column in ((ERRNO_99_PATTERN, "addr_not_available_errors"), (STALE_PATTERN, "connection_errors")):
        df = df.merge(failures_matching(failures, pattern, column), on="run_id", how="left")
        df[column] = df[column].fillna(0).astype(int)
    if len(samples):  # the sidecar's own reading wins over run.json when both exist
        sampled_range = samples.groupby("run_id")["port_range"].max()
        df["port_range"] = df["run_id"].map(sampled_range).fillna(df["port_range"])
    requests = df["requests"].astype(float)
    duration = pd.to_numeric(df["duration_s"], errors="coerce")
    port_range = pd.to_numeric(df["port_range"], errors="coerce")
    df["connections_per_request"] = (df["connections_opened"] / requests).where(requests > 0)
    df["churn_per_s"] = (df["connections_opened"] / duration).where(duration > 0)
    ex = exhaustion(runs, samples)
    df = df.merge(ex, on="run_id", how="left")
    df["churn_per_s"] = df["churn_before_s"].fillna(df["churn_per_s"])
    df["peak_port_use_pct"] = df["peak_ports_in_use"] / port_range * 100
    tw = df["peak_server_time_wait"] + df["peak_client_time_wait"]
    df["server_time_wait_pct"] = (df["peak_server_time_wait"] / tw * 100).where(tw > 0)
    df = pd.concat([df, projection(df["churn_per_s"], port_range)], axis=1)
    observed = df["observed_seconds_to_exhaustion"]
    df["projection_error_pct"] = ((df["seconds_to_exhaustion"] - observed).abs() / observed * 100).where(observed > 0)
    df["port_range"] = port_range
    return df[list(SUMMARY_COLUMNS)].sort_values("start", kind="stable").reset_index(drop=True)
