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
	@echo "make table1     Table 1's sweep, then its table (also table2-4, figure1-3; SCALE=quick, ARGS=...)"
	@echo "make slurm-test the real single-node Slurm tests (installs Debian's slurm-wlm + munge; root)"
	@echo "make bench      optimizer-step and data-pipeline benchmarks"
	@echo "make gpu-check  on a GPU: CUDA tests, DDP, throughput, GPU-hours per artifact (<8 min; no GPU: one line)"

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

# --- the paper's artifacts -------------------------------------------------------------------
# `make table1` runs Table 1's whole sweep (completed runs are skipped, interrupted ones resume),
# then renders it. SCALE=quick runs the CPU-sized version into results/quick/ instead.
# Extra Hydra overrides go in ARGS, e.g. make table1 ARGS="launcher=slurm".
ARTIFACTS := figure1 figure2 figure3 table1 table2 table3 table4
ifeq ($(SCALE),quick)
  EXPERIMENT_SUFFIX := _quick
  RESULTS := results/quick
  REPORT_FLAGS := --scale quick
else ifeq ($(SCALE),full)
  EXPERIMENT_SUFFIX :=
  RESULTS := results
  REPORT_FLAGS :=
else
  $(error SCALE must be 'full' or 'quick', got '$(SCALE)')
endif

.PHONY: $(ARTIFACTS) slurm-test bench gpu-check
$(ARTIFACTS): install
	$(PYTHON) run.py experiment=$@$(EXPERIMENT_SUFFIX) $(ARGS)
	$(PYTHON) scripts/report.py --results $(RESULTS) --only $@ $(REPORT_FLAGS)

report: install
	$(PYTHON) scripts/report.py --results $(RESULTS) $(REPORT_FLAGS)

# A mini Figure 1 on the bundled digits data: MLP-6/12/18 x {SGDM, SGDMNG, Adam, AdamNG}.
DEMO_OUT ?= results/demo
demo: install
	$(PYTHON) run.py experiment=demo out_dir=$(DEMO_OUT) $(ARGS)
	$(PYTHON) scripts/report.py demo --results $(DEMO_OUT)

slurm-test: install
	bash scripts/slurm_test.sh

bench: install
	$(PYTHON) scripts/bench_optim.py
	$(PYTHON) scripts/bench_data.py

# The CUDA readiness check (README, "The GPU check"). No `install` prerequisite: without CUDA it
# only prints one line, and a GPU machine may have no network to install from.
GPU_CHECK_OUT ?= results/gpu_check
gpu-check:
	@$(PYTHON) scripts/gpu_check.py --out $(GPU_CHECK_OUT) $(ARGS)
