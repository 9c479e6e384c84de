#!/usr/bin/env bash
# GPU check: the path users take, on a GPU. scripts/scale_1b.py runs `mpu-run` (m = 2, one round, RMU, quick
# evaluation, transport=files) and records every process's peak memory and every stage's wall time:
#   1. on the Llama-3.2-1B shape (scripts/make_llama1b_shape.py, random init) with device=cuda, bf16 copies;
#   2. where the Hub answers, on the real meta-llama/Llama-3.2-1B-Instruct and TOFU forget01 (open-unlearning's
#      target and retain99 models; a gated model: log in with `hf auth login` first).
# Each prints the stage and process tables (`mpu-report RUN --view scale` prints them again).
# Its CPU twin, the run this project measures on its CPU: python scripts/scale_1b.py (device=cpu, fp32).
# Without a CUDA GPU it says so and exits 2. Arguments are more mpu-run overrides, for both runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing to check." >&2
  echo "           Its CPU twin (the same mpu-run with device=cpu, fp32): $PY scripts/scale_1b.py" >&2
  exit 2
fi
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" scripts/scale_1b.py --device cuda -- "$@"
# The real model only where its files can be fetched (a gated repository: a token with access is needed).
if HF_HUB_OFFLINE=0 timeout 60 "$PY" -c 'from huggingface_hub import hf_hub_download as d; d("meta-llama/Llama-3.2-1B-Instruct", "config.json")' >/dev/null 2>&1; then
  "$PY" scripts/scale_1b.py --device cuda --hub -- "$@"
else
  echo "gpu_check: meta-llama/Llama-3.2-1B-Instruct cannot be fetched (no Hub, or no access to the gated model): the real-model run is skipped"
fi
