"""Plain Locust HttpUser, no suite code: the baseline the instrumented users are measured against."""

from locust import HttpUser, constant, task


class PlainHttpUser(HttpUser):
    wait_time = constant(0)

    @task
    def get_root(self) -> None:
        self.client.get("/")
