"""The seed's concurrent experiment: goroutine-style users sharing one pool (real locust runs)."""

from __future__ import annotations

import pytest


def counts(r) -> tuple[int, int]:
    """(client-side connections opened, target's accept count); the test asserts they agree."""
    return r.run["client_connections"]["opened"], r.accepted


def test_default_is_gos_default_client_and_churns(run_locust):
    r = run_locust("concurrent.py")
    assert r.returncode == 0, r.output
    settings = r.run["settings"]
    assert (settings["pool_scope"], settings["pool_size"], settings["pool_full"], settings["drain"]) == (
        "shared",
        2,
        "discard",
        "full",
    )
    assert r.run["locust_options"]["num_users"] == 10
    assert r.run["requests"] == 100
    opened, accepted = counts(r)
    assert opened == accepted
    assert accepted > 10
    assert r.run["client_connections"]["discarded"] == opened - 2  # all but the 2 kept are discarded


@pytest.mark.parametrize(
    "args, expected",
    [
        (("--pool-size", "10"), 10),
        (("--pool-scope", "user"), 10),
        (("--pool-full", "block"), 2),
        (("--client", "fasthttp", "--pool-full", "block"), 2),
        (("--client", "fasthttp", "--pool-full", "block", "--pool-scope", "user"), 10),
    ],
    ids=["shared-pool-10", "per-user-pools", "pool-2-block", "fasthttp-shared-2", "fasthttp-per-user"],
)
def test_exact_connection_counts(run_locust, args, expected):
    r = run_locust("concurrent.py", *args)
    assert r.returncode == 0, r.output
    assert r.run["requests"] == 100 and r.run["failures"] == 0
    assert counts(r) == (expected, expected)
    assert r.run["client_connections"]["discarded"] == 0


@pytest.mark.parametrize("client", ["requests", "fasthttp"])
def test_drain_none_opens_one_connection_per_request(run_locust, client):
    # fasthttp reads a body that arrives with the headers, so it needs a body larger than its
    # 64 KiB block to stay undrained; the requests client leaves even 11 bytes unread.
    extra = ("--pool-full", "block", "--pool-size", "200") if client == "fasthttp" else ()
    r = run_locust("concurrent.py", "--drain", "none", "--client", client, *extra, "--target-body-bytes", "200000")
    assert r.returncode == 0, r.output
    assert counts(r) == (100, 100)


def test_fifty_users_pool_of_two_churns(run_locust):
    r = run_locust("concurrent.py", "-u", "50", "--requests-per-user", "100")
    assert r.returncode == 0, r.output
    opened, accepted = counts(r)
    assert opened == accepted
    assert r.run["requests"] == 5000
    assert accepted / 5000 >= 0.3
    assert r.run["client_connections"]["discarded"] == opened - 2


def test_fifty_users_pool_of_fifty_exactly_fifty(run_locust):
    r = run_locust("concurrent.py", "-u", "50", "--requests-per-user", "100", "--pool-size", "50")
    assert r.returncode == 0, r.output
    assert counts(r) == (50, 50)


def test_users_start_together_whatever_the_spawn_rate(run_locust):
    # 5 users spawned 1 per 0.1 s with a pool of 5: had the first ones started early, they would
    # have finished before the others arrived, and fewer than 5 connections would have been made.
    r = run_locust("concurrent.py", "-u", "5", "-r", "10", "--pool-size", "5", "--requests-per-user", "3")
    assert r.returncode == 0, r.output
    assert r.accepted == 5


def test_against_an_external_host_client_counts_are_exact(run_locust, target):
    before = target.stats()["connections_accepted"]
    r = run_locust("concurrent.py", "--host", target.url, "--pool-size", "10")
    assert r.returncode == 0, r.output
    assert r.run["target"]["embedded"] is False
    assert not (r.folder / "target.json").exists()
    assert r.run["client_connections"]["opened"] == 10
    assert target.stats()["connections_accepted"] - before == 10


def test_processes_workers_report_their_counts_to_the_master(run_locust):
    # Two worker processes, each with its own shared pool of 5: 10 connections in all.
    r = run_locust("concurrent.py", "--processes", "2", "--pool-size", "5")
    assert r.returncode == 0, r.output
    assert r.run["requests"] == 100
    assert counts(r) == (10, 10)
