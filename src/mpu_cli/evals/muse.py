"""MUSE evaluation in open-unlearning's names and output shapes (README: What the numbers mean).

- forget_verbmem_ROUGE: ROUGE-L F1 between the greedy continuation (up to 128 new tokens) of a forget
  document's opening and its true continuation (verbmem/forget);
- forget_knowmem_ROUGE / retain_knowmem_ROUGE: ROUGE-L F1 of the greedy answer (up to 32 new tokens) to a
  question about the forget / retain corpus, asked after the split's few-shot examples (knowmem/*_qa_icl);
- mia_min_k: AUC of the min-k % attack (k = 0.4) on privleak forget vs holdout documents; privleak: that AUC
  relative to the retrained model's (100 · ((1−AUC) − (1−AUC_ref)) / (1−AUC_ref); AUC_ref = 0.5 without one);
- extraction_strength: on the verbmem forget continuations, teacher-forced.

Inputs are tokenized as open-unlearning's MUSE datasets tokenize them (data.text): with the tokenizer's own
special tokens; documents and prompt + continuation cut 2048 tokens after the prefix, and at the model's
positions; few-shot prompts cut at 512 tokens. A prompt that does not leave room for its generation in the
model's positions is refused (DataError) before the model runs.

`evaluate` returns the MUSE_EVAL dict {metric: {"agg_value", "value_by_index"}} that `write_eval` writes with
MUSE_SUMMARY.json ({metric: agg_value}).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from mpu_cli.data.formatting import ChatFormat, pad_id
from mpu_cli.data.text import (
    FEW_SHOT_STOP_STRINGS,
    encode_completion,
    encode_document,
    encode_few_shot_prompt,
    encode_text_prompt,
)
from mpu_cli.data.validate import DataError
from mpu_cli.evals import metrics as M
from mpu_cli.evals.batched import generate_greedy, model_positions, score_sequences
from mpu_cli.evals.evaluator import Evaluator
from mpu_cli.evals.muse_benchmark import MUSE
from mpu_cli.faults import scoped_kill_point

VERBMEM_NEW_TOKENS, KNOWMEM_NEW_TOKENS = 128, 32  # open-unlearning's MUSE generation lengths
# open-unlearning's max_length of its MUSE_MIA / MUSE_forget_verbmem data (tokens kept after the prefix) and of
# its knowmem data (the few-shot prompt's tokenizer truncation)
TEXT_TOKENS, KNOWMEM_PROMPT_TOKENS = 2048, 512
ALL_METRICS, QUICK_METRICS = MUSE.metric_names, MUSE.quick_metrics


@dataclass
class EvalConfig:
    batch_size: int = 16
    max_new_tokens: int | None = None  # caps both generation lengths (None: 128 for verbmem, 32 for knowmem)
    metrics: tuple[str, ...] | None = None  # None: every metric
    chat_template: bool = False  # knowmem questions in the model's chat template (else plain Question/Answer tags)


def _rouge_entry(rows: list[tuple[str, str]], generations: list[str]) -> dict:
    by_index = {}
    for i, ((prompt, truth), gen) in enumerate(zip(rows, generations, strict=True)):
        s = M.rouge_scores(truth, gen)
        by_index[str(i)] = {"rougeL_f1": s["rougeL_f1"], "rougeL_recall": s["rougeL_recall"], "input": prompt,
                            "ground_truth": truth, "generation": gen}
    return _entry(M.mean([v["rougeL_f1"] for v in by_index.values()]), by_index)


def _entry(agg, by_index=None) -> dict:
    return {"agg_value": float(agg), "value_by_index": by_index or {}}


def _cap(n: int, cfg: EvalConfig) -> int:
    return n if cfg.max_new_tokens is None else min(n, cfg.max_new_tokens)


def inputs(tokenizer, data: dict[str, list[dict]], fmt: ChatFormat, cfg: EvalConfig,
           positions: int | None = None) -> dict[str, list]:
    """The token ids the metrics read, built as open-unlearning builds them: the prompts to continue
    ("verbmem", "forget_knowmem", "retain_knowmem") and the sequences to score ("privleak_forget",
    "privleak_holdout", "extraction"), these cut at `positions` (the model's). DataError when a prompt leaves no
    room in `positions` for its generation."""
    verbmem = data["verbmem"]
    out = {"verbmem": [encode_text_prompt(tokenizer, r["prompt"]) for r in verbmem]}
    for side in ("forget", "retain"):
        examples = [(r["question"], r["answer"]) for r in data[f"{side}_qa_icl"]]
        out[f"{side}_knowmem"] = [encode_few_shot_prompt(tokenizer, examples, r["question"], fmt, cfg.chat_template,
                                                         KNOWMEM_PROMPT_TOKENS) for r in data[f"{side}_qa"]]
    for side in ("forget", "holdout"):
        out[f"privleak_{side}"] = [encode_document(tokenizer, r["text"], TEXT_TOKENS, positions)
                                   for r in data[f"privleak_{side}"]]
    out["extraction"] = [encode_completion(tokenizer, r["prompt"], r["gt"], TEXT_TOKENS, positions) for r in verbmem]
    if positions is not None:
        for key, split, new in (("verbmem", "verbmem/forget", VERBMEM_NEW_TOKENS),
                                ("forget_knowmem", "knowmem/forget_qa", KNOWMEM_NEW_TOKENS),
                                ("retain_knowmem", "knowmem/retain_qa", KNOWMEM_NEW_TOKENS)):
            _check_room(out[key], split, _cap(new, cfg), positions)
    return out


def _check_room(prompts: list[list[int]], split: str, new: int, positions: int) -> None:
    for i, ids in enumerate(prompts):
        if len(ids) + new > positions:
            raise DataError(f"MUSE {split} row {i + 1}: its prompt is {len(ids)} tokens, which with {new} new tokens "
                            f"exceeds the model's {positions} positions; accepted: prompts of at most "
                            f"{positions - new} tokens")


def _min_k_entry(model, enc: dict[str, list], cfg: EvalConfig, pad: int, progress: bool, label: str) -> dict:
    """min-k % scores of privleak forget (members) and holdout documents; their AUC as agg_value."""
    scores = {}
    for side in ("forget", "holdout"):
        scored = score_sequences(model, enc[f"privleak_{side}"], cfg.batch_size, pad, progress,
                                 desc=f"eval {label} privleak {side}")
        scores[side] = [M.min_k_score(M.without_final_prediction(s.logprobs)) for s in scored]
    entry = _entry(M.mia_auc(scores["forget"], scores["holdout"]))
    for side, values in scores.items():
        entry[side] = _entry(M.nanmean(values), {str(i): {"score": v} for i, v in enumerate(values)})
    return entry


class MuseEvaluator(Evaluator):
    EvalConfig = EvalConfig

    def evaluate(self, model, tokenizer, data: dict[str, list[dict]], fmt: ChatFormat | None = None,
                 cfg: EvalConfig | None = None, retain_reference: dict | None = None, progress: bool = True,
                 label: str = "model") -> dict:
        """The MUSE metrics of `model` on `data` (data.muse.eval_sets); `retain_reference`: {"mia_auc": AUC} of
        the retrained model (load_retain_reference), the privleak reference."""
        fmt, cfg = fmt or ChatFormat(), cfg or EvalConfig()
        wanted = self.resolve_metrics(cfg.metrics)
        enc = inputs(tokenizer, data, fmt, cfg, model_positions(model))  # every size checked before the model runs
        pad, res = pad_id(tokenizer), {}
        was_training = getattr(model, "training", False)
        model.eval()
        try:
            if "forget_verbmem_ROUGE" in wanted:
                rows = data["verbmem"]
                gens = generate_greedy(model, tokenizer, enc["verbmem"], cfg.batch_size,
                                       _cap(VERBMEM_NEW_TOKENS, cfg), (), progress, desc=f"eval {label} verbmem")
                res["forget_verbmem_ROUGE"] = _rouge_entry([(r["prompt"], r["gt"]) for r in rows], gens)
            for side in ("forget", "retain"):
                if f"{side}_knowmem_ROUGE" in wanted:
                    qa = data[f"{side}_qa"]
                    stops = () if cfg.chat_template else FEW_SHOT_STOP_STRINGS
                    gens = generate_greedy(model, tokenizer, enc[f"{side}_knowmem"], cfg.batch_size,
                                           _cap(KNOWMEM_NEW_TOKENS, cfg), stops, progress,
                                           desc=f"eval {label} {side} knowmem")
                    res[f"{side}_knowmem_ROUGE"] = _rouge_entry([(r["question"], r["answer"]) for r in qa], gens)
                scoped_kill_point("eval_mid")  # fault-injection tests only (MPU_KILL_AT=final_eval_mid)
            if "mia_min_k" in wanted:
                res["mia_min_k"] = _min_k_entry(model, enc, cfg, pad, progress, label)
            if "privleak" in wanted:
                ref = (retain_reference or {}).get("mia_auc")
                res["privleak"] = _entry(M.privleak(res["mia_min_k"]["agg_value"], 0.5 if ref is None else ref))
            if "extraction_strength" in wanted:
                scores = score_sequences(model, enc["extraction"], cfg.batch_size, pad, progress,
                                         desc=f"eval {label} verbmem ES")
                es = [M.extraction_strength(M.without_final_prediction(s.correct)) for s in scores]
                res["extraction_strength"] = _entry(M.mean(es), {str(i): {"score": v} for i, v in enumerate(es)})
        finally:
            model.train(was_training)
        return {m: res[m] for m in ALL_METRICS if m in res}

    def load_retain_reference(self, path_or_eval) -> dict:
        """The retrained model's min-k AUC ({"mia_auc"}) from its MUSE_EVAL.json (ours or open-unlearning's), a
        folder holding one, or an in-memory MUSE_EVAL dict: the privleak reference. ValueError for another
        benchmark's evaluation (TOFU's has a mia_min_k too, over QA pairs) or one without a finite min-k AUC."""
        ev, src = self.read_eval(path_or_eval)
        own = _own_metrics()
        if isinstance(ev, dict) and not any(m in ev for m in own):
            held = ", ".join(sorted(map(str, ev))[:3]) or "nothing"
            raise ValueError(f"retain reference {src} is not a MUSE evaluation (none of {', '.join(own)}; it holds "
                             f"{held}); accepted: the retrained model's {self.benchmark.eval_file}")
        mia = ev.get("mia_min_k") if isinstance(ev, dict) else None
        auc = mia.get("agg_value") if isinstance(mia, dict) else mia
        if not isinstance(auc, (int, float)) or not math.isfinite(auc):
            raise ValueError(f"retain reference {src}: no finite mia_min_k.agg_value (the min-k AUC privleak needs)")
        return {"mia_auc": float(auc)}


def _own_metrics() -> tuple[str, ...]:
    """MUSE's metrics that no other registered benchmark has: what marks an evaluation as MUSE's."""
    from mpu_cli.evals import benchmarks

    others = {m for b in benchmarks.BENCHMARKS.values() if b.name != MUSE.name for m in b.metric_names}
    return tuple(m for m in ALL_METRICS if m not in others)


# The module's functions, for callers that evaluate MUSE directly.
EVALUATOR = MuseEvaluator(MUSE)
evaluate, load_retain_reference = EVALUATOR.evaluate, EVALUATOR.load_retain_reference
summarize, write_eval = EVALUATOR.summarize, EVALUATOR.write_eval
