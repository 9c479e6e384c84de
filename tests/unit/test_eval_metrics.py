"""TOFU metric math on hand-computed numbers, and loading open-unlearning-format retain logs."""
from __future__ import annotations

import json
import math

import pytest
from scipy.stats import ks_2samp

from mpu_cli.evals import metrics as M
from mpu_cli.evals.tofu import (
    ALL_METRICS,
    QUICK_METRICS,
    load_retain_reference,
    resolve_metrics,
    summarize,
    write_eval,
)

LN2 = math.log(2.0)


def test_prob_is_exp_neg_avg_loss():
    assert M.prob(2 * LN2) == pytest.approx(0.25)
    assert M.prob(0.0) == 1.0


def test_truth_ratio_geometric_mean_of_perturbed_over_true():
    # exp(-mean(2,3,4)) / exp(-1) = exp(1 - 3)
    assert M.truth_ratio(1.0, [2.0, 3.0, 4.0]) == pytest.approx(math.exp(-2.0))
    # probabilities 1/2 (true) and 1/4, 1/16 (perturbed): geometric mean 1/8 -> TR = 1/4
    assert M.truth_ratio(LN2, [2 * LN2, 4 * LN2]) == pytest.approx(0.25)


def test_truth_ratio_aggregations():
    # forget: mean min(TR, 1/TR)
    assert M.tr_closer_to_1([0.5, 2.0, 1.0]) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    # retain / ra / wf: mean max(0, 1 - TR)
    assert M.tr_true_better([0.5, 2.0, 0.25]) == pytest.approx((0.5 + 0.0 + 0.75) / 3)


def test_normalised_prob():
    # p(a) = 1/2, perturbed 1/4 + 1/4 -> 0.5
    assert M.normalised_prob(LN2, [2 * LN2, 2 * LN2]) == pytest.approx(0.5)
    # p(a) = 1/2, five perturbed at 1/8 -> 0.5 / (0.5 + 5/8) = 4/9
    assert M.normalised_prob(LN2, [3 * LN2] * 5) == pytest.approx(4 / 9)
    # stays finite where the raw probabilities underflow
    assert M.normalised_prob(2000.0, [2000.0, 2000.0]) == pytest.approx(1 / 3)


def test_ks_forget_quality_pvalue():
    # fully separated samples of 3 and 3: exact two-sided p = 2 / C(6,3) = 0.1
    assert M.forget_quality([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.1)
    assert M.forget_quality([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0)


def test_model_utility_harmonic_mean():
    assert M.model_utility([1.0, 0.5, 0.25]) == pytest.approx(3 / (1 + 2 + 4))
    assert M.model_utility([0.5] * 9) == pytest.approx(0.5)
    assert M.model_utility([0.5, 0.0, 0.7]) == 0.0


def test_min_k_score():
    lp = [math.log(0.7), math.log(0.25), math.log(0.5), math.log(0.1), math.log(0.9)]
    # 40 % of 5 tokens = 2 lowest: 0.1 and 0.25
    assert M.min_k_score(lp) == pytest.approx(-(math.log(0.1) + math.log(0.25)) / 2)
    # at least one token
    assert M.min_k_score([math.log(0.5), math.log(0.25)]) == pytest.approx(math.log(4))


def test_roc_auc_with_ties():
    # holdout (label 1) scores vs forget (label 0): pairs won 1 + 0.5 (tie) + 3 + 3 = 7.5 of 9
    assert M.mia_auc([1.0, 2.0, 3.0], [2.0, 4.0, 5.0]) == pytest.approx(7.5 / 9)
    assert M.roc_auc([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8]) == pytest.approx(1.0)
    assert M.roc_auc([1, 0], [0.1, 0.9]) == pytest.approx(0.0)
    assert M.roc_auc([0, 0, 1, 1], [1, 1, 1, 1]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        M.roc_auc([0, 0], [1.0, 2.0])


def test_privleak():
    auc = 7.5 / 9
    assert M.privleak(auc) == pytest.approx(((1 - auc) - 0.5) / 0.5 * 100, rel=1e-8)
    assert M.privleak(auc, 0.6) == pytest.approx(((1 - auc) - 0.4) / 0.4 * 100, rel=1e-8)
    assert M.privleak(0.5) == pytest.approx(0.0, abs=1e-6)


def test_extraction_strength():
    assert M.extraction_strength([False, True, True]) == pytest.approx(2 / 3)
    assert M.extraction_strength([True, False]) == pytest.approx(0.5)  # no correct suffix: 1/n (open-unlearning)
    assert M.extraction_strength([False, False, False, True]) == pytest.approx(0.25)  # only the last: also 1/n
    assert M.extraction_strength([True, True, True, True]) == 1.0
    assert M.extraction_strength([True, False, False, True]) == pytest.approx(0.25)
    assert M.extraction_strength([]) == 0.0


def test_exact_memorization():
    assert M.exact_memorization([True, False, True, True]) == pytest.approx(0.75)
    assert M.exact_memorization([False, False]) == 0.0


def test_rougeL_recall_with_stemming():
    # tokens: gt [the, cat(s), are, run(ning)] vs gen [the, cat, run(s)] -> stemmed LCS = the cat run = 3 of 4
    assert M.rougeL_recall("The cats are running", "the cat runs") == pytest.approx(0.75)
    s = M.rouge_scores("The cats are running", "the cat runs")
    assert s["rouge1_recall"] == pytest.approx(0.75)
    assert s["rougeL_f1"] == pytest.approx(2 * 0.75 * 1.0 / 1.75)
    # order matters for L, not for 1
    s = M.rouge_scores("alpha beta gamma delta", "delta gamma beta alpha")
    assert s["rouge1_recall"] == pytest.approx(1.0)
    assert s["rougeL_recall"] == pytest.approx(0.25)
    assert M.rougeL_recall("anything at all", "") == 0.0


# ---- retain reference / outputs ------------------------------------------------------------------

def _open_unlearning_retain_log() -> dict:
    """Shaped like open-unlearning's saves/eval/tofu_<model>_retain90/TOFU_EVAL.json (abridged)."""
    return {
        "forget_Q_A_Prob": {"agg_value": 0.12, "value_by_index": {"0": {"prob": 0.1, "avg_loss": 2.3}}},
        "forget_truth_ratio": {
            "agg_value": 0.63,
            "value_by_index": {
                "0": {"score": 0.5},
                "2": {"score": 0.9},
                "10": {"score": 1.4},
                "1": {"score": 0.7},
            },
        },
        "mia_min_k": {
            "agg_value": 0.6,
            "auc": 0.6,
            "forget": {"agg_value": 2.0, "value_by_index": {"0": {"score": 2.0}}},
            "holdout": {"agg_value": 2.1, "value_by_index": {"0": {"score": 2.1}}},
        },
        "model_utility": {"agg_value": 0.59},
    }


def test_load_open_unlearning_retain_log_and_forget_quality(tmp_path):
    path = tmp_path / "TOFU_EVAL.json"
    path.write_text(json.dumps(_open_unlearning_retain_log()))
    ref = load_retain_reference(path)
    assert ref["forget_tr"] == [0.5, 0.7, 0.9, 1.4]  # ordered by numeric index
    assert ref["mia_auc"] == pytest.approx(0.6)
    assert load_retain_reference(tmp_path) == ref  # a folder holding TOFU_EVAL.json
    assert load_retain_reference(_open_unlearning_retain_log()) == ref  # in memory

    model_trs = [0.1, 0.2, 0.3]
    fq = M.forget_quality(model_trs, ref["forget_tr"])
    assert fq == pytest.approx(ks_2samp(model_trs, [0.5, 0.7, 0.9, 1.4]).pvalue)
    assert fq == pytest.approx(2 / 35)  # fully separated 3 vs 4: 2 / C(7,3)


def test_load_reference_accepts_value_key_and_no_mia():
    by = {"1": {"value": 2.0}, "0": {"value": 1.0}}
    ev = {"forget_truth_ratio": {"agg_value": 1.0, "value_by_index": by}}
    assert load_retain_reference(ev) == {"forget_tr": [1.0, 2.0], "mia_auc": None}
    with pytest.raises(ValueError, match="forget_truth_ratio"):
        load_retain_reference({"forget_Q_A_Prob": {"agg_value": 1.0}})
    with pytest.raises(FileNotFoundError):
        load_retain_reference("/nonexistent/TOFU_EVAL.json")


def test_write_eval_and_summary(tmp_path):
    ev = _open_unlearning_retain_log()
    write_eval(tmp_path / "out", ev)
    assert json.loads((tmp_path / "out" / "TOFU_EVAL.json").read_text()) == ev
    summary = json.loads((tmp_path / "out" / "TOFU_SUMMARY.json").read_text())
    assert summary == summarize(ev) == {
        "forget_Q_A_Prob": 0.12, "forget_truth_ratio": 0.63, "mia_min_k": 0.6, "model_utility": 0.59,
    }
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []  # no temp left


def test_privleak_against_an_open_unlearning_retain_log_uses_its_formula(tmp_path):
    # open-unlearning's privleak (src/evals/metrics/privacy.py): score = 1 - AUC, ref = 1 - AUC_retain,
    # (score - ref) / (ref + 1e-10) * 100, AUC_retain read from the retain log's mia_min_k
    (tmp_path / "TOFU_EVAL.json").write_text(json.dumps(_open_unlearning_retain_log()))
    ref = load_retain_reference(tmp_path / "TOFU_EVAL.json")
    for auc in (0.05, 0.5, 0.93):
        ou = ((1 - auc) - (1 - 0.6)) / ((1 - 0.6) + 1e-10) * 100
        assert M.privleak(auc, ref["mia_auc"]) == pytest.approx(ou, rel=1e-12)


def test_written_evaluations_are_strict_json_with_non_finite_flagged(tmp_path):
    ev = {"privleak": {"agg_value": float("nan"), "value_by_index": {}},
          "mia_min_k": {"agg_value": 0.5, "value_by_index": {"0": {"score": float("inf")}}}}
    write_eval(tmp_path, ev)
    for name in ("TOFU_EVAL.json", "TOFU_SUMMARY.json"):
        text = (tmp_path / name).read_text()
        assert "NaN" not in text and "Infinity" not in text
        json.loads(text, parse_constant=lambda c: pytest.fail(f"{name} holds the literal {c}"))
    full = json.loads((tmp_path / "TOFU_EVAL.json").read_text())
    assert full["privleak"] == {"agg_value": None, "value_by_index": {}, "non_finite": {"agg_value": "nan"}}
    assert full["mia_min_k"]["value_by_index"]["0"] == {"score": None, "non_finite": {"score": "inf"}}
    summary = json.loads((tmp_path / "TOFU_SUMMARY.json").read_text())
    assert summary["privleak"] is None and summary["non_finite"] == {"privleak": "nan"}


def test_metric_selection():
    assert resolve_metrics(None) == list(ALL_METRICS)
    assert resolve_metrics(QUICK_METRICS) == list(QUICK_METRICS)
    assert resolve_metrics(["privleak"]) == ["mia_min_k", "privleak"]
    assert resolve_metrics(["forget_quality"]) == ["forget_truth_ratio", "forget_quality"]
    assert len(resolve_metrics(["model_utility"])) == 10
    with pytest.raises(ValueError, match=r"unknown metric 'forget_prob'.*accepted: forget_Q_A_Prob"):
        resolve_metrics(["forget_prob"])
