# sertool: `make test` and `make demo` work on a fresh machine with only Python 3.11 and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sertool-installed

.PHONY: setup test wheel-check demo bench lint clean

setup: $(STAMP)

# Idempotent: rebuilt only when the venv is missing or pyproject.toml changed.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

# The built wheel, installed into a clean venv, run from outside the checkout (.ci/run runs it).
wheel-check: setup
	bash .ci/wheel_check.sh

demo: setup
	cd recipes/demo && PATH=$(CURDIR)/$(VENV)/bin:$$PATH ./run.sh

bench: setup
	$(PY) -m bench.run_all

lint: setup
	$(VENV)/bin/ruff check sertool tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
