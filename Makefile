# bng-suite: the user's verbs. `make help` lists them.
# Where the suite is installed: a project virtual environment, .venv/, unless PYTHON names an
# interpreter of your own (make test PYTHON=~/envs/ml/bin/python), which is then used as it is.
# When python3 has a torch, .venv is made by python3 -m venv --system-site-packages and filled by
# pip: that torch is used, not downloaded again (4-6 GB), and whatever is missing goes into .venv,
# never into python3. Without one, everything must be fetched, and uv does that fastest where it
# is on the PATH (uv ignores python3's packages, so it would fetch ~3 GB even when python3 has
# them). Measured on the reference 2-core machine under a load average of 7-10: reusing python3's
# torch, 3 min; from scratch with pip (torch's default build, 6.0 GB in .venv), 17 min.
VENV        ?= .venv
BASE_PYTHON ?= python3
ifeq ($(origin PYTHON),undefined)
  PYTHON := $(VENV)/bin/python
  OWN_VENV := 1
endif
UV     := $(shell command -v uv 2>/dev/null)
HAS_TORCH := import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)
ARGS   ?=
SCALE  ?= full
# Installed once: `make install` is skipped while the stamp is newer than pyproject.toml.
STAMP  := $(if $(OWN_VENV),$(VENV)/.installed,.install.stamp)

.PHONY: help install test test-all lint demo report verdicts

help:
	@echo "make install    the suite into .venv/ (or into PYTHON=... when you name one)"
	@echo "make demo       install, then a mini Figure 1 on the bundled digits data (results/demo/)"
	@echo "make test       install, then the test suite (the default, lean run)"
	@echo "make test-all   the test suite including the tests marked slow"
	@echo "make lint       ruff"
	@echo "make report     render every table and figure from the runs present, no training"
	@echo "make verdicts   check the paper's claims on the runs present (SEEDS=1,2,3; SCALE=quick)"
	@echo "make table1     Table 1's sweep, then its table (also table2-4, figure1-3; SCALE=quick, ARGS=...)"
	@echo "make tune_clip_threshold  a holdout search of the paper (also tune_adam_lr, tune_adap_alpha)"
	@echo "make ablation_bn_blocks   the other reading of an open choice (docs/PROTOCOL.md lists all)"
	@echo "make slurm-test the real single-node Slurm tests (installs Debian's slurm-wlm + munge; root)"
	@echo "make bench      optimizer-step and data-pipeline benchmarks"
	@echo "make reproduce-cpu DATA=...  the CPU reproduction of Figure 1, Table 4 and Figure 3 on real data"
	@echo "make gpu-check  on a GPU: CUDA tests, DDP, throughput, GPU-hours per artifact (<8 min; no GPU: one line)"

$(STAMP): pyproject.toml
ifdef OWN_VENV
	@set -e; if [ -n "$(UV)" ] && ! $(BASE_PYTHON) -c "$(HAS_TORCH)" 2>/dev/null; then \
	  echo "[install] the suite, its dev tools and torch's default build into $(VENV)/ with uv"; \
	  test -x $(PYTHON) || uv venv -q --python $(BASE_PYTHON) $(VENV); \
	  uv pip install -q --python $(PYTHON) -e ".[suite,dev]"; \
	else \
	  echo "[install] the suite and its dev tools into $(VENV)/ with pip (torch's default build too, unless $(BASE_PYTHON) has a torch)"; \
	  test -x $(PYTHON) || $(BASE_PYTHON) -m venv --system-site-packages $(VENV); \
	  $(PYTHON) -m pip install -q -e ".[suite,dev]"; \
	fi
else
	$(PYTHON) -m pip install -q -e ".[suite,dev]"
endif
	@touch $@

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
# The tuning sweeps (the paper's holdout searches) and the ablations (the other reading of each
# open choice, docs/PROTOCOL.md) work the same way. An artifact's sweeps are the experiment
# configs `scripts/report.py --sweeps <artifact>` names (Table 3: table3_adam and table3).
# The names come from the reports' registry (scripts/reports/registry.py, the standard library
# alone; python3, as make reads them before `install`), so a new artifact needs no edit here.
LIST      := python3 scripts/report.py --list
ARTIFACTS := $(shell $(LIST) figure table)
TUNING    := $(shell $(LIST) tuning)
ABLATIONS := $(shell $(LIST) ablation)
ifeq ($(SCALE),quick)
  RESULTS := results/quick
  REPORT_FLAGS := --scale quick
else ifeq ($(SCALE),full)
  RESULTS := results
  REPORT_FLAGS :=
else
  $(error SCALE must be 'full' or 'quick', got '$(SCALE)')
endif

.PHONY: $(ARTIFACTS) $(TUNING) $(ABLATIONS) slurm-test bench gpu-check
$(ARTIFACTS) $(TUNING) $(ABLATIONS): install
	@set -e; sweeps="$$($(PYTHON) scripts/report.py --sweeps $@ $(REPORT_FLAGS))"; \
	for sweep in $$sweeps; do \
	  echo "$(PYTHON) run.py experiment=$$sweep $(ARGS)"; \
	  $(PYTHON) run.py experiment=$$sweep $(ARGS); \
	done
	$(PYTHON) scripts/report.py --results $(RESULTS) --only $@ $(REPORT_FLAGS) --run-args "$(ARGS)"

report: install
	$(PYTHON) scripts/report.py --results $(RESULTS) $(REPORT_FLAGS)

# The paper's claims (scripts/reports/claims.yaml), each with its verdict, effect and interval:
# $(RESULTS)/tables/verdicts.{md,csv,json}. SEEDS=1,2,3 picks the seeds (default: each sweep's).
verdicts: install
	$(PYTHON) scripts/report.py verdicts --results $(RESULTS) $(REPORT_FLAGS) $(if $(SEEDS),--seeds $(SEEDS))

# A mini Figure 1 on the bundled digits data: MLP-6/12/18 x {SGDM, SGDMNG, Adam, AdamNG}.
DEMO_OUT ?= results/demo
demo: install
	$(PYTHON) run.py experiment=demo out_dir=$(DEMO_OUT) $(ARGS)
	$(PYTHON) scripts/report.py demo --results $(DEMO_OUT) --run-args "$(ARGS)"

slurm-test: install
	bash scripts/slurm_test.sh

bench: install
	-$(PYTHON) -m pip install -q -e ".[bench]" 2>/dev/null || \
	  uv pip install -q --python $(PYTHON) -e ".[bench]"
	$(PYTHON) scripts/bench_optim.py --parts step e2e loop
	$(PYTHON) scripts/bench_optim.py --parts peer --threads 1 --clock cpu --repeats 120
	$(PYTHON) scripts/bench_data.py

# --- the CPU reproduction (docs/reproduction/REPRODUCTION.md) -----------------------------------
# Figure 1 and Table 4 at the seeds their experiment configs fix (1-10, docs/PROTOCOL.md) and
# Figure 3 at seeds 1-3, on a data root of real files, with
# the cuts that document states (Table 4: 10 of 150 epochs, and SGDM/SGDMNG to 20 as a check of
# that cut; Figure 3: BPTT 40 only, 3 epochs), Table 4's learning-rate sweep and its two
# readings of Kim's setup, and the verdicts of the three artifacts' claims. Runs already in
# $(REPRO) are skipped, so re-running it only re-renders. DATA is a data root (MNIST/raw/, ptb/,
# rt-polaritydata/). A clone has none: the published runs used subsets that REPRODUCTION.md
# ("What was run") describes, which are not distributed. With the official files instead, into a
# fresh folder: make reproduce-cpu DATA=~/data REPRO=results/reproduction REPRO_ARGS=download=true
# SUBSET_ARGS= (download=true fetches them, md5-checked). SUBSET_ARGS turns the md5 check off for
# MNIST and PTB only, whose published files are subsets; Rotten Tomatoes is the official v1.0
# and keeps it.
# The published runs measured each layer's gradient norm at every step (grad_norm_every=1) for
# the diagnostics figure.
DATA       ?= $(HOME)/.cache/bng/data
REPRO      ?= docs/reproduction
REPRO_ARGS ?=
SUBSET_ARGS ?= dataset.verify_md5=false
RT_EPOCHS  ?= 10
PTB_BPTT   ?= 40
PTB_EPOCHS ?= 3
REPRO_RUN  := $(PYTHON) run.py grad_norm_every=1 data_root=$(DATA) $(REPRO_ARGS)
# Each table's cells ask for the config their runs were made with: the cuts go in --run-args.
# $(call repro_report,TARGETS --results DIR,RUN ARGS[,SEEDS]); the sweeps' own seeds unless given.
repro_report = $(PYTHON) scripts/report.py $(1) $(if $(3),--seeds $(3)) --run-args "data_root=$(DATA) $(REPRO_ARGS) $(2)"
comma := ,
S3    := 1$(comma)2$(comma)3
# Why Table 4 differs (REPRODUCTION.md): its config's seeds 1-10 at the base protocol, then the lr
# sweep and Kim's and the TF port's readings, seeds 1-3, all at RT_EPOCHS.
T4_RUN    := $(PYTHON) run.py data_root=$(DATA) $(REPRO_ARGS) out_dir=$(REPRO) epochs=$(RT_EPOCHS)
T4_SWEEPS := table4_lr_sgdm table4_lr_adam table4_lr_adagrad table4_kim table4_tfport

.PHONY: reproduce-cpu reproduce-table4
reproduce-cpu: install reproduce-table4
	$(REPRO_RUN) $(SUBSET_ARGS) out_dir=$(REPRO) experiment=figure1
	$(REPRO_RUN) $(SUBSET_ARGS) out_dir=$(REPRO) experiment=figure3 seed=$(S3) \
	  dataset.bptt=$(PTB_BPTT) epochs=$(PTB_EPOCHS)
	$(REPRO_RUN) out_dir=$(REPRO)/longer experiment=table4 seed=$(S3) epochs=20 optim=sgdm,sgdmng
	$(call repro_report,figure1 diagnostics --results $(REPRO),grad_norm_every=1)
	$(call repro_report,figure3 --results $(REPRO),grad_norm_every=1 epochs=$(PTB_EPOCHS),$(S3))
	$(call repro_report,verdicts figure1 --results $(REPRO),grad_norm_every=1)
	$(call repro_report,verdicts figure3 --results $(REPRO),epochs=$(PTB_EPOCHS),$(S3))
	$(call repro_report,table4 --results $(REPRO)/longer,grad_norm_every=1 epochs=20,$(S3))

reproduce-table4: install
	$(T4_RUN) experiment=table4
	@set -e; for sweep in $(T4_SWEEPS); do $(T4_RUN) seed=$(S3) experiment=$$sweep; done
	$(call repro_report,table4 --results $(REPRO),epochs=$(RT_EPOCHS))
	$(call repro_report,table4_lr table4_readings --results $(REPRO),epochs=$(RT_EPOCHS),$(S3))
	$(call repro_report,verdicts table4 --results $(REPRO),epochs=$(RT_EPOCHS))

# The CUDA readiness check (README, "The GPU check"). No `install` prerequisite: without CUDA it
# only prints one line, and a GPU machine may have no network to install from.
GPU_CHECK_OUT ?= results/gpu_check
gpu-check:
	@$(if $(wildcard $(PYTHON)),$(PYTHON),$(BASE_PYTHON)) scripts/gpu_check.py --out $(GPU_CHECK_OUT) $(ARGS)

# A target make does not know (`make table9`): one line and exit 2, not make's own error.
.DEFAULT:
	@echo "error: there is no target '$@'; make help lists them" >&2; exit 2
