"""Client-side port exhaustion: connections opened faster than TIME_WAIT gives ports back.

Every connection the client closes first holds its ephemeral port in TIME_WAIT for 60 s. Opened
faster than range / 60 s (about 470 a second for the default 28,232 ports), they run the range
out, and connect() fails with errno 99, "Cannot assign requested address". Run it in the lab, a
private network namespace with a narrow range, to see that in seconds without touching the host:

    python -m keepalive_lab.lab --port-range 40000-40499 -- locust -f locustfiles/exhaustion.py --headless
    # Go's default client under load: a shared pool of 2, extras discarded
    python -m keepalive_lab.lab -- locust -f locustfiles/exhaustion.py --headless \\
        --client requests --drain full --pool-scope shared --pool-size 2 --pool-full discard -u 50
    # the control: a tuned pool, one connection per user, no errno 99
    python -m keepalive_lab.lab -- locust -f locustfiles/exhaustion.py --headless --drain full

``make lab`` runs these and reports projected against observed time to exhaustion.
"""

from locust import task

from keepalive_lab.users import LabUser


class ChurnUser(LabUser):
    """No reuse: each response's connection is closed by the client (fasthttp, for the rate)."""

    scenario = "exhaustion"
    default_users = 20
    start_together = True
    requests_per_user = 150
    client_type = "fasthttp"
    pool_scope = "user"
    pool_size = 1
    pool_full = "block"
    drain = "close"
    sample_interval_s = 0.05

    @task
    def get_root(self) -> None:
        self.fetch("/")
