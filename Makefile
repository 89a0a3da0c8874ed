# Meridian: build, run and test targets.
#
#   make run  [ARGS="--config meridian.toml"]   start the relay
#   make test [PYTEST_ARGS="-k whip -x"]        lint, then the test suite
#   make lint                                   ruff check, ruff format --check, mypy
#   make bench [ARGS=...]                       benchmarks (python -m bench)
#   make cluster [EDGES=2] [ARGS=...]           an origin and EDGES edges with a local Redis
#   make world-map                              regenerate the world map file from npm (web/)
#   make clean                                  remove the venv and caches
#
# The virtual environment lives in .venv. Requirements are reinstalled only when
# requirements*.txt change (stamp files inside .venv record the last install).

SHELL := /bin/bash
.DEFAULT_GOAL := test

ifndef PYTHON
PYTHON := $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
endif
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.stamp-requirements
DEV_STAMP := $(VENV)/.stamp-requirements-dev
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check --progress-bar off

ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test lint bench clean venv deps dev-deps system-deps

# Debian packages the tests need (prometheus: a real Prometheus server scrapes Meridian).
# Extend the list, do not replace it: APT_PACKAGES += another-package
APT_PACKAGES := prometheus
# Cluster tests and `make cluster`: a real Redis server holds the directory of nodes.
APT_PACKAGES += redis-server
# Browser tests: Debian's Chromium, driven by Playwright (never `playwright install`), and
# fonts for the pages, colour emoji for the studios' flags.
APT_PACKAGES += chromium chromium-driver fonts-liberation fonts-noto-color-emoji
# Fault tests: network namespaces, veth/TUN links and tc netem for a studio on a lossy link.
APT_PACKAGES += iproute2

venv: $(BIN)/python
deps: $(RUNTIME_STAMP)
dev-deps: $(DEV_STAMP)

# Create the venv. Debian's own python3 ships without ensurepip (package python3-venv);
# as root with apt-get at hand, install it, otherwise say what is missing.
$(BIN)/python:
	@if [ -z "$(PYTHON)" ]; then echo "error: no python3.11 or python3 on PATH" >&2; exit 1; fi
	@if ! $(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    ver=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	    echo "installing python$$ver-venv with apt-get"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && \
	    apt-get install -y -qq --no-install-recommends "python$$ver-venv" >/dev/null; \
	  else \
	    echo "error: $(PYTHON) cannot create a venv; install python3-venv" >&2; exit 1; \
	  fi; \
	fi
	$(PYTHON) -m venv $(VENV)

$(RUNTIME_STAMP): requirements.txt | $(BIN)/python
	$(PIP_INSTALL) -r requirements.txt
	@touch $@

$(DEV_STAMP): requirements-dev.txt $(RUNTIME_STAMP)
	$(PIP_INSTALL) -r requirements-dev.txt
	@touch $@

run: $(RUNTIME_STAMP)
	$(BIN)/python run.py $(ARGS)

# One machine, several processes: Redis, an origin on :8080, edges on :8081... (cluster/local.py).
EDGES ?= 2
.PHONY: cluster
cluster: $(RUNTIME_STAMP)
	@command -v redis-server >/dev/null || { echo "error: needs redis-server (apt-get install redis-server)" >&2; exit 1; }
	$(BIN)/python -m cluster.local --edges $(EDGES) $(ARGS)

# Installs the missing APT_PACKAGES as root with apt-get; otherwise names them and stops.
system-deps:
	@missing=""; \
	for package in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$package" 2>/dev/null | grep -q "install ok installed" \
	    || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing with apt-get"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && \
	    apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "error: the tests need these Debian packages:$$missing" >&2; \
	    echo "error: install them first: sudo apt-get install$$missing" >&2; \
	    exit 1; \
	  fi; \
	fi

test: $(DEV_STAMP) system-deps
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The audience page's world map: regenerate server/static/world-110m.json (committed) from
# the npm packages pinned in web/package-lock.json. Only needed when those pins change.
.PHONY: world-map
world-map:
	cd web && npm ci --no-audit --no-fund && node build-world-map.mjs

bench: $(DEV_STAMP)
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
