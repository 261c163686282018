# `make pipeline` runs the whole pipeline, `make test` the tests; each installs what it needs first.
PYTHON ?= python3.11
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup pipeline test test-fast bench predict demo clean-outputs

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

# A clone without ../shared first drops the folders it lacks from params.yaml (printed; docs/data.md); one with
# it links them for DVC's queued experiment copies (docs/experiments.md).
pipeline: setup
	$(BIN)/python -m asl_pipeline drop-absent
	$(BIN)/python -m asl_pipeline link-outside
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro

# The tests cover the demo page too, so they install its packages (requirements-demo.txt).
# Test files run side by side, one per CPU core (pytest-xdist): a file's tests share its module fixtures,
# so a file stays on one worker; tests/conftest.py hands out the longest files first. TEST_WORKERS=0: serial.
TEST_WORKERS ?= auto
PYTEST = PATH="$(CURDIR)/$(BIN):$$PATH" python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: $(VENV)/.installed-demo
	$(PYTEST)

test-fast: $(VENV)/.installed-demo
	$(PYTEST) -m "not slow"

# make bench [BENCH_ARGS="--skip-scale --skip-personalisation"]: every figure side by side, table +
# benchmarks/results.json (~35 min here)
bench: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" python benchmarks/run.py $(BENCH_ARGS)

# make predict IMAGES=path/to/photo.jpg
predict: setup
	$(BIN)/python -m asl_pipeline predict $(IMAGES)

# make demo [SERVE_ARGS="--port 8600"]: the trained model in a local web page (URL printed when ready)
demo: $(VENV)/.installed-demo
	$(BIN)/python -m asl_pipeline serve $(SERVE_ARGS)

$(VENV)/.installed-demo: $(VENV)/.installed requirements-demo.txt
	$(BIN)/python -m pip install --quiet -r requirements-demo.txt
	$(BIN)/python -m pip check
	touch $@
