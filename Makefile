# keepalive-lab: every target bootstraps .venv by itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install tools test demo perf lab report bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install tools
	$(PY) -m pytest -q tests

# Real port exhaustion in private network namespaces (root), projection against observation.
lab: install
	$(PY) -m keepalive_lab.matrix matrices/lab.toml --check

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

# Debian tools the benchmarks and tests use (wrk, nginx, headless chromium); installed only when missing and root.
tools:
	@missing=""; command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || missing="$$missing nginx-light"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing$$missing"; \
	    (apt-get update -qq && apt-get install -y -qq $$missing >/dev/null) || \
	    echo "apt-get could not install$$missing: the tests and benchmarks that need it say so"; \
	  else echo "not root: cannot install$$missing (benchmarks that need it say so)"; fi; fi

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) runs reports
