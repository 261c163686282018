# `make pipeline` runs the whole pipeline, `make test` the tests; each installs what it needs first.
PYTHON ?= python3.11
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup pipeline test test-fast bench predict clean-outputs

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

pipeline: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro

test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" python -m pytest

test-fast: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" python -m pytest -m "not slow"

bench: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" python benchmarks/featurize_throughput.py

# make predict IMAGES=path/to/photo.jpg
predict: setup
	$(BIN)/python -m asl_pipeline predict $(IMAGES)
