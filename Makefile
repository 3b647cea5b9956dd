# xrdwidgets — set-up, demo and tests.  `make demo` and `make test` each set everything up first.
#
# TORCH picks the torch build installed before the package (the package itself needs torch>=2.3).
# The default pins the CPU wheel this project's machines carry; elsewhere it comes from PyPI.
# GPU users: `make demo TORCH=torch` (or any torch>=2.3 already in the venv is kept).
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
EXTRAS ?= all
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.xrdwidgets-installed
OUT    ?= xrdwidgets-output
PORT   ?= 8866
# the folder the dashboard serves (its Data tab lists it; exports go to DATA/results/)
DATA   ?= $(OUT)

# Binder check: a venv of the Binder requirements only (tools/binder_env.py), every notebook at Binder size
BINDER_VENV ?= build/binder-venv
EXECUTED    ?= build/executed-notebooks
# docs: render these executed notebooks (from `make binder-check`) instead of executing them again
DOCS_EXECUTED ?=

.PHONY: setup demo demo-files test test-browser binder-env binder-check docs info clean help

help:
	@echo "make demo   set up (.venv), write the demo results to $(OUT)/ and serve the dashboard on 127.0.0.1:$(PORT) on DATA=$(DATA)"
	@echo "make demo-files  only the demo results (simulate, reconstruct, HDF5 + PNG)"
	@echo "make test   set up (.venv) and run the test suite"
	@echo "make test-browser  only the browser tests (Voila + headless /usr/bin/chromium; skip without it)"
	@echo "make binder-check  every notebook at Binder size in a venv of the Binder requirements (peak RSS, time)"
	@echo "make docs   the documentation site into docs/_build/html (warnings are errors)"

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

setup: $(STAMP)

# the main command: write the demo results (HDF5 + PNG), then serve the dashboard with Voila
demo: demo-files
	$(BIN)/xrdwidgets app --port $(PORT) --data-dir $(DATA)

demo-files: $(STAMP)
	$(BIN)/xrdwidgets demo --out $(OUT) --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Browser tests drive Debian's /usr/bin/chromium through the playwright Python package (in the
# `test` extra); no browser is ever downloaded (never `playwright install`). .ci/run installs
# chromium with apt-get when it is missing; without it these tests skip.
test-browser: $(STAMP)
	$(BIN)/python -m pytest -q -s tests/browser

# binder/environment.yml from pyproject.toml (`--check` in tests/test_binder_env.py)
binder-env:
	python3 tools/binder_env.py

binder-check: $(STAMP)
	$(BIN)/python benchmarks/binder_check.py --venv $(BINDER_VENV) --save-executed $(EXECUTED) --json build/binder-check.json

# Sphinx + myst-nb (the `docs` extra). Notebooks: executed at XRDWIDGETS_NB_SIZE=tiny during the
# build, or taken from DOCS_EXECUTED (e.g. `make docs DOCS_EXECUTED=build/executed-notebooks`).
docs: $(STAMP)
	rm -rf docs/_build/html
	XRDWIDGETS_DOCS_EXECUTED=$(DOCS_EXECUTED) $(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache build docs/_build docs/_generated docs/api/generated
