# The two commands of the README:  `make run`  and  `make test`.
# Each creates .venv on first use (and again when pyproject.toml changes).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Where Ray spills results when the object store is full (the `serve run` local cluster).
SPILL_DIR ?= /tmp/raytask-spill
# Ray Serve's HAProxy ingress (about 2x the end-to-end rate of Serve's own proxy, measured in
# benchmarks/haproxy.py): `make run HAPROXY=0` for Serve's proxy.
HAPROXY ?= 1

# One auth mode for every Ray process we start (new clusters default to token auth).
export RAY_AUTH_MODE ?= disabled

# `pip install raytask` without extras (HTTP clients, no Ray), in a virtualenv of its own:
# a test runs the seed's snippets from it against a running app.
CLIENT_VENV ?= .venv-client
export RAYTASK_CLIENT_PYTHON := $(CURDIR)/$(CLIENT_VENV)/bin/python

BENTO_VENV ?= .venv-bentoml
# The real BentoML client, in a virtualenv of its own (its pins must not move Ray's):
# the compatibility test drives a raytask app with it.
BENTOML_VERSION ?= 1.4.40
export RAYTASK_BENTOML_PYTHON := $(CURDIR)/$(BENTO_VENV)/bin/python

.PHONY: install run test test-fast bench lint format clean redis-server chromium

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "raytask needs Python >= 3.11, found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[serve,redis,test,models]"
	$(PY) -m pip check
	touch $@

$(CLIENT_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(CLIENT_VENV)
	$(CLIENT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CLIENT_VENV)/bin/python -m pip install --quiet -e .
	$(CLIENT_VENV)/bin/python -m pip check
	touch $@

$(BENTO_VENV)/.installed:
	$(PYTHON) -m venv $(BENTO_VENV)
	$(BENTO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENTO_VENV)/bin/python -m pip install --quiet "bentoml==$(BENTOML_VERSION)"
	touch $@

install: $(VENV)/.installed

## Serve the demo task app on a local Ray (CPU): http://127.0.0.1:8000
# `serve run` under raytask's launcher, which turns SIGTERM into serve run's clean Ctrl-C.
run: install
	mkdir -p $(SPILL_DIR)
	RAY_object_spilling_directory='$(SPILL_DIR)' RAY_SERVE_ENABLE_HA_PROXY='$(HAPROXY)' \
		exec $(PY) -m raytask.server.launcher configs/app.yaml

## Lint, then every test tier (unit, HTTP in process, end to end on a real local Ray)
test: install lint $(BENTO_VENV)/.installed $(CLIENT_VENV)/.installed redis-server chromium
	$(PY) -m pytest

# The Redis journal's tests start their own redis-server (Debian's package). Install it if
# this machine can (root and apt-get); otherwise those tests skip and say why (under CI=true
# both this target and those tests fail instead).
redis-server:
	@command -v redis-server >/dev/null \
	|| { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	     && { DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null \
	          || { apt-get update -q >/dev/null \
	               && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null; }; }; } \
	|| { echo "raytask: redis-server is missing and cannot be installed here (needs root and apt-get): the Redis journal tests will skip"; \
	     [ "$$CI" != true ] || { echo "raytask: CI=true: a missing redis-server fails the run"; exit 1; }; }

# The dashboard's browser test drives Debian's chromium (Playwright's own browser builds are
# not downloaded). Install it if this machine can; otherwise that test skips and says why
# (under CI=true it fails).
chromium:
	@command -v chromium >/dev/null \
	|| { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	     && { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
	          || { apt-get update -q >/dev/null \
	               && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; }; } \
	|| { echo "raytask: chromium is missing and cannot be installed here (needs root and apt-get): the dashboard browser test will skip"; \
	     [ "$$CI" != true ] || { echo "raytask: CI=true: a missing chromium fails the run"; exit 1; }; }

## Unit and HTTP tiers only (about two minutes, no Ray cluster; BentoML's client and
## redis-server take part, as in `make test`)
test-fast: install $(BENTO_VENV)/.installed redis-server
	$(PY) -m pytest tests/unit tests/http

## raytask vs BentoML tasks vs Ray Serve's HTTP floor, side by side (by hand; ~20 min)
bench: install $(BENTO_VENV)/.installed redis-server
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/run.py $(BENCH_ARGS)
	$(PY) -m benchmarks.dispatch
	$(PY) -m benchmarks.celery_async
	$(PY) -m benchmarks.embeddings_dispatch

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) $(BENTO_VENV) $(CLIENT_VENV) .pytest_cache .ruff_cache *.egg-info
