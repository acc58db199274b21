"""Every private or undocumented name the suite takes from Locust, urllib3 and geventhttpclient
still exists and still works with the installed versions. A failure names the installed version
and the one the name was taken from."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from keepalive_lab.clients import gevent_pool, urllib3_pool

HERE = Path(__file__).resolve().parent
LOCUST_FUNCTIONS = ("worker_ids", "stop_worker_users", "send_stats_now", "target_user_count", "greenlet_crashed",
                    "html_report", "stats_csv_files", "StatsHistory", "answering_worker_ids", "worker_user_counts",
                    "before_master_start")  # fmt: skip
TAKEN_FROM_LOCUST = "2.47.0"  # keepalive_lab.locust_compat.TAKEN_FROM (not imported: locust patches gevent)


@pytest.fixture(scope="module")
def locust_probe() -> dict[str, str]:
    proc = subprocess.run([sys.executable, str(HERE / "locust_probe.py")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("function", LOCUST_FUNCTIONS)
def test_locust_compat_function_works(locust_probe, function):
    result = locust_probe.get(function, "not checked")
    assert result == "ok", (
        f"keepalive_lab.locust_compat.{function} no longer works with Locust {metadata.version('locust')} "
        f"(written against Locust {TAKEN_FROM_LOCUST}): {result}"
    )


def test_every_locust_compat_function_is_checked():
    text = (HERE.parent / "keepalive_lab" / "locust_compat.py").read_text()
    defined = [line for line in text.splitlines() if line.startswith(("def ", "class "))]
    public = {line.split("(")[0].split()[-1].rstrip(":") for line in defined}
    assert public - {"csv_text"} == set(LOCUST_FUNCTIONS)


def _resolve(module: str, dotted: str) -> object:
    obj: object = importlib.import_module(module)
    for part in dotted.split("."):
        if part.endswith("()"):
            obj = obj.__dict__[part[:-2]]("127.0.0.1", 80)  # type: ignore[index,operator]  (an instance)
        else:
            obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize(
    "library, owner, module, name",
    [("urllib3", urllib3_pool, m, n) for m, n in urllib3_pool.PRIVATE_NAMES]
    + [("geventhttpclient", gevent_pool, m, n) for m, n in gevent_pool.PRIVATE_NAMES],
)
def test_client_private_names_exist(library, owner, module, name):
    try:
        _resolve(module, name)
    except (AttributeError, KeyError) as e:
        pytest.fail(
            f"{module}.{name} is gone in {library} {metadata.version(library)} "
            f"({owner.__name__} was written against {library} {owner.TAKEN_FROM}): {e}"
        )
