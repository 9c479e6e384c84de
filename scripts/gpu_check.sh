#!/usr/bin/env bash
# GPU check: one MPU round + evaluation of a Llama-3.2-1B-shaped model (random init, bf16; real
# weights with --model DIR) on one GPU, within 5 minutes; prints timings and peak GPU memory.
# Without a CUDA GPU it says so and exits 2. Extra arguments go to scripts/gpu_check.py (see --help there).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null \
   && [[ " $* " != *" --tiny "* ]]; then
  echo "gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing to check." >&2
  echo "           Run it on a GPU machine, or: $PY scripts/gpu_check.py --tiny (the same code path on CPU)." >&2
  exit 2
fi
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# 5 minutes for the check itself, plus slack for interpreter start-up and imports.
exec timeout 360 "$PY" scripts/gpu_check.py --time-limit 300 "$@"
