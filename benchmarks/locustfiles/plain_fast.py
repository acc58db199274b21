"""Plain Locust FastHttpUser, no suite code: the fasthttp baseline."""

from locust import FastHttpUser, constant, task


class PlainFastUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def get_root(self) -> None:
        self.client.get("/")
