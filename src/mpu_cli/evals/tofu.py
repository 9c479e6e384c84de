"""TOFU-style evaluation in open-unlearning's output shapes (README: What the numbers mean).

`evaluate` returns the TOFU_EVAL dict {metric: {"agg_value": float, "value_by_index": {str(idx): {...}}}}.
Per-item records: Prob -> {"prob", "avg_loss"}; ROUGE -> {"rouge1_recall", "rougeL_f1", "rougeL_recall",
"input", "ground_truth", "generation"}; truth ratio -> {"score": raw TR}; normalised Prob -> {"prob"};
extraction_strength / exact_memorization -> {"score"}. "mia_min_k" carries the AUC as agg_value and the
per-item min-k scores under "forget" / "holdout" ({"agg_value", "value_by_index"} each); aggregate-only
metrics (forget_quality, model_utility, privleak) have an empty value_by_index.
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mpu_cli.data.formatting import _TAG_USER, ChatFormat, encode_prompt, encode_qa, pad_id
from mpu_cli.evals import metrics as M
from mpu_cli.evals.batched import generate_greedy, score_sequences
from mpu_cli.faults import scoped_kill_point
from mpu_cli.files import atomic_write_json

log = logging.getLogger(__name__)

QUICK_METRICS = ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "retain_Q_A_Prob", "retain_Q_A_ROUGE")

UTILITY_METRICS = (
    "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio",
    "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
    "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio",
)

# Every reported metric, in report order. "mia_min_k" is the AUC that privleak is computed from.
ALL_METRICS = (
    "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio", "forget_quality",
    "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio",
    "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
    "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio",
    "model_utility", "mia_min_k", "privleak", "extraction_strength", "exact_memorization",
)

# metric -> metrics it is computed from (they are computed and reported too)
_DEPENDS = {
    "forget_quality": ("forget_truth_ratio",),
    "model_utility": UTILITY_METRICS,
    "privleak": ("mia_min_k",),
}

# data-set prefix in metric names -> key of `data`
_SPLITS = {"forget": "forget", "retain": "retain", "ra": "real_authors", "wf": "world_facts"}


@dataclass
class EvalConfig:
    batch_size: int = 16
    max_new_tokens: int = 200
    metrics: tuple[str, ...] | None = None  # None = every metric; else a subset by name
    # Generations are cut at these strings (after EOS / end-of-turn). None: the tag template's
    # next "Question:" when the tokenizer has no chat template, nothing otherwise.
    stop_strings: tuple[str, ...] | None = None


def resolve_metrics(requested: Iterable[str] | None) -> list[str]:
    """The requested metrics plus the ones they are computed from, in report order."""
    if requested is None:
        return list(ALL_METRICS)
    if isinstance(requested, str):
        requested = [requested]
    want = set()
    for name in requested:
        if name not in ALL_METRICS:
            raise ValueError(f"unknown metric {name!r}; accepted: {', '.join(ALL_METRICS)}")
        want.add(name)
        want.update(_DEPENDS.get(name, ()))
    return [m for m in ALL_METRICS if m in want]


def _need(metrics: list[str]) -> dict[str, set[str]]:
    """Per data key, the quantities needed: ans / para / pert (teacher-forced), gen (generation)."""
    need: dict[str, set[str]] = {}

    def add(key, what):
        need.setdefault(key, set()).add(what)

    for m in metrics:
        prefix = m.split("_", 1)[0]
        if m in ("forget_quality", "model_utility", "privleak"):
            continue
        if m == "mia_min_k":
            add("forget", "ans")
            add("holdout", "ans")
        elif m in ("extraction_strength", "exact_memorization"):
            add("forget", "ans")
        elif m.endswith("_Prob"):
            add(_SPLITS[prefix], "ans")
        elif m.endswith("_ROUGE"):
            add(_SPLITS[prefix], "gen")
        elif m.endswith("_Prob_normalised"):
            add(_SPLITS[prefix], "ans")
            add(_SPLITS[prefix], "pert")
        elif m.lower().endswith("_truth_ratio"):
            key = _SPLITS[prefix]
            add(key, "pert")
            add(key, "para" if key in ("forget", "retain") else "ans")
    return need


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


def normalise_reference(retain_reference) -> dict | None:
    if retain_reference is None:
        return None
    if isinstance(retain_reference, dict) and "forget_tr" in retain_reference:
        return retain_reference
    return load_retain_reference(retain_reference)


def evaluate(model, tokenizer, data: dict[str, list[dict]], fmt: ChatFormat | None = None,
             cfg: EvalConfig | None = None, retain_reference: dict | None = None,
             progress: bool = True, label: str = "model") -> dict:
    """Compute the TOFU metrics of `model` on `data` (keys forget, retain, real_authors, world_facts,
    holdout; missing keys skip the metrics that need them). See the module docstring for the shape."""
    fmt = fmt or ChatFormat()
    cfg = cfg or EvalConfig()
    reference = normalise_reference(retain_reference)
    metrics = resolve_metrics(cfg.metrics)
    need = _need(metrics)
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
                scores[key] = _score_split(model, tokenizer, rows, fmt, tf, cfg, pad, progress, f"{label} {key}")
            if "gen" in what:
                gens[key] = _generate_split(model, tokenizer, rows, fmt, cfg, progress, f"{label} {key}")
            scoped_kill_point("eval_mid")  # fault-injection tests only (MPU_KILL_AT=final_eval_mid)
    finally:
        model.train(was_training)

    res: dict[str, dict] = {}
    for m in metrics:
        entry = _compute(m, data, scores, gens, res, reference)
        if entry is not None:
            res[m] = entry
    return res


def memorization_scores(seq) -> dict[str, float]:
    """extraction_strength, exact_memorization and the min-k score of one scored answer, on open-unlearning's
    scale: the final (EOS) prediction is left out (metrics.without_final_prediction)."""
    correct = M.without_final_prediction(seq.correct)
    return {"extraction_strength": M.extraction_strength(correct),
            "exact_memorization": M.exact_memorization(correct),
            "min_k": M.min_k_score(M.without_final_prediction(seq.logprobs))}


def _compute(m: str, data, scores, gens, res, reference) -> dict | None:
    prefix = m.split("_", 1)[0]
    key = _SPLITS.get(prefix)

    if m == "forget_quality":
        if "forget_truth_ratio" not in res:
            return None
        if reference is None:
            log.info("forget_quality omitted: no retain reference given")
            return None
        trs = [v["score"] for v in res["forget_truth_ratio"]["value_by_index"].values()]
        return _entry(M.forget_quality(trs, reference["forget_tr"]))
    if m == "model_utility":
        if not all(u in res for u in UTILITY_METRICS):
            return None
        return _entry(M.model_utility([res[u]["agg_value"] for u in UTILITY_METRICS]))
    if m == "privleak":
        if "mia_min_k" not in res:
            return None
        ref_auc = reference.get("mia_auc") if reference else None
        if ref_auc is None:
            ref_auc = 0.5
        return _entry(M.privleak(res["mia_min_k"]["agg_value"], ref_auc))
    if m == "mia_min_k":
        if "forget" not in scores or "holdout" not in scores:
            return None
        sub = {}
        for part in ("forget", "holdout"):
            vals = [memorization_scores(s)["min_k"] for s in scores[part].ans]
            sub[part] = _entry(M.nanmean(vals), {str(i): {"score": v} for i, v in enumerate(vals)})
        auc = M.mia_auc([v["score"] for v in sub["forget"]["value_by_index"].values()],
                        [v["score"] for v in sub["holdout"]["value_by_index"].values()])
        return {"agg_value": auc, "auc": auc, "value_by_index": {}, **sub}
    if m in ("extraction_strength", "exact_memorization"):
        if "forget" not in scores:
            return None
        vals = [memorization_scores(s)[m] for s in scores["forget"].ans]
        return _entry(M.nanmean(vals), {str(i): {"score": v} for i, v in enumerate(vals)})

    if m.endswith("_ROUGE"):
        if key not in gens:
            return None
        by = {}
        for i, (row, gen) in enumerate(zip(data[key], gens[key], strict=False)):
            by[str(i)] = {**M.rouge_scores(row["answer"], gen), "input": row["question"],
                          "ground_truth": row["answer"], "generation": gen}
        return _entry(M.mean([v["rougeL_recall"] for v in by.values()]), by)

    if key not in scores:
        return None
    sc = scores[key]
    if m.endswith("_Q_A_Prob"):
        by = {str(i): {"prob": M.prob(s.avg_loss), "avg_loss": s.avg_loss} for i, s in enumerate(sc.ans)}
        return _entry(M.mean([v["prob"] for v in by.values()]), by)
    if m.endswith("_Prob_normalised"):
        vals = [M.normalised_prob(a.avg_loss, [p.avg_loss for p in ps]) for a, ps in zip(sc.ans, sc.pert, strict=False)]
        return _entry(M.mean(vals), {str(i): {"prob": v} for i, v in enumerate(vals)})
    if m.lower().endswith("_truth_ratio"):
        true = sc.para if key in ("forget", "retain") else sc.ans
        trs = [M.truth_ratio(t.avg_loss, [p.avg_loss for p in ps]) for t, ps in zip(true, sc.pert, strict=False)]
        agg = M.tr_closer_to_1(trs) if key == "forget" else M.tr_true_better(trs)
        return _entry(agg, {str(i): {"score": v} for i, v in enumerate(trs)})
    raise AssertionError(f"unhandled metric {m}")


# ---- outputs -----------------------------------------------------------------------------------

def summarize(tofu_eval: dict) -> dict:
    """TOFU_SUMMARY: {metric: agg_value}."""
    return {m: v["agg_value"] for m, v in tofu_eval.items() if isinstance(v, dict) and "agg_value" in v}


def write_eval(out_dir, tofu_eval: dict) -> None:
    """Write TOFU_EVAL.json and TOFU_SUMMARY.json into out_dir, each atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "TOFU_EVAL.json", tofu_eval)
    atomic_write_json(out / "TOFU_SUMMARY.json", summarize(tofu_eval))


def _item_value(item) -> float:
    if isinstance(item, dict):
        for k in ("score", "value"):
            if k in item and item[k] is not None:
                return float(item[k])
        raise ValueError(f"truth-ratio item without a 'score' or 'value': {item!r}")
    return float(item)


def load_retain_reference(path_or_eval) -> dict:
    """The retain model's per-item forget TRs (ordered by index) and min-k AUC, from a TOFU_EVAL.json
    (ours or open-unlearning's), a folder holding one, or an in-memory TOFU_EVAL dict."""
    if isinstance(path_or_eval, dict):
        ev, src = path_or_eval, "the given evaluation"
    else:
        p = Path(path_or_eval)
        if p.is_dir():
            p = p / "TOFU_EVAL.json"
        if not p.is_file():
            raise FileNotFoundError(f"retain reference {str(p)!r} not found (expected a TOFU_EVAL.json)")
        with open(p) as f:
            ev = json.load(f)
        src = str(p)
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
