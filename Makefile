# colorgan: `make train` trains the quickstart on the photos bundled with scikit-image/scikit-learn;
# `make test` runs the test suite; `make serve` starts the colorize page on WORKDIR's run. Each creates
# .venv and installs the pinned dependencies first.
PYTHON ?= python3
VENV ?= .venv
WORKDIR ?= workdirs/quickstart
PYTEST_ARGS ?=
INSTALLED := $(VENV)/.installed

.PHONY: install train test serve clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --constraint requirements.lock --editable '.[test]'
	touch $(INSTALLED)

train: $(INSTALLED)
	$(VENV)/bin/python -m colorgan.main --config=configs/quickstart.py --workdir=$(WORKDIR)

test: $(INSTALLED)
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

# The page at http://127.0.0.1:7860 (PORT=..., HOST=... to change); the `serve` extra first.
PORT ?= 7860
HOST ?= 127.0.0.1
serve: $(INSTALLED)
	$(VENV)/bin/pip install --quiet --constraint requirements.lock --editable '.[serve]'
	$(VENV)/bin/python -m colorgan.serve --workdir=$(WORKDIR) --port=$(PORT) --host=$(HOST)

clean:
	rm -rf $(VENV) workdirs
