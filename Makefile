# The two set-up commands: `make serve` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
BIN := $(VENV)/bin
# Re-install when the project definition changes.
STAMP := $(VENV)/.installed

.PHONY: serve test lint typecheck pytest train evaluate soak docker-test bench lock audit clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Exactly the locked, hash-checked packages, then the project itself without dependencies.
$(STAMP): pyproject.toml requirements-dev.lock | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

serve: $(STAMP)
	DIGITCODE_HOST=$(HOST) DIGITCODE_PORT=$(PORT) $(BIN)/python -m service

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy service client training tests scripts benchmarks

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

# Rebuild the committed default model from the UCI training file.
train: $(STAMP)
	$(BIN)/python -m training.train --train data/optdigits.tra --out models/default

# The committed evaluation report (docs/evaluation) for the committed default model.
evaluate: $(STAMP)
	$(BIN)/python -m training.evaluate --model models/default \
		--train data/optdigits.tra --test data/optdigits.tes --out docs/evaluation

# Re-resolve the lock files after changing dependencies in pyproject.toml.
lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --generate-hashes --python-version 3.11 --universal \
		-o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 \
		--universal -o requirements-dev.lock

# Known vulnerabilities in the locked service dependencies. Needs the vulnerability database
# (internet), so it is not part of CI here.
audit: | $(BIN)/python
	$(BIN)/python -m pip install --quiet pip-audit
	$(BIN)/pip-audit --require-hashes --disable-pip -r requirements.lock

# 60 s of mixed valid/invalid traffic against a real server: no unexpected status, no
# connection error, RSS growth under 10 %.
soak: $(STAMP)
	$(BIN)/python scripts/soak.py --duration 60

docker-test: $(STAMP)
	bash scripts/docker-test.sh

# Throughput and latency against a no-op and a straightforward FastAPI app, driven by wrk
# (installed with apt-get if missing); about 8 minutes. Not part of `make test`.
# BENCH_ARGS passes options, e.g. make bench BENCH_ARGS="--duration 5 --strict".
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
