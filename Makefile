# sertool: `make test` and `make demo` work on a fresh machine with only Python 3.11 and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sertool-installed

.PHONY: setup test test-fast test-unit wheel-check demo bench device-check lint clean

setup: $(STAMP)

# Idempotent: rebuilt only when the venv is missing or pyproject.toml changed.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Tests in tiers (tests/conftest.py applies to all; shared helpers in tests/helpers):
# tests/unit (library functions, no CLI pipeline), tests/stages (stages through the real CLI on
# synthetic data), tests/recipes (recipe runs, the README walk-through, the install),
# tests/real (the real recordings and published models), tests/cluster (DDP, multinode, Slurm).
test: setup
	$(PY) -m pytest -q

# The fast tier, for every edit: no test marked slow (recipes, training runs, anything over a
# few seconds) and none needing the real recordings: 582 tests (578 run, 4 need a GPU); 78 s on
# the idle 2-core development VM, 2026-12-04, when they were 499 (make test: all 674; 577 took
# about 16 minutes idle).
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not shared_data"

# The unit tier alone: library functions, 251 tests (213 took 34 s idle).
test-unit: setup
	$(PY) -m pytest -q tests/unit

# The built wheel, installed into a clean venv, run from outside the checkout (.ci/run runs it).
wheel-check: setup
	bash .ci/wheel_check.sh

demo: setup
	cd recipes/demo && PATH=$(CURDIR)/$(VENV)/bin:$$PATH ./run.sh

bench: setup
	$(PY) -m bench.run_all

# The prepared GPU check (bench/device_check.py): at most 8 minutes on one GPU; without one, its
# CPU-sized parts in about a minute. Writes bench/out/device_check.json and .txt.
device-check: setup
	$(PY) -m bench.device_check

lint: setup
	$(VENV)/bin/ruff check sertool tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
