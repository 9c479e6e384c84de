"""TOFU-style evaluation in open-unlearning's output shapes (README: What the numbers mean).

`evaluate` returns the TOFU_EVAL dict {metric: {"agg_value": float, "value_by_index": {str(idx): {...}}}}.
Per-item records: Prob -> {"prob", "avg_loss"}; ROUGE -> {"rouge1_recall", "rougeL_f1", "rougeL_recall",
"input", "ground_truth", "generation"}; truth ratio -> {"score": raw TR}; normalised Prob -> {"prob"};
extraction_strength / exact_memorization -> {"score"}. "mia_min_k" carries the AUC as agg_value and the
per-item min-k scores under "forget" / "holdout" ({"agg_value", "value_by_index"} each); aggregate-only
metrics (forget_quality, model_utility, privleak) have an empty value_by_index.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from mpu_cli.data.formatting import _TAG_USER, ChatFormat, encode_prompt, encode_qa, pad_id
from mpu_cli.evals import metric_registry as MR
from mpu_cli.evals import metrics as M
from mpu_cli.evals.batched import generate_greedy, score_sequences
from mpu_cli.evals.evaluator import Evaluator
from mpu_cli.evals.metric_registry import Metric
from mpu_cli.evals.tofu_benchmark import TOFU, UTILITY_METRICS  # noqa: F401 (UTILITY_METRICS: model_utility's inputs)
from mpu_cli.faults import scoped_kill_point

log = logging.getLogger(__name__)

ALL_METRICS = TOFU.metric_names  # every reported metric, in report order
QUICK_METRICS = TOFU.quick_metrics


@dataclass
class EvalConfig:
    batch_size: int = 16
    max_new_tokens: int = 200
    metrics: tuple[str, ...] | None = None  # None = every metric; else a subset by name
    # Generations are cut at these strings (after EOS / end-of-turn). None: the tag template's
    # next "Question:" when the tokenizer has no chat template, nothing otherwise.
    stop_strings: tuple[str, ...] | None = None


class _SplitScores:
    """Teacher-forced scores of one data set: answer, paraphrased answer, perturbed answers."""

    def __init__(self):
        self.ans = None  # list[SeqScore] per row
        self.para = None  # list[SeqScore] per row
        self.pert = None  # list[list[SeqScore]] per row


def _as_list(x) -> list[str]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _score_split(model, tokenizer, rows, fmt, what: set[str], cfg: EvalConfig, pad: int,
                 progress: bool, name: str) -> _SplitScores:
    seqs, slots = [], []  # slots: (field, row, j)
    for r, row in enumerate(rows):
        q = row["question"]
        if "ans" in what:
            seqs.append(encode_qa(tokenizer, q, row["answer"], fmt))
            slots.append(("ans", r, 0))
        if "para" in what:
            seqs.append(encode_qa(tokenizer, q, row["paraphrased_answer"], fmt))
            slots.append(("para", r, 0))
        if "pert" in what:
            for j, p in enumerate(_as_list(row["perturbed_answer"])):
                seqs.append(encode_qa(tokenizer, q, p, fmt))
                slots.append(("pert", r, j))
    scores = score_sequences(model, seqs, cfg.batch_size, pad, progress, desc=f"eval {name}")
    out = _SplitScores()
    n = len(rows)
    if "ans" in what:
        out.ans = [None] * n
    if "para" in what:
        out.para = [None] * n
    if "pert" in what:
        out.pert = [[] for _ in range(n)]
    for (field, r, _j), s in zip(slots, scores, strict=False):
        if field == "pert":
            out.pert[r].append(s)
        else:
            getattr(out, field)[r] = s
    return out


def _default_stop_strings(tokenizer) -> tuple[str, ...]:
    return () if tokenizer.chat_template else (_TAG_USER.strip(),)


def _generate_split(model, tokenizer, rows, fmt, cfg: EvalConfig, progress: bool, name: str) -> list[str]:
    prompts = [encode_prompt(tokenizer, row["question"], fmt) for row in rows]
    stops = cfg.stop_strings if cfg.stop_strings is not None else _default_stop_strings(tokenizer)
    return generate_greedy(model, tokenizer, prompts, cfg.batch_size, cfg.max_new_tokens, tuple(stops),
                           progress, desc=f"generate {name}")


def _entry(agg, by_index=None) -> dict:
    return {"agg_value": float(agg), "value_by_index": by_index or {}}


def memorization_scores(seq) -> dict[str, float]:
    """extraction_strength, exact_memorization and the min-k score of one scored answer, on open-unlearning's
    scale: the final (EOS) prediction is left out (metrics.without_final_prediction)."""
    correct = M.without_final_prediction(seq.correct)
    return {"extraction_strength": M.extraction_strength(correct),
            "exact_memorization": M.exact_memorization(correct),
            "min_k": M.min_k_score(M.without_final_prediction(seq.logprobs))}


# ---- one function per kind of metric (evals.tofu_benchmark declares which kind each metric is) ---------------
# Each takes (metric, data, scores, gens, res, reference) and returns the metric's entry, or None when its
# inputs are missing.

def prob_entry(scored) -> dict:
    """Prob: per item exp(-avg answer-token loss), averaged over items."""
    by = {str(i): {"prob": M.prob(s.avg_loss), "avg_loss": s.avg_loss} for i, s in enumerate(scored)}
    return _entry(M.mean([v["prob"] for v in by.values()]), by)


def _prob(m: Metric, data, scores, gens, res, reference) -> dict | None:
    return prob_entry(scores[m.on].ans) if m.on in scores else None


def _rouge(m: Metric, data, scores, gens, res, reference) -> dict | None:
    if m.on not in gens:
        return None
    by = {}
    for i, (row, gen) in enumerate(zip(data[m.on], gens[m.on], strict=False)):
        by[str(i)] = {**M.rouge_scores(row["answer"], gen), "input": row["question"],
                      "ground_truth": row["answer"], "generation": gen}
    return _entry(M.mean([v["rougeL_recall"] for v in by.values()]), by)


def _normalised_prob(m: Metric, data, scores, gens, res, reference) -> dict | None:
    if m.on not in scores:
        return None
    sc = scores[m.on]
    vals = [M.normalised_prob(a.avg_loss, [p.avg_loss for p in ps]) for a, ps in zip(sc.ans, sc.pert, strict=False)]
    return _entry(M.mean(vals), {str(i): {"prob": v} for i, v in enumerate(vals)})


def _truth_ratio(m: Metric, data, scores, gens, res, reference) -> dict | None:
    if m.on not in scores:
        return None
    sc = scores[m.on]
    true = sc.para if m.on in ("forget", "retain") else sc.ans
    trs = [M.truth_ratio(t.avg_loss, [p.avg_loss for p in ps]) for t, ps in zip(true, sc.pert, strict=False)]
    agg = M.tr_closer_to_1(trs) if m.on == "forget" else M.tr_true_better(trs)
    return _entry(agg, {str(i): {"score": v} for i, v in enumerate(trs)})


def _forget_quality(m: Metric, data, scores, gens, res, reference) -> dict | None:
    if not all(d in res for d in m.depends):
        return None
    if reference is None:
        log.info("forget_quality omitted: no retain reference given")
        return None
    trs = [v["score"] for v in res[m.depends[0]]["value_by_index"].values()]
    return _entry(M.forget_quality(trs, reference["forget_tr"]))


def _model_utility(m: Metric, data, scores, gens, res, reference) -> dict | None:
    if not all(d in res for d in m.depends):
        return None
    return _entry(M.model_utility([res[d]["agg_value"] for d in m.depends]))


def _privleak(m: Metric, data, scores, gens, res, reference) -> dict | None:
    if not all(d in res for d in m.depends):
        return None
    ref_auc = reference.get("mia_auc") if reference else None
    if ref_auc is None:
        ref_auc = 0.5
    return _entry(M.privleak(res[m.depends[0]]["agg_value"], ref_auc))


def _min_k(m: Metric, data, scores, gens, res, reference) -> dict | None:
    parts = [key for key, _ in m.needs]  # members first, then non-members
    if not all(p in scores for p in parts):
        return None
    sub = {}
    for part in parts:
        vals = [memorization_scores(s)["min_k"] for s in scores[part].ans]
        sub[part] = _entry(M.nanmean(vals), {str(i): {"score": v} for i, v in enumerate(vals)})
    auc = M.mia_auc(*([v["score"] for v in sub[p]["value_by_index"].values()] for p in parts))
    return {"agg_value": auc, "auc": auc, "value_by_index": {}, **sub}


def _memorization(m: Metric, data, scores, gens, res, reference) -> dict | None:
    if m.on not in scores:
        return None
    vals = [memorization_scores(s)[m.name] for s in scores[m.on].ans]
    return _entry(M.nanmean(vals), {str(i): {"score": v} for i, v in enumerate(vals)})


COMPUTE = {"prob": _prob, "rouge": _rouge, "normalised_prob": _normalised_prob, "truth_ratio": _truth_ratio,
           "forget_quality": _forget_quality, "model_utility": _model_utility, "privleak": _privleak,
           "min_k": _min_k, "memorization": _memorization}


def forget_prob(model, examples: list[dict], pad: int, batch_size: int = 32) -> float:
    """forget_Q_A_Prob's value on encoded examples: what the prepare stage trains the target up to."""
    return prob_entry(score_sequences(model, examples, batch_size, pad))["agg_value"]


class TofuEvaluator(Evaluator):
    EvalConfig = EvalConfig

    def normalise_reference(self, retain_reference) -> dict | None:
        if retain_reference is None:
            return None
        if isinstance(retain_reference, dict) and "forget_tr" in retain_reference:
            return retain_reference
        return self.load_retain_reference(retain_reference)

    def evaluate(self, model, tokenizer, data: dict[str, list[dict]], fmt: ChatFormat | None = None,
                 cfg: EvalConfig | None = None, retain_reference: dict | None = None,
                 progress: bool = True, label: str = "model") -> dict:
        """Compute the TOFU metrics of `model` on `data` (keys forget, retain, real_authors, world_facts,
        holdout; missing keys skip the metrics that need them). See the module docstring for the shape."""
        fmt = fmt or ChatFormat()
        cfg = cfg or EvalConfig()
        reference = self.normalise_reference(retain_reference)
        metrics = self.resolve_metrics(cfg.metrics)
        need = MR.needs(self.benchmark.metrics, metrics)
        missing = sorted(k for k in need if not data.get(k))
        if missing:
            log.info("evaluation: no rows for %s; the metrics that need them are skipped", ", ".join(missing))
        pad = pad_id(tokenizer)

        was_training = getattr(model, "training", False)
        model.eval()
        try:
            scores: dict[str, _SplitScores] = {}
            gens: dict[str, list[str]] = {}
            for key, what in need.items():
                rows = data.get(key) or []
                if not rows:
                    continue
                tf = what - {"gen"}
                if tf:
                    scores[key] = _score_split(model, tokenizer, rows, fmt, tf, cfg, pad, progress,
                                               f"{label} {key}")
                if "gen" in what:
                    gens[key] = _generate_split(model, tokenizer, rows, fmt, cfg, progress, f"{label} {key}")
                scoped_kill_point("eval_mid")  # fault-injection tests only (MPU_KILL_AT=final_eval_mid)
        finally:
            model.train(was_training)

        by_name = {m.name: m for m in self.benchmark.metrics}
        res: dict[str, dict] = {}
        for name in metrics:
            metric = by_name[name]
            entry = COMPUTE[metric.kind](metric, data, scores, gens, res, reference)
            if entry is not None:
                res[name] = entry
        return res

    def load_retain_reference(self, path_or_eval) -> dict:
        """The retain model's per-item forget TRs (ordered by index) and min-k AUC, from a TOFU_EVAL.json
        (ours or open-unlearning's), a folder holding one, or an in-memory TOFU_EVAL dict."""
        ev, src = self.read_eval(path_or_eval)
        ftr = ev.get("forget_truth_ratio")
        by = ftr.get("value_by_index") if isinstance(ftr, dict) else None
        if not isinstance(by, dict) or not by:
            raise ValueError(f"retain reference {src}: no forget_truth_ratio.value_by_index")

        def order(k):
            try:
                return (0, int(k), "")
            except (TypeError, ValueError):
                return (1, 0, str(k))

        trs = [_item_value(by[k]) for k in sorted(by, key=order)]
        trs = [t for t in trs if not math.isnan(t)]
        mia = ev.get("mia_min_k")
        auc = None
        if isinstance(mia, dict) and mia.get("agg_value") is not None:
            auc = float(mia["agg_value"])
        elif isinstance(mia, (int, float)):
            auc = float(mia)
        return {"forget_tr": trs, "mia_auc": auc}


def _item_value(item) -> float:
    if isinstance(item, dict):
        for k in ("score", "value"):
            if k in item and item[k] is not None:
                return float(item[k])
        raise ValueError(f"truth-ratio item without a 'score' or 'value': {item!r}")
    return float(item)


# The module's functions, for callers that evaluate TOFU directly.
EVALUATOR = TofuEvaluator(TOFU)
evaluate, load_retain_reference = EVALUATOR.evaluate, EVALUATOR.load_retain_reference
resolve_metrics, summarize, write_eval = EVALUATOR.resolve_metrics, EVALUATOR.summarize, EVALUATOR.write_eval
