# colorgan: `make train` trains the quickstart on the photos bundled with scikit-image/scikit-learn;
# `make test` runs the test suite and `make lint` the formatter and linter checks; `make serve` starts
# the colorize page on WORKDIR's run. Each creates .venv and installs what it needs first: train the
# runtime only, test and lint add the `test` extra (torch, Playwright, onnxruntime, ruff, ...), serve
# the `serve` extra (Gradio).
PYTHON ?= python3
VENV ?= .venv
WORKDIR ?= workdirs/quickstart
PYTEST_ARGS ?=

# One stamp per set of extras, touched once pip has installed that set: pip runs again only when
# pyproject.toml or requirements.lock is newer than the stamp (a rerun takes no pip time).
EXTRAS_runtime :=
EXTRAS_test := [test]
EXTRAS_serve := [serve]
STAMP = $(VENV)/.installed-$(1)

.PHONY: install train test lint format serve clean

install: $(call STAMP,runtime)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# The venv is order-only: creating it must not make every stamp look stale.
$(VENV)/.installed-%: pyproject.toml requirements.lock | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet --constraint requirements.lock --editable '.$(EXTRAS_$*)'
	touch $@

train: $(call STAMP,runtime)
	$(VENV)/bin/python -m colorgan.main --config=configs/quickstart.py --workdir=$(WORKDIR)

# One worker per core (at most 4: each holds JAX, TensorFlow and torch), whole files per worker so a
# file's fixtures are built once, the slowest files first (tests/conftest.py orders them).
test: $(call STAMP,test)
	$(VENV)/bin/python -m pytest -q -n auto --maxprocesses=4 --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# ruff's formatter and checks (pyproject.toml [tool.ruff]); CI runs lint before the tests.
lint: $(call STAMP,test)
	$(VENV)/bin/ruff format --check --quiet .
	$(VENV)/bin/ruff check --quiet .

format: $(call STAMP,test)
	$(VENV)/bin/ruff format --quiet .
	$(VENV)/bin/ruff check --quiet --fix .

# The page at http://127.0.0.1:7860 (PORT=..., HOST=... to change).
PORT ?= 7860
HOST ?= 127.0.0.1
serve: $(call STAMP,serve)
	$(VENV)/bin/python -m colorgan.serve --workdir=$(WORKDIR) --port=$(PORT) --host=$(HOST)

clean:
	rm -rf $(VENV) workdirs
