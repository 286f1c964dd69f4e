# Two commands do all the set-up on a fresh machine:
#   make demo   - install, then run the whole product on loopback (`reconcile demo`; Ctrl-C stops)
#   make test   - install, then lint, type-check and run the test suite (what CI runs)
# While working, `make test-fast` runs the in-process tier only (no lint, 2.5 minutes on two CPUs).
# The interpreter .venv is made with: Debian's CPython (/usr/bin/python3, 3.11 or newer, with
# venv) where there is one, else the first python3 on PATH. Debian builds it with profile-guided
# optimisation and LTO and links it statically: it runs this project's Python 25-30 % faster
# than a CPython built without them (pyenv's default), and a site rebuild is mostly Python
# (bench/README.md, "The interpreter"). `make PYTHON=...` picks another.
SYSTEM_PYTHON := /usr/bin/python3
PYTHON ?= $(shell $(SYSTEM_PYTHON) -c 'import sys, ensurepip; sys.exit(sys.version_info < (3, 11))' \
	>/dev/null 2>&1 && echo $(SYSTEM_PYTHON) || echo python3)
VENV := .venv
BIN := $(VENV)/bin
# Named after the interpreter: a .venv made by another one is made anew.
STAMP := $(VENV)/.installed$(subst /,-,$(PYTHON))

.PHONY: demo test test-fast lint install clean system-deps nginx-deps promtool-deps browser-deps

$(STAMP): pyproject.toml
	@if [ -d $(VENV) ] && [ ! -e $(STAMP) ]; then rm -rf $(VENV); fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# nginx is the gateway data plane (reconciler/gateway/nginx.py), the demo runs one on loopback and
# its tests run a real one. Installed from Debian's package when missing (CI runs as root on
# Debian); a no-op when present; elsewhere a warning, and the nginx tests skip saying why.
nginx-deps:
	@if command -v nginx >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nginx; \
	else \
		echo "warning: nginx is missing and cannot be installed here (needs root and apt-get);" \
			"install it with: sudo apt-get install nginx" >&2; \
	fi

# promtool checks the alert rules shipped in docs/prometheus/ (tests/test_probe_metrics.py), the
# tests' only use of it. It is taken out of Debian's prometheus package into .venv/bin rather
# than the package installed: that would also enable a Prometheus server on :9090. The test
# skips, saying why, where neither is possible.
promtool-deps: $(STAMP)
	@if command -v promtool >/dev/null 2>&1 || [ -x $(BIN)/promtool ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then \
		work=$$(mktemp -d) && cd $$work && \
		{ apt-get download prometheus 2>/dev/null \
		  || { [ "$$(id -u)" = 0 ] && apt-get update >/dev/null && apt-get download prometheus; }; } && \
		dpkg-deb -x prometheus_*.deb unpacked && \
		install -m 755 unpacked/usr/bin/promtool $(CURDIR)/$(BIN)/promtool \
		|| echo "warning: promtool could not be taken from Debian's prometheus package;" \
			"its test skips" >&2; \
		rm -rf $$work; \
	else \
		echo "warning: promtool is missing (Debian's prometheus package has it); its test skips" >&2; \
	fi

system-deps: nginx-deps promtool-deps

demo: nginx-deps $(STAMP)
	$(BIN)/reconcile demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Chromium (Debian's package) for the browser test of the status site and for the agent's browser
# checks, driven by Playwright with the system binary; installed like nginx, and the browser
# tests skip saying why without it.
browser-deps:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	else \
		echo "warning: chromium is missing and cannot be installed here;" \
			"install it with: sudo apt-get install chromium" >&2; \
	fi

# Both test tiers: the in-process one (the server's parts behind httpx's ASGI transport, an
# in-memory gateway) and the end-to-end one marked `slow` (real server, agent, nginx and
# browser processes, signals, the demo, the CLI talking to a running server).
# The tests run in one process per CPU, four at most (pytest-xdist): 5 minutes on two CPUs,
# against 10 in one process. `pytest` alone still runs them in one process.
test: system-deps browser-deps lint
	$(BIN)/pytest -q --numprocesses=auto --maxprocesses=4

# The in-process tier alone: everything but the tests marked `slow`.
test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow" --numprocesses=auto --maxprocesses=4

clean:
	rm -rf $(VENV) .state .mypy_cache .ruff_cache .pytest_cache
