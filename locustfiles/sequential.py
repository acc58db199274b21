"""Sequential requests from one client: does it reuse its connection?

Reproduces the first experiment of the Go keep-alive posts: one client sends 10 requests, 1 s
apart. When it reads each body to EOF and closes it, all 10 go over 1 TCP connection. When it
leaves the body unread (``--drain none``) or closes it unread (``--drain close``), every request
opens a new connection and leaves a TIME_WAIT behind. A server that closes (``--target-mode
http10``, ``--keep-alive off``) forces a new connection per request too, with the TIME_WAIT on
the server.

    locust -f locustfiles/sequential.py --headless            # drain full: 1 connection
    locust -f locustfiles/sequential.py --headless --drain none   # 10 connections
    locust -f locustfiles/sequential.py                       # web UI on http://localhost:8089

With no ``--host`` the embedded target is started on 127.0.0.1; the run folder lands in ``runs/``.
"""

from locust import task

from keepalive_lab.users import LabUser


class SequentialUser(LabUser):
    """One client, requests one after another, body read to EOF and closed."""

    scenario = "sequential"
    requests_per_user = 10
    think_time_s = 1.0
    drain = "full"
    keep_alive = True
    pool_size = 1

    @task
    def get_root(self) -> None:
        self.fetch("/")
