# bng-suite: the user's verbs. `make help` lists them.
PYTHON ?= python3
PIP    ?= $(PYTHON) -m pip
ARGS   ?=
SCALE  ?= full
# Installed once: `make install` is skipped while the stamp is newer than pyproject.toml.
STAMP  := .install.stamp

.PHONY: help install test test-all lint demo report

help:
	@echo "make demo       install, then a mini Figure 1 on the bundled digits data (results/demo/)"
	@echo "make test       install, then the test suite (the default, lean run)"
	@echo "make test-all   the test suite including the tests marked slow"
	@echo "make lint       ruff"
	@echo "make report     render every table and figure from the runs present, no training"

$(STAMP): pyproject.toml
	$(PIP) install -q -e ".[suite,dev]"
	@touch $(STAMP)

install: $(STAMP)

test: install
	$(PYTHON) -m pytest -q

test-all: install
	$(PYTHON) -m pytest -q -m "slow or not slow"

lint: install
	$(PYTHON) -m ruff check .
