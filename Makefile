# The two set-up commands: `make serve` and `make test`. Both create .venv when needed.
# `make serve` installs the runtime lock only (requirements.lock, as the Dockerfile does);
# `make test` and the other development targets add the development lock on top.
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
BIN := $(VENV)/bin
# Stamps: what is installed in the venv. Each is rebuilt when its inputs change; the dev one
# also when the runtime one is, so a runtime-only venv is upgraded by the first `make test`.
CREATED := $(VENV)/.created
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed-dev
# Every change to the venv happens while holding one exclusive lock, and a nested make decides
# only then what is still out of date, so `make serve` and `make test` can start at the same
# moment. flock(1) from util-linux; where it is missing, the same flock(2) call from Python.
LOCKFILE := $(VENV)/.lock
LOCK := $(if $(shell command -v flock),flock $(LOCKFILE),$(PYTHON) -c 'import fcntl, subprocess, sys; f = open(sys.argv[1], "a"); fcntl.flock(f, fcntl.LOCK_EX); sys.exit(subprocess.call(sys.argv[2:]))' $(LOCKFILE))

.PHONY: serve test lint typecheck pytest train evaluate soak docker-test prometheus-test \
	browser-test bench bench-peers lock \
	audit clean \
	venv install-runtime install-dev locked-venv locked-runtime locked-dev

venv:
	@mkdir -p $(VENV) && $(LOCK) $(MAKE) --no-print-directory locked-venv

install-runtime:
	@mkdir -p $(VENV) && $(LOCK) $(MAKE) --no-print-directory locked-runtime

install-dev:
	@mkdir -p $(VENV) && $(LOCK) $(MAKE) --no-print-directory locked-dev

# Only run with the lock held (by the three targets above).
locked-venv: $(CREATED) ; @:
locked-runtime: $(RUNTIME_STAMP) ; @:
locked-dev: $(DEV_STAMP) ; @:

# A new venv, or the repair of one whose creation was interrupted (no pip in it yet).
$(CREATED):
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	touch $@

# Exactly the locked, hash-checked packages the server runs on. The server itself is not
# installed: `python -m service` runs it from this directory.
$(RUNTIME_STAMP): requirements.lock | $(CREATED)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	touch $@

# requirements-dev.lock pins the runtime packages to the same versions and adds the training
# and test tools; then the client distribution (digitcode/, the `digitcode` command), editable.
$(DEV_STAMP): pyproject.toml requirements-dev.lock $(RUNTIME_STAMP)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

serve: install-runtime
	DIGITCODE_HOST=$(HOST) DIGITCODE_PORT=$(PORT) $(BIN)/python -m service

test: lint typecheck pytest

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-dev
	$(BIN)/mypy service digitcode training tests scripts benchmarks

pytest: install-dev
	$(BIN)/python -m pytest -q

# Rebuild the committed default model from the UCI training file.
train: install-dev
	$(BIN)/python -m training.train --train data/optdigits.tra --out models/default

# The committed evaluation report (docs/evaluation) for the committed default model.
evaluate: install-dev
	$(BIN)/python -m training.evaluate --model models/default \
		--train data/optdigits.tra --test data/optdigits.tes --out docs/evaluation

# Re-resolve the lock files after changing dependencies in pyproject.toml.
lock: venv
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile --group pyproject.toml:serve --generate-hashes --python-version 3.11 \
		--universal -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --group pyproject.toml:dev --generate-hashes \
		--python-version 3.11 --universal -o requirements-dev.lock

# Known vulnerabilities in the locked service dependencies. Needs the vulnerability database
# (internet), so it is not part of CI here.
audit: venv
	$(BIN)/python -m pip install --quiet pip-audit
	$(BIN)/pip-audit --require-hashes --disable-pip -r requirements.lock

# 60 s of mixed valid/invalid traffic against a real server: no unexpected status, no
# connection error, RSS growth under 10 %.
soak: install-dev
	$(BIN)/python scripts/soak.py --duration 60

docker-test: install-dev
	bash scripts/docker-test.sh

# The Prometheus alerting rules (deploy/prometheus): promtool's checks and unit tests, and a real
# Prometheus server scraping a running service until the alerts fire. Debian's prometheus package
# (server and promtool) is installed with apt-get when promtool is missing.
prometheus-test: install-dev
	@command -v promtool >/dev/null || apt-get install -y --no-install-recommends prometheus \
		|| (apt-get update && apt-get install -y --no-install-recommends prometheus)
	$(BIN)/python -m pytest -q -m prometheus tests/deploy/test_prometheus.py

# The explorer page in a real browser: Debian's Chromium (installed with apt-get when missing),
# driven by Playwright. Screenshots of each state go to build/explorer-screenshots/.
browser-test: install-dev
	@command -v chromium >/dev/null || apt-get install -y --no-install-recommends chromium \
		|| (apt-get update && apt-get install -y --no-install-recommends chromium)
	$(BIN)/python -m pytest -q -m browser tests/service/test_explorer.py

# Throughput and latency against a no-op and a straightforward FastAPI app, driven by wrk
# (installed with apt-get if missing), then the cost curves; about 20 minutes. Not part of
# `make test`. BENCH_ARGS=--publish writes docs/performance/ and the README's tables.
# BENCH_ARGS passes options, e.g. make bench BENCH_ARGS="--duration 5 --strict".
bench: install-dev
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# The same workloads against MLflow `models serve`, a BentoML service and a LitServe API serving
# the same scikit-learn autoencoder, each installed into its own pinned venv under build/peers/
# (from PyPI; reused while benchmarks/peers/requirements-*.txt are unchanged), one worker each,
# answers checked against scikit-learn before timing; about 12 minutes with the installs. Writes
# docs/performance/peers.json. Not part of `make test` nor CI.
# PEERS_ARGS passes options, e.g. make bench-peers PEERS_ARGS="--rounds 1 --readme README.md".
bench-peers: install-dev
	$(BIN)/python -m benchmarks.peers $(PEERS_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
