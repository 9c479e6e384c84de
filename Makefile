# mpu-cli. `make demo` installs and runs MPU on the embedded default; `make test` installs and runs the tests.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
TORCH   := torch==2.13.0
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: help install demo test test-slow lint bench clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

.venv/installed: pyproject.toml
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	# CPU torch first where there is no GPU: otherwise pip resolves `torch` to a multi-GB CUDA build.
	if command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install -q torch; else $(PIP) install -q $(TORCH) || $(PIP) install -q torch --index-url https://download.pytorch.org/whl/cpu; fi
	$(PIP) install -q -e '.[dev]'
	touch $@

install: .venv/installed  ## create .venv with CPU torch (no GPU) and the package in editable mode

demo: install  ## run MPU (NPO, kappa=0.01, m=2) end to end on the embedded default
	.venv/bin/mpu-run algorithm=npo kappa=0.01 m=2 seed=0

test: install  ## run the test suite (fast tests; `make test-slow` for the long end-to-end ones)
	$(PY) -m pytest -q

test-slow: install  ## run only the slow end-to-end tests
	$(PY) -m pytest -q -m slow

lint: install  ## ruff
	.venv/bin/ruff check src tests scripts

clean:  ## remove outputs and caches (not the venv)
	rm -rf outputs multirun .pytest_cache .ruff_cache
