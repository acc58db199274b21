"""Servers that close: even a correct client cannot reuse their connections.

Reproduces the seed's third lesson. ``python3 -m http.server`` speaks HTTP/1.0 and closes every
connection; nginx with ``keepalive_timeout 0`` does the same. Each user drains every body, as a
correct client should, and still opens one connection per request; the TIME_WAIT then lands on
the server, which closed first. nginx with keep-alive on gets one connection per user.

    locust -f locustfiles/server_close.py --headless                          # embedded target, HTTP/1.0
    locust -f locustfiles/server_close.py --headless --peer http.server       # python3 -m http.server
    locust -f locustfiles/server_close.py --headless --peer nginx-close       # keepalive_timeout 0
    locust -f locustfiles/server_close.py --headless --peer nginx-keepalive   # one connection per user
    locust -f locustfiles/server_close.py --headless --target-mode close-after:3
    # stale keep-alive: the server drops idle connections before the client's next request
    locust -f locustfiles/server_close.py --headless --target-mode idle-timeout:0.2 --think-time 0.4

The suite starts the peer on 127.0.0.1 (inside the run's namespace when isolated) and stops it at
exit; with ``--host`` the same users load any server, counted at the client's pool.
"""

from locust import task

from keepalive_lab.users import LabUser


class ServerCloseUser(LabUser):
    """A client that does everything right: its own pool, every body read to EOF."""

    scenario = "server-close"
    default_users = 10
    requests_per_user = 10
    think_time_s = 0.05
    pool_scope = "user"
    pool_size = 1
    drain = "full"
    target_mode = "http10"

    @task
    def get_root(self) -> None:
        self.fetch("/")
