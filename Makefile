# keepalive-lab: every target bootstraps .venv by itself, from the lock file.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements.lock
# The lowest versions pyproject.toml allows, and the fast subset of the tests that checks them.
OLDEST := .venv-oldest
OLDEST_LOCK := requirements-oldest.lock
OLDEST_TESTS := tests/test_sequential.py tests/test_concurrent.py tests/test_sidecar.py tests/test_private_names.py \
	tests/test_measure.py tests/test_statuses.py
COMPILE = $(VENV)/bin/uv pip compile pyproject.toml --quiet --extra dev --generate-hashes --python-version 3.11 \
	--python-platform linux --no-header

.PHONY: install lock tools test test-oldest demo perf lab cluster report bench lint clean

install: $(STAMP)

# Exactly the locked versions (hashes checked), then the project itself, editable.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Refresh both lock files from pyproject.toml: the newest versions allowed, and the lowest.
lock: install
	$(COMPILE) --upgrade -o $(LOCK)
	$(COMPILE) --resolution lowest-direct -o $(OLDEST_LOCK)

test: install tools
	$(PY) -m pytest -q tests

# The lowest supported versions in a second venv, on the tests that touch the libraries' internals.
test-oldest: tools $(OLDEST)/.installed
	$(OLDEST)/bin/python -m pytest -q -p no:cacheprovider $(OLDEST_TESTS)

$(OLDEST)/.installed: pyproject.toml $(OLDEST_LOCK)
	test -x $(OLDEST)/bin/python || $(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/python -m pip install --quiet --require-hashes --no-deps -r $(OLDEST_LOCK)
	$(OLDEST)/bin/python -m pip install --quiet --no-deps -e .
	$(OLDEST)/bin/python -m pip check
	touch $@

# Real port exhaustion in private network namespaces (root), projection against observation.
lab: install
	$(PY) -m keepalive_lab.matrix matrices/lab.toml --check

# A master and workers on simulated client hosts (network namespaces on a bridge) against nginx,
# one host's port range narrowed: the report names the host that runs out (root).
cluster: install tools
	$(PY) -m keepalive_lab.cluster

report: install
	$(PY) -m analysis report

# The seed experiments headless (isolated when root), then the report.
demo: install tools
	$(PY) -m keepalive_lab.matrix matrices/seed.toml

# The same, gated: exits non-zero when a seed result fails to reproduce.
perf: install tools
	$(PY) -m keepalive_lab.matrix matrices/seed.toml --check --junit reports/perf-junit.xml

bench: install tools
	$(PY) -m benchmarks

# Debian tools the benchmarks and tests use (wrk, nginx, headless chromium, ab); installed only when missing and root.
tools:
	@missing=""; command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || missing="$$missing nginx-light"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v ab >/dev/null || missing="$$missing apache2-utils"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing$$missing"; \
	    (apt-get update -qq && apt-get install -y -qq $$missing >/dev/null) || \
	    echo "apt-get could not install$$missing: the tests and benchmarks that need it say so"; \
	  else echo "not root: cannot install$$missing (benchmarks that need it say so)"; fi; fi

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) $(OLDEST) runs reports
