"""A non-editable install runs a scenario: nothing in the suite depends on the checkout's layout.

The package is built into a wheel and installed into a fresh virtual environment (its
dependencies come from the test's own environment through a .pth file, so no download is
needed but the build backend). From the checkout, that environment's ``locust`` then runs a
locustfile and writes its run folder, with the installed package, not the checkout's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from conftest import ROOT

from keepalive_lab.peers import nginx_path

LAUNCHER = "#!{python}\nimport sys\nfrom locust.main import main\nsys.exit(main())\n"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv with keepalive-lab installed from a wheel; returns the venv's folder."""
    tmp = tmp_path_factory.mktemp("install")
    wheels = tmp / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), str(ROOT)],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert build.returncode == 0, build.stderr
    env = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.run([env / "bin" / "python", "-c", purelib], capture_output=True, text=True,
                               check=True).stdout.strip())  # fmt: skip
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(wheels.glob("keepalive_lab-*.whl"))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert install.returncode == 0, install.stderr
    locust = env / "bin" / "locust"
    locust.write_text(LAUNCHER.format(python=env / "bin" / "python"))
    locust.chmod(0o755)
    return env


def test_the_installed_package_is_used(installed, tmp_path):
    where = subprocess.run([installed / "bin" / "python", "-c", "import keepalive_lab; print(keepalive_lab.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, check=True).stdout  # fmt: skip
    assert where.startswith(str(installed)), where


@pytest.mark.parametrize(
    "args, connections",
    [((), 1), (("--peer", "nginx-keepalive"), 1)],
    ids=["embedded-target", "nginx-peer"],
)
def test_a_scenario_runs_from_the_checkout(installed, tmp_path, args, connections):
    if args and nginx_path() is None:
        pytest.skip("nginx is not installed: `make tools` installs Debian's nginx-light as root")
    run_dir = tmp_path / "runs"
    proc = subprocess.run([installed / "bin" / "locust", "-f", "locustfiles/sequential.py", "--headless",
                           "--think-time", "0.02", "--run-dir", str(run_dir), *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run = json.loads(next(run_dir.glob("*/run.json")).read_text())
    assert run["status"] == "completed" and run["requests"] == 10
    assert run["client_connections"]["opened"] == connections
