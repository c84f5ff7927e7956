# cordee: set-up is two commands on a fresh Debian machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# CPU installs pin torch: a range would pull a multi-GB CUDA build (pyproject keeps a range).
TORCH_CPU ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install sysdeps test lint demo bench clean

sysdeps:
	@bash scripts/install-system-deps.sh

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install $(TORCH_CPU)
	$(PIP) install -e '.[dev]'
	touch $(STAMP)

install: sysdeps $(STAMP)

test: install
	$(VENV)/bin/pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

demo: install
	$(PY) tests/demo.py

bench: install
	$(PY) tests/benchmarks/run_all.py

clean:
	rm -rf $(VENV) build .pytest_cache
