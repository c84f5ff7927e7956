# cordee: set-up is two commands on a fresh Debian machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# CPU installs pin torch: a range would pull a multi-GB CUDA build (pyproject keeps a range).
TORCH_CPU ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install sysdeps test lint demo bench render image hooks-install clean fuzz

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

# make render [IMAGE=name]: render one spec (or all) into build/NAME/ without building
render: $(STAMP)
	$(VENV)/bin/cordee image render $(if $(IMAGE),$(IMAGE),--all)

# make image IMAGE=name [FORCE=1]: spec -> build/NAME/ -> podman image -> .sqsh -> EDF in $$EDF_PATH
image: install
	@test -n "$(IMAGE)" || { echo "make image: set IMAGE=name (cordee image list)" >&2; exit 2; }
	$(VENV)/bin/cordee image build $(IMAGE) $(if $(FORCE),--force)

# Enroot hooks for the current user (plain Enroot/Pyxis sites without CE); see hooks/README.md
hooks-install:
	bash hooks/install.sh

# make fuzz: the CLI contract under hostile input, 12x the examples of `make test` (tests/fuzz/)
fuzz: $(STAMP)
	CORDEE_FUZZ=long $(VENV)/bin/pytest -q tests/fuzz

bench: install
	$(PY) tests/benchmarks/run_all.py

clean:
	rm -rf $(VENV) build .pytest_cache
