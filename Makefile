# Two commands do all the set-up on a fresh machine:
#   make demo   - install, then run the whole product on loopback (`reconcile demo`; Ctrl-C stops)
#   make test   - install, then lint, type-check and run the test suite (what CI runs)
# While working, `make test-fast` runs the in-process tier only (no lint, 2.5 minutes on two CPUs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint install clean system-deps browser-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# nginx is the gateway data plane (reconciler/gateway/nginx.py) and its tests run a real one.
# Installed from Debian's package when missing (CI runs as root on Debian); a no-op when
# present; elsewhere a warning, and the nginx tests skip saying why.
# promtool (Debian's prometheus package, without its recommends) checks the alert rules
# shipped in docs/prometheus/ (tests/test_probe_metrics.py).
system-deps:
	@if command -v nginx >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nginx; \
	else \
		echo "warning: nginx is missing and cannot be installed here (needs root and apt-get);" \
			"install it with: sudo apt-get install nginx" >&2; \
	fi
	@if command -v promtool >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		{ DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
		  || { apt-get update && DEBIAN_FRONTEND=noninteractive \
		       apt-get install -y --no-install-recommends prometheus; } \
		  || echo "warning: promtool could not be installed; its test skips" >&2; }; \
	else \
		echo "warning: promtool is missing (sudo apt-get install prometheus); its test skips" >&2; \
	fi

demo: system-deps $(STAMP)
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
