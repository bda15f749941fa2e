# colorgan: `make train` trains the quickstart on the photos bundled with scikit-image/scikit-learn;
# `make test` runs the test suite. Both create .venv and install the pinned dependencies first.
PYTHON ?= python3
VENV ?= .venv
WORKDIR ?= workdirs/quickstart
PYTEST_ARGS ?=
INSTALLED := $(VENV)/.installed

.PHONY: install train test clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --constraint requirements.lock --editable '.[test]'
	touch $(INSTALLED)

train: $(INSTALLED)
	$(VENV)/bin/python -m colorgan.main --config=configs/quickstart.py --workdir=$(WORKDIR)

test: $(INSTALLED)
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) workdirs
