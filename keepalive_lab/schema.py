"""Every file of a run folder and of a report, defined once: fields, types, units.

A run folder ``RUN_DIR/<UTC timestamp>-<scenario>/`` is the contract between a test and the
analysis. The writers (the plugin, the sidecar, the target) and the reader (:mod:`analysis`)
both use the definitions here; :mod:`analysis` imports nothing else from the suite.

``run.json``
    :class:`RunRecord`: what ran and how it ended.
``target.json``
    :class:`TargetCounts`: the embedded target's counters for one test.
``sockets.csv``
    :class:`SocketSample`, one row per sample of the sidecar.
``stats.csv``, ``stats_history.csv``, ``failures.csv``, ``exceptions.csv``, ``locust.html``
    Locust's own (the columns ``--csv`` writes); :data:`LOCUST_STATS_COLUMNS` and
    :data:`LOCUST_FAILURES_COLUMNS` are the ones the analysis needs.
``summary.csv`` (of a report)
    :data:`SUMMARY_COLUMNS`, one row per run.

Every file except ``sockets.csv`` is written whole (:func:`write_atomic`): a temporary file in the
same folder, then a rename, so a reader or a crash never sees half a file. ``sockets.csv`` is
appended and flushed row by row, so a crash loses at most the row being written.

A reader refuses a file that does not fit with :class:`SchemaError`, one line naming the file and
what is wrong. Fields added after a file was written take their defaults, so older run folders
still load.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import os
import tempfile
import types
import typing
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

RUN_DIR = "runs"  # where run folders go unless told otherwise
REPORT_DIR = "reports"  # where a report goes unless told otherwise
RUN_JSON = "run.json"
TARGET_JSON = "target.json"
SOCKETS_CSV = "sockets.csv"
STATS_CSV = "stats.csv"
STATS_HISTORY_CSV = "stats_history.csv"
FAILURES_CSV = "failures.csv"
EXCEPTIONS_CSV = "exceptions.csv"
LOCUST_HTML = "locust.html"
REPORT_HTML = "report.html"  # a web-UI run's own report, one file, written when its test stops
SUMMARY_CSV = "summary.csv"
HOSTS_CSV = "hosts.csv"


class SchemaError(ValueError):
    """A file that does not fit its format; ``str()`` is one line naming the file and the problem."""


# -- whole-file writes -----------------------------------------------------------------------


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` to ``path`` whole: temporary file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if mode == "wb" else {"encoding": "utf-8", "newline": ""})) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON, whole."""
    return write_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding one object, or SchemaError with one line."""
    if not path.exists():
        raise SchemaError(f"{path}: missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SchemaError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SchemaError(f"{path}: cannot be read ({e})") from None
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: not a JSON object")
    return data


# -- typed records ---------------------------------------------------------------------------

_REQUIRED = "required"  # metadata flag: the reader refuses a file without this key


def required() -> Any:
    return field(metadata={_REQUIRED: True})


def _matches(value: Any, hint: Any) -> bool:
    """True when a JSON value fits a type hint (int for float is fine; bool is not an int)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        return isinstance(value, str)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or hint)


def _nested_type(hint: Any) -> Any:
    """The dataclass inside ``X | None``, if any."""
    if dataclasses.is_dataclass(hint):
        return hint
    for h in typing.get_args(hint):
        if dataclasses.is_dataclass(h):
            return h
    return None


class Record:
    """A JSON object with typed fields: ``to_dict()`` writes it, ``from_dict()`` checks and reads it."""

    # Keys whose None value is left out when written (optional details of a nested object).
    OMIT_NONE: typing.ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, Record):
                value = value.to_dict()
            elif isinstance(value, StrEnum):
                value = str(value)
            if value is None and self.OMIT_NONE:
                continue
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> Self:
        hints = _type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in data:
                if f.metadata.get(_REQUIRED):
                    raise SchemaError(f"{where}: missing key {f.name!r}")
                continue
            value, hint = data[f.name], hints[f.name]
            if not _matches(value, hint):
                raise SchemaError(f"{where}: {f.name!r} is {type(value).__name__}, not {_hint_name(hint)}")
            nested = _nested_type(hint)
            if nested is not None and isinstance(value, dict):
                value = nested.from_dict(value, f"{where}: {f.name}")
            values[f.name] = value
        return cls(**values)


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """A record class's field types (resolved once: a report reads hundreds of run.json files)."""
    return typing.get_type_hints(cls)


def _hint_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_hint_name(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if dataclasses.is_dataclass(hint) or typing.get_origin(hint) is dict:
        return "an object"
    return {int: "a whole number", float: "a number", str: "a string", bool: "true or false", list: "a list"}.get(
        typing.get_origin(hint) or hint, str(hint)
    )


# -- run.json --------------------------------------------------------------------------------


class Status(StrEnum):
    """How a run ended (``running`` while it runs, and forever if Locust was killed)."""

    RUNNING = "running"
    COMPLETED = "completed"  # it ran as asked
    STOPPED = "stopped"  # the web UI's STOP button ended it early
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM ended it early
    STUCK = "stuck"  # it ended (-t) while users waited for a connection that never came
    DEGRADED = "degraded"  # a worker was lost: what it did after its last report is not counted
    FAILED = "failed"  # something broke: see status_reason


# -- connect and TLS handshake times ----------------------------------------------------------
# A histogram of durations is a JSON object {"count": N, "total_ms": T, "max_ms": M, "buckets":
# {"<upper edge in ms>": N, ..., "inf": N}}: each duration is counted in the first bucket whose
# edge it does not exceed. Histograms of several processes add up bucket by bucket.
TIME_BUCKETS_MS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


def _edge(ms: float) -> str:
    for edge in TIME_BUCKETS_MS:
        if ms <= edge:
            return f"{edge:g}"
    return "inf"


def histogram_add(hist: dict[str, Any], ms: float) -> None:
    """Count one duration (ms) into ``hist``, in place."""
    hist["count"] = hist.get("count", 0) + 1
    hist["total_ms"] = round(hist.get("total_ms", 0.0) + ms, 6)
    hist["max_ms"] = max(hist.get("max_ms", 0.0), round(ms, 6))
    buckets = hist.setdefault("buckets", {})
    key = _edge(ms)
    buckets[key] = buckets.get(key, 0) + 1


def histogram_merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Add the histogram ``other`` to ``into``, in place."""
    if not other.get("count"):
        return
    into["count"] = into.get("count", 0) + other["count"]
    into["total_ms"] = round(into.get("total_ms", 0.0) + other.get("total_ms", 0.0), 6)
    into["max_ms"] = max(into.get("max_ms", 0.0), other.get("max_ms", 0.0))
    buckets = into.setdefault("buckets", {})
    for key, n in other.get("buckets", {}).items():
        buckets[key] = buckets.get(key, 0) + n
    into["buckets"] = {k: buckets[k] for k in sorted(buckets, key=lambda k: float(k))}


def histogram_mean_ms(hist: dict[str, Any] | None) -> float | None:
    """The mean duration of a histogram, in ms; None when it counted nothing."""
    if not hist or not hist.get("count"):
        return None
    return hist.get("total_ms", 0.0) / hist["count"]


@dataclass
class RequestNameCounts(Record):
    """One request name's share of the client's connections: ``requests`` (made), of them
    ``new_connection_requests`` (those during which a connection was opened, or tried and failed:
    the others reused one), ``opened``, the closes by kind and the discards of connections its responses came back
    on, ``connect_errors`` and by errno."""

    requests: int = 0
    new_connection_requests: int = 0
    opened: int = 0
    closed_by_client: int = 0
    reset_by_client: int = 0
    closed_by_server: int = 0
    discarded: int = 0
    connect_errors: int = 0
    connect_errors_by_errno: dict[str, int] = field(default_factory=dict)
    connect_ms: dict[str, Any] = field(default_factory=dict)  # TCP connect times (a histogram, above)
    tls_ms: dict[str, Any] = field(default_factory=dict)  # TLS handshake times (HTTPS only)

    def add(self, other: RequestNameCounts) -> None:
        for f in dataclasses.fields(self):
            if f.name == "connect_errors_by_errno":
                for code, n in other.connect_errors_by_errno.items():
                    self.connect_errors_by_errno[code] = self.connect_errors_by_errno.get(code, 0) + n
            elif f.name in ("connect_ms", "tls_ms"):
                histogram_merge(getattr(self, f.name), getattr(other, f.name))
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def reuse_pct(self) -> float | None:
        """Of this name's requests, the share that reused a connection (opened none), in %."""
        if not self.requests:
            return None
        return 100.0 * (self.requests - self.new_connection_requests) / self.requests


@dataclass
class ClientConnections(Record):
    """Connections counted at the client's pool, where the client decides (exact against any server).

    ``opened``: TCP ``connect()`` returned. ``closed``: every close, which splits into
    ``closed_by_client`` (the client closed first: its TIME_WAIT), ``reset_by_client`` (closed
    with unread data: a reset, no TIME_WAIT), ``closed_by_server`` (the server had closed or
    announced it: the server's TIME_WAIT) and ``closed_at_end`` (closed because the test or the
    user ended: idle pooled connections when their pool shut down, requests cut short).
    ``discarded``: the client's closes of connections that came back to a full pool.
    ``connect_errors``: failed connects, and by errno (as a string key; 99 is
    EADDRNOTAVAIL); ``tls_errors``: failed TLS handshakes, by reason. ``pool_timeouts``:
    requests that found no free connection within ``--pool-wait`` (``pool_timeout_users``: the
    users they belonged to); ``pool_waits_cut``: users still waiting for a connection, with no
    connection given back to their pool meanwhile, when the test ended. Times are Unix seconds.
    """

    opened: int = 0
    closed: int = 0
    closed_by_client: int | None = None
    reset_by_client: int | None = None
    closed_by_server: int | None = None
    closed_at_end: int | None = None
    discarded: int = 0
    connect_errors: int = 0
    connect_errors_by_errno: dict[str, int] = field(default_factory=dict)
    tls_errors: int = 0
    tls_errors_by_reason: dict[str, int] = field(default_factory=dict)
    pool_timeouts: int = 0
    pool_timeout_users: int = 0
    pool_waits_cut: int = 0
    first_connect_ts: float | None = None
    first_addr_not_available_ts: float | None = None
    opened_before_addr_not_available: int | None = None
    connect_ms: dict[str, Any] = field(default_factory=dict)  # TCP connect times (histogram)
    tls_ms: dict[str, Any] = field(default_factory=dict)  # TLS handshake times (histogram; HTTPS only)
    by_name: dict[str, Any] = field(default_factory=dict)  # request name -> RequestNameCounts fields

    SUMMED: typing.ClassVar[tuple[str, ...]] = (
        "opened", "closed", "closed_by_client", "reset_by_client", "closed_by_server", "closed_at_end", "discarded",
        "connect_errors", "tls_errors", "pool_timeouts", "pool_timeout_users", "pool_waits_cut",
    )  # fmt: skip

    @classmethod
    def total(cls, parts: list[ClientConnections]) -> ClientConnections:
        """The sum of several processes' counts (Locust workers); the earliest first times."""
        out = cls()
        for name in cls.SUMMED:
            values = [getattr(p, name) for p in parts if getattr(p, name) is not None]
            setattr(out, name, sum(values) if values or getattr(out, name) is not None else None)
        for key in ("connect_errors_by_errno", "tls_errors_by_reason"):
            merged: dict[str, int] = {}
            for part in parts:
                for code, n in getattr(part, key).items():
                    merged[code] = merged.get(code, 0) + n
            setattr(out, key, dict(sorted(merged.items())))
        for key in ("connect_ms", "tls_ms"):
            for part in parts:
                histogram_merge(getattr(out, key), getattr(part, key))
        for key in ("first_connect_ts", "first_addr_not_available_ts"):
            stamps = [getattr(p, key) for p in parts if getattr(p, key) is not None]
            setattr(out, key, min(stamps) if stamps else None)
        before = [p.opened_before_addr_not_available for p in parts if p.opened_before_addr_not_available]
        out.opened_before_addr_not_available = sum(before) if before else None
        by_name: dict[str, RequestNameCounts] = {}
        for part in parts:
            for name, counts in part.by_name.items():
                entry = by_name.setdefault(name, RequestNameCounts())
                entry.add(
                    counts if isinstance(counts, RequestNameCounts) else RequestNameCounts.from_dict(counts, name)
                )
        out.by_name = {name: counts.to_dict() for name, counts in sorted(by_name.items())}
        return out

    @property
    def addr_not_available(self) -> int:
        return self.connect_errors_by_errno.get("99", 0)


@dataclass
class KernelFacts(Record):
    """The kernel's settings a run depends on (per network namespace), and its counters at the start."""

    ip_local_port_range: list[int] = field(default_factory=lambda: [32768, 60999])
    port_range: int = 28232
    tcp_tw_reuse: int | None = None
    hostname: str = ""
    isolated: bool = False  # the run had a private network namespace: loopback was its only interface
    tcp_max_tw_buckets: int | None = None  # the most TIME_WAIT sockets the namespace keeps
    netns_id: int | None = None  # the network namespace's inode number (/proc/self/ns/net)
    baseline: dict[str, int] | None = None


@dataclass
class TargetInfo(Record):
    """The server the run loaded: the embedded target (with its settings), a real peer, or the user's host."""

    OMIT_NONE = True

    embedded: bool = False
    url: str | None = None
    mode: str | None = None
    delay_ms: int | None = None
    body_bytes: int | None = None
    tls: bool | None = None
    bind: str | None = None  # the address it listened on
    peer: str | None = None
    peer_note: str | None = None


@dataclass
class LocustOptions(Record):
    """Locust's own options of the run, and the command line."""

    num_users: int | None = None
    spawn_rate: float | None = None
    run_time: int | None = None
    headless: bool = False
    processes: int | None = None
    command: list[str] = field(default_factory=list)


@dataclass
class SidecarState(Record):
    """``off``, ``running`` (while the test runs), ``ok``, or ``failed`` with its ``error`` and, when it
    stopped during the test, ``stopped_at`` (ISO 8601 UTC, as the run noticed it)."""

    OMIT_NONE = True

    status: str = "off"
    exit_code: int | None = None
    error: str | None = None
    stopped_at: str | None = None
    rows: int | None = None
    interval_s: float | None = None
    port: int | None = None


@dataclass(kw_only=True)
class RunRecord(Record):
    """``run.json``: what ran, where, and how it ended. Written at the start (``running``) and at the end."""

    scenario: str = required()
    locustfile: str | None = None
    user_class: str | None = None
    user_classes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = required()
    settings_by_user_class: dict[str, Any] | None = None
    locust_options: LocustOptions = field(default_factory=LocustOptions)
    host: str | None = None
    target: TargetInfo = field(default_factory=TargetInfo)
    kernel: KernelFacts = required()
    versions: dict[str, str] = field(default_factory=dict)
    start: str = required()
    end: str | None = None
    duration_s: float | None = None
    status: Status = required()
    status_reason: str = ""
    client_connections: ClientConnections | None = None
    requests: int | None = None
    failures: int | None = None
    last_request_ts: float | None = None  # Unix time of the last request: the load's end
    target_connections_accepted: int | None = None
    sidecar: SidecarState = field(default_factory=SidecarState)
    # Workers that stopped answering the master: id, host, last_report_ts and the counts of their
    # last report ("opened", "requests"), which the run's totals include; nothing after it.
    lost_workers: list[dict[str, Any]] = field(default_factory=list)
    # With workers: one entry per worker ("id", "host" (its label), "hostname", "netns" and its
    # WORKER_COUNTS), and per host (see per_host): the same counts summed ("host", "netns",
    # "workers": their ids), its kernel facts and its sidecar. Empty in a local run.
    workers: list[dict[str, Any]] = field(default_factory=list)
    hosts: list[dict[str, Any]] = field(default_factory=list)
    processes: int | None = None  # the processes that ran users (1 without workers)
    pools: int | None = None  # the connection pools that existed: per process per class, or per user

    def write(self, folder: Path) -> Path:
        return write_json_atomic(folder / RUN_JSON, self.to_dict())

    @classmethod
    def read(cls, folder: Path) -> RunRecord:
        path = folder / RUN_JSON
        record = cls.from_dict(read_json_object(path), str(path))
        if record.status not in set(Status):
            raise SchemaError(f"{path}: status {record.status!r} is not one of: {', '.join(Status)}")
        record.status = Status(record.status)
        return record


# The counts run.json gives per worker and per host.
WORKER_COUNTS = (
    "opened", "closed_by_client", "reset_by_client", "closed_by_server", "closed_at_end", "discarded",
    "connect_errors", "tls_errors",
)  # fmt: skip


def per_worker(counts: dict[str, ClientConnections], hosts: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """run.json's ``workers``: each worker's counts, with its host (label, hostname and network namespace)."""
    out = []
    for worker, c in sorted(counts.items()):
        host = hosts.get(worker) or {"hostname": worker.rsplit("_", 1)[0], "netns": None}
        out.append({"id": worker, "host": host.get("label") or host["hostname"], "hostname": host["hostname"],
                    "netns": host.get("netns"),
                    **{k: getattr(c, k) or 0 for k in WORKER_COUNTS},
                    "addr_not_available": c.addr_not_available,
                    "first_addr_not_available_ts": c.first_addr_not_available_ts,
                    "opened_before_addr_not_available": c.opened_before_addr_not_available})  # fmt: skip
    return out


def per_host(workers: list[dict[str, Any]], sampled: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """run.json's ``hosts``: the workers' counts summed per host, the earliest errno 99 of the host, and
    what its sidecar recorded (``sampled``: host -> ``kernel`` facts with their ``baseline``,
    ``sidecar`` state, the ``worker`` that sampled it). Hosts sampled with no worker (the master's)
    have zero counts."""
    hosts: dict[str, dict[str, Any]] = {}

    def entry(host: str) -> dict[str, Any]:
        return hosts.setdefault(host, {"host": host, "netns": None, "workers": [],
                                       **{k: 0 for k in (*WORKER_COUNTS, "addr_not_available")},
                                       "first_addr_not_available_ts": None,
                                       "opened_before_addr_not_available": None})  # fmt: skip

    for w in workers:
        h = entry(w["host"])
        h["netns"] = w["netns"]
        h["workers"].append(w["id"])
        for k in (*WORKER_COUNTS, "addr_not_available"):
            h[k] += w[k]
        ts = w["first_addr_not_available_ts"]
        if ts is not None and (h["first_addr_not_available_ts"] is None or ts < h["first_addr_not_available_ts"]):
            h["first_addr_not_available_ts"] = ts
        if w["opened_before_addr_not_available"]:
            h["opened_before_addr_not_available"] = (h["opened_before_addr_not_available"] or 0) + w[
                "opened_before_addr_not_available"
            ]
    for host, facts in (sampled or {}).items():
        h = entry(host)
        for key in ("kernel", "sidecar", "worker", "writes_run_folder"):
            if key in facts:
                h[key if key != "worker" else "sampled_by"] = facts[key]
        if h["netns"] is None and isinstance(facts.get("kernel"), dict):
            h["netns"] = facts["kernel"].get("netns_id")
    return sorted(hosts.values(), key=lambda h: h["host"])


RUN_JSON_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RunRecord))


# -- target.json -----------------------------------------------------------------------------

COUNTER_FIELDS = ("connections_accepted", "requests", "closed_by", "open_connections", "requests_per_connection")


@dataclass(kw_only=True)
class TargetCounts(Record):
    """The embedded target's exact counts (``target.json``, and its ``/_stats`` answer).

    ``closed_by``: who closed each finished connection, ``client``, ``server`` or ``client_reset``
    (the side that closes first with a FIN holds the TIME_WAIT; a reset leaves none).
    ``requests_per_connection``: ``{"requests on one connection": connections}``.
    """

    connections_accepted: int = required()
    requests: int = required()
    closed_by: dict[str, int] = field(default_factory=lambda: {"client": 0, "server": 0, "client_reset": 0})
    open_connections: int = 0
    requests_per_connection: dict[str, int] = field(default_factory=dict)
    mode: str | None = None
    url: str | None = None

    def minus(self, base: TargetCounts | None) -> TargetCounts:
        """This test's counts: these cumulative counts less ``base``, taken when the test started."""
        if base is None:
            return dataclasses.replace(self)
        per = {k: v - base.requests_per_connection.get(k, 0) for k, v in self.requests_per_connection.items()}
        return TargetCounts(
            connections_accepted=self.connections_accepted - base.connections_accepted,
            requests=self.requests - base.requests,
            closed_by={k: v - base.closed_by.get(k, 0) for k, v in self.closed_by.items()},
            open_connections=self.open_connections,
            requests_per_connection={k: v for k, v in per.items() if v},
            mode=self.mode,
            url=self.url,
        )

    def write(self, folder: Path) -> Path:
        return write_json_atomic(folder / TARGET_JSON, self.to_dict())

    @classmethod
    def read(cls, folder: Path) -> TargetCounts:
        path = folder / TARGET_JSON
        return cls.from_dict(read_json_object(path), str(path))


# -- sockets.csv -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SocketSample:
    """One row of ``sockets.csv``: the TCP sockets with the target port on either end, and kernel counters.

    Client side: sockets whose *remote* port is the target port; server side: sockets whose
    *local* port is the target port (listening sockets excluded). Three sets of figures:

    this run's own (no prefix)
        the sockets of the connections this run's clients opened (their socket cookies, told to
        the sidecar as they connect); with no client telling (``python -m keepalive_lab.sidecar``
        around another program), every socket that was not there at the first sample.
    ``preexisting_*``
        sockets already there at the first sample (known by their cookie, or 4-tuple), such as an
        earlier run's TIME_WAIT, which lasts 60 s.
    ``host_*``
        every such socket of the host (network namespace), whoever made it.

    ``ts``: Unix time, seconds. ``host``: hostname. ``*_established``, ``*_time_wait``,
    ``*_close_wait``, ``*_other``: sockets by state. ``ports_in_use``: distinct local ports of
    client-side sockets, any state (a TIME_WAIT socket holds its port for 60 s).
    ``client_time_wait_churned``: the run's own client sockets that have entered TIME_WAIT since
    the first sample, cumulative, leaving out connections closed because the test or their user
    ended, such as idle pooled ones when their pool shut down (``client_time_wait_at_end``).
    ``server_time_wait_entered``: the same for the server side.
    ``port_range``: the size of ``net.ipv4.ip_local_port_range``. ``active_opens``,
    ``passive_opens``, ``attempt_fails``, ``estab_resets``: cumulative ``Tcp:`` counters of
    /proc/net/snmp (whole namespace). ``tw_total``: TIME_WAIT sockets of the namespace
    (/proc/net/sockstat). ``sample_ms``: what the sample cost, milliseconds.
    """

    ts: float
    host: str
    client_established: int
    client_time_wait: int
    client_close_wait: int
    client_other: int
    server_established: int
    server_time_wait: int
    server_close_wait: int
    server_other: int
    ports_in_use: int
    client_time_wait_churned: int
    client_time_wait_at_end: int
    server_time_wait_entered: int
    preexisting_client_time_wait: int
    preexisting_server_time_wait: int
    preexisting_ports_in_use: int
    host_client_time_wait: int
    host_server_time_wait: int
    host_ports_in_use: int
    port_range: int
    active_opens: int
    passive_opens: int
    attempt_fails: int
    estab_resets: int
    tw_total: int
    sample_ms: float

    def row(self) -> list[Any]:
        return [getattr(self, name) for name in SOCKETS_COLUMNS]


SOCKETS_COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SocketSample))
SOCKET_STATE_COLUMNS = SOCKETS_COLUMNS[2:11]  # the run's own socket counts, which every sampler must agree on
# Columns added after the first format: an older sockets.csv without them still loads (they read
# as missing values, and the figures that need them fall back or stay empty).
SOCKETS_ADDED = (
    "client_time_wait_churned",
    "client_time_wait_at_end",
    "server_time_wait_entered",
    "preexisting_client_time_wait",
    "preexisting_server_time_wait",
    "preexisting_ports_in_use",
    "host_client_time_wait",
    "host_server_time_wait",
    "host_ports_in_use",
)
SOCKETS_REQUIRED = tuple(c for c in SOCKETS_COLUMNS if c not in SOCKETS_ADDED)
# Columns that only grow over a run (cumulative): they keep 64 bits; every other count is a number
# of sockets or ports, which fits 32.
SOCKETS_CUMULATIVE = (
    "client_time_wait_churned",
    "server_time_wait_entered",
    "active_opens",
    "passive_opens",
    "attempt_fails",
    "estab_resets",
)
# What a reader of sockets.csv needs: every column but ``sample_ms`` (the sampler's own cost).
SOCKETS_READ_COLUMNS = tuple(c for c in SOCKETS_COLUMNS if c != "sample_ms")
# The types it reads them as: the time as float64, the host as a category, counts as int32, the
# cumulative counters as int64. A row takes about 110 bytes in memory, against about 270 with
# pandas' defaults (int64 and a Python string per host name): 10 million rows (11 days at 10 Hz)
# fit in about 1.1 GB.
SOCKETS_READ_DTYPES: dict[str, str] = {
    c: "float64" if c == "ts" else "category" if c == "host" else "int64" if c in SOCKETS_CUMULATIVE else "int32"
    for c in SOCKETS_READ_COLUMNS
}


# -- Locust's CSV files (their columns are Locust's; these are the ones the analysis reads) ----

LOCUST_STATS_COLUMNS = ("Name", "Request Count", "Failure Count", "Requests/s", "50%", "95%", "99%")
LOCUST_FAILURES_COLUMNS = ("Method", "Name", "Error", "Occurrences")
# The column the suite adds to the run folder's failures.csv: the host the failures happened on
# (one row per error and host). Absent from Locust's own --csv files and from older run folders.
FAILURES_HOST_COLUMN = "Host"


# -- summary.csv -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A column of a report file: its name, its kind (``id``, ``text``, ``number``) and its meaning."""

    name: str
    kind: str
    meaning: str


SUMMARY: tuple[Column, ...] = (
    Column("run_id", "id", "the run folder's name: UTC start time and scenario"),
    Column("scenario", "text", "the scenario name (the gate's rules match it)"),
    Column(
        "status", "text", "completed, stopped, interrupted, stuck, degraded or failed (see run.json's status_reason)"
    ),
    Column("requests", "number", "requests made (Locust's Aggregated row)"),
    Column("failures", "number", "requests that failed (Locust's Aggregated row)"),
    Column("rps", "number", "requests per second (Locust's Aggregated row)"),
    Column("p50_ms", "number", "median response time, ms"),
    Column("p95_ms", "number", "95th percentile response time, ms"),
    Column("p99_ms", "number", "99th percentile response time, ms"),
    Column(
        "connections_opened",
        "number",
        "the best exact count: the target's accept count, else the client pool's, else the active_opens "
        "delta of an isolated run",
    ),
    Column("connections_source", "text", "where connections_opened comes from: target, client or kernel"),
    Column("connections_per_request", "number", "connections_opened / requests; reuse is 1 minus it"),
    Column(
        "reuse_pct",
        "number",
        "the requests that reused a connection (none was opened during them), 100 x that / requests, %; where "
        "the client's per-request counts are missing, 100 x (1 - connections_per_request), at least 0",
    ),
    Column(
        "client_closes",
        "number",
        "connections the client closed while the server held them open, during the load (closes because the "
        "test or the user ended left out): the client pool's count, else the kernel's TIME_WAIT count",
    ),
    Column("client_closes_per_request", "number", "client_closes / requests: above 0.1 the run churns"),
    Column("server_closes", "number", "connections the server closed first (the target's count, else the client's)"),
    Column(
        "churn_per_s",
        "number",
        "the rate at which the run leaves TIME_WAIT on the client, from its first connection to its last "
        "request (or first errno 99), per s: the sidecar's count of the run's own client sockets entering "
        "TIME_WAIT (connections closed because the test or their user ended left out), else the client's "
        "closes",
    ),
    Column("churn_source", "text", "where churn_per_s comes from: kernel (the sidecar) or client"),
    Column("peak_client_time_wait", "number", "peak of this run's own client-side TIME_WAIT sockets"),
    Column("peak_server_time_wait", "number", "peak of this run's own server-side TIME_WAIT sockets"),
    Column("peak_ports_in_use", "number", "peak of the distinct local ports of this run's own client sockets"),
    Column(
        "port_range",
        "number",
        "size of net.ipv4.ip_local_port_range, ports; with several client hosts, limiting_host's (a run's churn, "
        "port figures and projections are then that host's, see hosts.csv for each)",
    ),
    Column("peak_port_use_pct", "number", "100 x peak_ports_in_use / port_range, %"),
    Column(
        "preexisting_client_time_wait",
        "number",
        "client-side TIME_WAIT sockets already there when the run started (an earlier run's, say), left out of "
        "the run's own figures",
    ),
    Column(
        "peak_host_ports_in_use", "number", "peak of the host's ports in use toward the target port, whoever made them"
    ),
    Column(
        "projected_port_use_pct",
        "number",
        "100 x churn_per_s x 60 / port_range, %: the client's steady state with no TIME_WAIT reuse (0 when the "
        "server closes first)",
    ),
    Column(
        "seconds_to_exhaustion", "number", "port_range / churn_per_s when the projection is >= 100 %, else empty, s"
    ),
    Column(
        "tw_reuse_limit_per_s",
        "number",
        "with tcp_tw_reuse on for this destination (1, or 2 on loopback): the churn above which the range still "
        "runs out, port_range / 1 s, per s; else empty",
    ),
    Column(
        "server_time_wait_pct",
        "number",
        "the server's share of TIME_WAIT, 100 x server / (server + client) at their peaks, %",
    ),
    Column(
        "server_churn_per_s",
        "number",
        "the rate at which the run leaves TIME_WAIT on the server (seen only when the server is on this host), per s",
    ),
    Column("tcp_max_tw_buckets", "number", "net.ipv4.tcp_max_tw_buckets: the most TIME_WAIT sockets a host keeps"),
    Column(
        "projected_server_tw_pct",
        "number",
        "100 x server_churn_per_s x 60 / tcp_max_tw_buckets, %: past 100 the kernel destroys TIME_WAIT sockets "
        'early ("time wait bucket table overflow")',
    ),
    Column("addr_not_available_errors", "number", "failures with errno 99 (EADDRNOTAVAIL)"),
    Column(
        "connection_errors",
        "number",
        "failures on a connection the server had closed (RemoteDisconnected, ConnectionResetError, broken pipe)",
    ),
    Column("tls_errors", "number", "failed TLS handshakes (counted at the client)"),
    Column("connect_ms_mean", "number", "the mean time of the client's TCP connects, ms"),
    Column("tls_ms_mean", "number", "the mean time of the client's TLS handshakes (HTTPS only), ms"),
    Column(
        "reuse_saved_s",
        "number",
        "the requests that reused a connection times the mean cost of a new one (connect plus TLS): the time "
        "reuse saved over the run, s",
    ),
    Column(
        "observed_seconds_to_exhaustion",
        "number",
        "seconds from the client's first connection to its first errno 99, when it ran out of ports, s",
    ),
    Column("connections_before_exhaustion", "number", "connections the client had opened by its first errno 99"),
    Column("projection_error_pct", "number", "100 x abs(seconds_to_exhaustion - observed) / observed, %"),
    Column("client_hosts", "number", "hosts that ran the run's users (each sampled by its own sidecar)"),
    Column(
        "limiting_host",
        "text",
        "with several client hosts: the one whose ports run out first (the first to hit errno 99, else the "
        "highest projected_port_use_pct); empty with one",
    ),
    Column("duration_s", "number", "the run's length, s"),
    Column("start", "text", "the run's start, ISO 8601 UTC"),
)

# -- hosts.csv (of a report): one row per run and host ------------------------------------------

HOSTS: tuple[Column, ...] = (
    Column("run_id", "id", "the run folder's name"),
    Column("host", "text", "the host: its hostname, and its network namespace's name when it has its own"),
    Column("workers", "number", "the Locust worker processes that ran users on it (0: the master's host, sampled)"),
    Column("connections_opened", "number", "connections its clients opened"),
    Column("churn_per_s", "number", "the rate its own client sockets entered TIME_WAIT in the load, per s"),
    Column("peak_client_time_wait", "number", "peak of its own client-side TIME_WAIT sockets"),
    Column("peak_ports_in_use", "number", "peak of the distinct local ports of its own client sockets"),
    Column("port_range", "number", "size of its net.ipv4.ip_local_port_range, ports"),
    Column("projected_port_use_pct", "number", "100 x churn_per_s x 60 / port_range, %"),
    Column(
        "seconds_to_exhaustion", "number", "port_range / churn_per_s when the projection is >= 100 %, else empty, s"
    ),
    Column("addr_not_available_errors", "number", "its connects that failed with errno 99 (EADDRNOTAVAIL)"),
    Column("observed_seconds_to_exhaustion", "number", "seconds from the run's first connection to its first errno 99"),
)
HOSTS_COLUMNS: tuple[str, ...] = tuple(c.name for c in HOSTS)
HOSTS_NUMERIC: tuple[str, ...] = tuple(c.name for c in HOSTS if c.kind == "number")
# -- connections.csv (of a run), summary_by_name.csv (of a report) ----------------------------
BY_NAME: tuple[Column, ...] = (
    Column("name", "text", "the request's name in Locust's statistics (its path, or the name= it was given)"),
    Column("requests", "number", "requests made under this name (the client's count)"),
    Column(
        "new_connection_requests",
        "number",
        "of them, the requests during which the client opened a connection (the others reused one)",
    ),
    Column("reuse_pct", "number", "100 x (requests - new_connection_requests) / requests, %"),
    Column("connections_opened", "number", "TCP connections opened during this name's requests"),
    Column("connections_per_request", "number", "connections_opened / requests"),
    Column("closed_by_client", "number", "connections the client closed first after this name's responses"),
    Column("reset_by_client", "number", "the same, closed with unread data: a reset, no TIME_WAIT"),
    Column("closed_by_server", "number", "connections the server had closed after this name's responses"),
    Column("discarded", "number", "connections that came back to a full pool after this name's responses"),
    Column("connect_errors", "number", "failed connects during this name's requests"),
    Column("connect_ms_mean", "number", "mean time of this name's TCP connects, ms"),
    Column("connect_ms_max", "number", "longest TCP connect, ms"),
    Column("tls_ms_mean", "number", "mean time of this name's TLS handshakes (HTTPS), ms"),
    Column("tls_ms_max", "number", "longest TLS handshake, ms"),
)
BY_NAME_COLUMNS: tuple[str, ...] = tuple(c.name for c in BY_NAME)
CONNECTIONS_CSV = "connections.csv"  # a run's BY_NAME rows, one per request name
SUMMARY_BY_NAME_CSV = "summary_by_name.csv"  # a report's: run_id, then BY_NAME, one row per run and name


def by_name_rows(conns: ClientConnections | None) -> list[dict[str, Any]]:
    """A run's connections per request name (:data:`BY_NAME`), sorted by name."""
    rows = []
    for name, raw in sorted((conns.by_name if conns is not None else {}).items()):
        c = raw if isinstance(raw, RequestNameCounts) else RequestNameCounts.from_dict(raw, f"by_name {name!r}")
        rows.append({
            "name": name,
            "requests": c.requests,
            "new_connection_requests": c.new_connection_requests,
            "reuse_pct": None if c.reuse_pct is None else round(c.reuse_pct, 2),
            "connections_opened": c.opened,
            "connections_per_request": round(c.opened / c.requests, 4) if c.requests else None,
            "closed_by_client": c.closed_by_client,
            "reset_by_client": c.reset_by_client,
            "closed_by_server": c.closed_by_server,
            "discarded": c.discarded,
            "connect_errors": c.connect_errors,
            "connect_errors_by_errno": dict(c.connect_errors_by_errno),  # not a CSV column: the web UI's detail
            "connect_ms_mean": _rounded(histogram_mean_ms(c.connect_ms)),
            "connect_ms_max": _rounded(c.connect_ms.get("max_ms")),
            "tls_ms_mean": _rounded(histogram_mean_ms(c.tls_ms)),
            "tls_ms_max": _rounded(c.tls_ms.get("max_ms")),
        })  # fmt: skip
    return rows


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def by_name_csv(rows: list[dict[str, Any]], leading: tuple[str, ...] = ()) -> str:
    """:data:`BY_NAME` rows as CSV text (``leading``: columns before them, e.g. ``run_id``)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*leading, *BY_NAME_COLUMNS], lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


SUMMARY_COLUMNS: tuple[str, ...] = tuple(c.name for c in SUMMARY)
SUMMARY_NUMERIC: tuple[str, ...] = tuple(c.name for c in SUMMARY if c.kind == "number")
