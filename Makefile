# Front door of the project. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help install demo test test-unit test-fast bench bench-quick bench-table lint format services-up services-down services-status clean labelstudio-up labelstudio-down

help:
	@echo "make demo   - install, start local services, run the active-learning demo, print URLs"
	@echo "make test   - the whole test suite against real services"
	@echo "make test-fast - the unit tier without slow tests (< 1 min, no services)"
	@echo "make bench  - all benchmarks (results in bench/results/)"
	@echo "make bench-table - rewrite the benchmark table in README.md from bench/results/*.json"
	@echo "make lint   - ruff lint and format check"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --progress-bar off -e '.[dev]' 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -c "import torch, torchvision, open_clip, django, rest_framework, celery, dlib" 
	touch $(STAMP)

install: $(STAMP)

services-up: install
	deploy/local/services.sh up

services-down:
	deploy/local/services.sh down

services-status:
	deploy/local/services.sh status

demo: install
	deploy/local/demo.sh

test: install
	deploy/local/services.sh up
	$(PY) -m pytest -q

test-unit: install
	$(PY) -m pytest -q -m unit

# Under a minute, no services started: pure logic, small models, no training runs or service processes.
test-fast: install
	$(PY) -m pytest -q -p no:cacheprovider -m "unit and not slow and not integration and not labelstudio and not e2e" tests/unit

bench: install
	$(PY) -m bench all

bench-quick: install
	$(PY) -m bench all --quick

# The README's benchmark table, generated from the committed results (standard library only: no install needed).
bench-table:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) -m bench table --write

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	deploy/local/services.sh down || true
	rm -rf var

# Label Studio alone (its own venv .venv-ls is created on first use; state under var/labelstudio).
labelstudio-up:
	deploy/labelstudio/ls.sh start

labelstudio-down:
	deploy/labelstudio/ls.sh stop
