"""keepalive-lab: Locust scenarios that measure HTTP connection reuse and ephemeral-port use."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys


def _restore_stdlib_concurrent() -> None:
    """Put the standard library's ``concurrent`` package back in ``sys.modules``.

    Locust imports a locustfile under its file name, so ``locustfiles/concurrent.py`` replaces
    ``sys.modules["concurrent"]`` while it runs; asyncio's ``concurrent.futures`` then fails.
    The locustfile itself is unaffected: Locust keeps its own reference to the module.
    While any other locustfile loads, its folder comes first on ``sys.path``; if nothing has
    imported ``concurrent`` yet (Locust >= 2.43 with gevent < 26.8), it would be found there too,
    so the package is put in place before that can happen.
    """
    current = sys.modules.get("concurrent")
    if current is not None and hasattr(current, "__path__"):
        return
    spec = importlib.machinery.PathFinder.find_spec("concurrent", [os.path.dirname(os.__file__)])
    if spec is None or spec.loader is None:
        return
    package = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(package)
    futures = sys.modules.get("concurrent.futures")
    if futures is not None:
        package.futures = futures  # type: ignore[attr-defined]
    sys.modules["concurrent"] = package


_restore_stdlib_concurrent()
