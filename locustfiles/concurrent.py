"""Many goroutine-style users sharing one client: how big must the pool be?

Reproduces the concurrent experiment of the Go keep-alive posts: 10 goroutines each send 10
requests through one ``http.Client`` whose Transport keeps only 2 idle connections per host
(``MaxIdleConnsPerHost = 2``). The other connections are opened on demand and closed when they
come back to the full pool, so the run opens far more than 10 connections and piles up TIME_WAIT
on the client. A pool as large as the number of users opens exactly one connection per user.

    locust -f locustfiles/concurrent.py --headless                      # Go's default: > 10
    locust -f locustfiles/concurrent.py --headless --pool-size 10       # exactly 10
    locust -f locustfiles/concurrent.py --headless --pool-full block    # exactly 2 (MaxConnsPerHost)
    locust -f locustfiles/concurrent.py --headless --pool-scope user    # one pool each: 10
    locust -f locustfiles/concurrent.py --headless -u 50 --requests-per-user 100
    locust -f locustfiles/concurrent.py --headless --client fasthttp --pool-full block

Users start together: each waits until the last one is spawned, like goroutines launched in one
loop. Without ``-u`` it runs 10 users.
"""

from locust import task

from keepalive_lab.users import LabUser


class ConcurrentUser(LabUser):
    """One of N goroutines sharing Go's default client: a shared pool of 2, extras discarded."""

    scenario = "concurrent"
    default_users = 10
    requests_per_user = 10
    start_together = True
    pool_scope = "shared"
    pool_size = 2
    pool_full = "discard"
    drain = "full"

    @task
    def get_root(self) -> None:
        self.fetch("/")
