"""Run by test_private_names.py in its own process (Locust monkey-patches through gevent): call each
function of keepalive_lab.locust_compat against real Locust objects, and print one JSON object,
function name -> "ok" or what went wrong."""

from __future__ import annotations

from locust import User, constant, events, task
from locust.env import Environment

import csv
import io
import json
import socket
import sys
import tempfile
import traceback
from pathlib import Path

import gevent

from keepalive_lab import locust_compat


class IdleUser(User):
    wait_time = constant(0.01)

    @task
    def idle(self) -> None:
        gevent.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(condition, timeout_s: float = 10.0) -> bool:
    for _ in range(int(timeout_s / 0.02)):
        if condition():
            return True
        gevent.sleep(0.02)
    return False


def master_and_worker():
    port = free_port()
    master_env = Environment(user_classes=[IdleUser], events=events)
    master = master_env.create_master_runner("127.0.0.1", port)
    worker_env = Environment(user_classes=[IdleUser], events=events)
    worker = worker_env.create_worker_runner("127.0.0.1", port)
    assert wait(lambda: len(master.clients.ready) == 1), "the worker never connected"
    return master, worker


def check_worker_ids(master, worker) -> None:
    assert locust_compat.worker_ids(master) == [worker.client_id]


def check_stop_worker_users(master, worker) -> None:
    master.start(2, spawn_rate=100)
    assert wait(lambda: worker.user_count == 2), "the worker never ran its users"
    locust_compat.stop_worker_users(master)
    assert wait(lambda: worker.user_count == 0), "the worker's users did not stop"


def check_answering_worker_ids(master, worker) -> None:
    assert locust_compat.answering_worker_ids(master) == [worker.client_id]
    master.clients[worker.client_id].state = "missing"  # what Locust's heartbeat check sets
    try:
        assert locust_compat.answering_worker_ids(master) == []
    finally:
        master.clients[worker.client_id].state = "ready"


def check_worker_user_counts(master, worker) -> None:
    master.start(2, spawn_rate=100)
    assert wait(lambda: locust_compat.worker_user_counts(master) == {worker.client_id: 2}), (
        f"the master never heard of the worker's 2 users: {locust_compat.worker_user_counts(master)}"
    )
    master.stop()
    assert wait(lambda: worker.user_count == 0), "the worker's users did not stop"


def check_before_master_start(master, worker) -> None:
    called = []
    locust_compat.before_master_start(master, lambda: called.append(master.user_count))
    master.start(1, spawn_rate=100)
    assert called == [0], called
    assert wait(lambda: worker.user_count == 1), "the wrapped start() did not start the users"
    master.stop()
    assert wait(lambda: worker.user_count == 0), "the worker's users did not stop"


def check_send_stats_now(master, worker) -> None:
    seen = []
    master.environment.events.worker_report.add_listener(lambda client_id, data, **_: seen.append(client_id))
    locust_compat.send_stats_now(worker)
    assert wait(lambda: worker.client_id in seen, 2.0), "no report reached the master"


def check_target_user_count() -> None:
    env = Environment(user_classes=[IdleUser], events=events)
    runner = env.create_local_runner()
    runner.start(3, spawn_rate=100)
    assert wait(lambda: runner.user_count == 3), "the users never started"
    assert locust_compat.target_user_count(runner) == 3
    runner.quit()


def check_greenlet_crashed() -> None:
    assert locust_compat.greenlet_crashed() is False


def check_html_report() -> None:
    env = Environment(user_classes=[IdleUser], events=events)
    env.create_local_runner()
    assert "<html" in locust_compat.html_report(env)[:2000].lower()


def check_stats_csv_files() -> None:
    env = Environment(user_classes=[IdleUser], events=events)
    env.create_local_runner()
    files = locust_compat.stats_csv_files(env)
    assert set(files) == {"stats.csv", "failures.csv", "exceptions.csv"}
    assert files["stats.csv"].startswith("Type,Name,Request Count,Failure Count")
    # With a host per error: one row per error and host, in the order of Locust's rows.
    for name, error in (("/b", "OSError(99, 'Cannot assign requested address')"), ("/a", "boom")):
        env.stats.log_error("GET", name, error)
    env.stats.log_error("GET", "/a", "boom")
    hosts = {"/a": {"h1": 1, "h2": 1}, "/b": {"h2": 1}}
    by_key = {key: hosts[err.name] for key, err in env.stats.errors.items()}
    text = locust_compat.stats_csv_files(env, by_key.__getitem__)["failures.csv"]
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:4] == ["Method", "Name", "Error", "Occurrences"] and rows[0][-1] == "Host", rows[0]
    got = sorted((r[1], r[-1], r[3]) for r in rows[1:])
    assert got == [("/a", "h1", "1"), ("/a", "h2", "1"), ("/b", "h2", "1")], text


def check_stats_history() -> None:
    env = Environment(user_classes=[IdleUser], events=events)
    env.create_local_runner()
    with tempfile.TemporaryDirectory() as tmp:
        history = locust_compat.StatsHistory(env, Path(tmp))
        gevent.sleep(0.1)
        history.finish(Path(tmp) / "stats_history.csv")
        text = (Path(tmp) / "stats_history.csv").read_text()
        assert text.startswith("Timestamp,User Count,Type,Name") and len(text.splitlines()) >= 2
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["stats_history.csv"]


def main() -> None:
    results = {}

    def run(name, fn, *args) -> None:
        try:
            fn(*args)
            results[name] = "ok"
        except Exception as e:  # report every break, not just the first
            results[name] = f"{type(e).__name__}: {e} ({traceback.format_exc(limit=-1).strip().splitlines()[-3]})"

    for name, fn in (
        ("target_user_count", check_target_user_count),
        ("greenlet_crashed", check_greenlet_crashed),
        ("html_report", check_html_report),
        ("stats_csv_files", check_stats_csv_files),
        ("StatsHistory", check_stats_history),
    ):
        run(name, fn)
    try:
        master, worker = master_and_worker()
    except Exception as e:
        for name in (
            "worker_ids",
            "stop_worker_users",
            "send_stats_now",
            "answering_worker_ids",
            "worker_user_counts",
            "before_master_start",
        ):
            results[name] = f"no master and worker: {e}"
    else:
        run("worker_ids", check_worker_ids, master, worker)
        run("stop_worker_users", check_stop_worker_users, master, worker)
        run("send_stats_now", check_send_stats_now, master, worker)
        run("answering_worker_ids", check_answering_worker_ids, master, worker)
        run("worker_user_counts", check_worker_user_counts, master, worker)
        run("before_master_start", check_before_master_start, master, worker)
        master.quit()
        worker.quit()
    print(json.dumps(results))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
