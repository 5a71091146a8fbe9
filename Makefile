# The two set-up commands: `make serve` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
BIN := $(VENV)/bin
# Re-install when the project definition changes.
STAMP := $(VENV)/.installed

.PHONY: serve test lint typecheck pytest train docker-test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

serve: $(STAMP)
	DIGITCODE_HOST=$(HOST) DIGITCODE_PORT=$(PORT) $(BIN)/python -m service

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy service client training tests benchmarks

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

# Rebuild the committed default model from the UCI training file.
train: $(STAMP)
	$(BIN)/python -m training.train --train ../shared/data/optdigits.tra --out models/default

docker-test: $(STAMP)
	bash scripts/docker-test.sh

# Throughput and latency against a no-op and a straightforward FastAPI app, driven by wrk
# (installed with apt-get if missing); about 2 minutes. Not part of `make test`.
# BENCH_ARGS passes options, e.g. make bench BENCH_ARGS="--duration 5 --strict".
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
