"""Batched model passes of the evaluator and the assembled TOFU_EVAL.

- score_sequences against hand-computed values from a model whose next-token distributions are set directly;
- evaluate() against an independent per-token recomputation from the same kind of fixed-logits model;
- batch-size invariance of every metric (and of the generations) on a small random LlamaForCausalLM.
"""
from __future__ import annotations

import itertools
import logging
import math
import random
from types import SimpleNamespace

import pytest
import torch
from scipy.stats import ks_2samp

from mpu_cli.data.formatting import IGNORE, ChatFormat, encode_qa
from mpu_cli.evals import metrics as M
from mpu_cli.evals.batched import _decode_new, generate_greedy, score_sequences, stop_token_ids
from mpu_cli.evals.tofu import ALL_METRICS, QUICK_METRICS, UTILITY_METRICS, EvalConfig, evaluate


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the test machines are small and shared: intra-op threads fighting over 2 cores make tiny
    # matmuls ~15x slower
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
TEMPLATE_WORDS = ["you", "are", "a", "helpful", "assistant", ".", "question", ":", "answer", "?"]
CONTENT = [
    "who", "what", "where", "when", "wrote", "born", "city", "book", "author", "novel", "prize",
    "won", "river", "old", "new", "red", "blue", "green", "quiet", "loud", "mother", "father",
    "teacher", "doctor", "paris", "rome", "lima", "oslo", "cats", "run", "running", "story",
    "poems",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def make_tokenizer(chat: bool):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + TEMPLATE_WORDS + CONTENT)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>",
                                  bos_token="<s>", eos_token="</s>")
    tok.add_special_tokens({"additional_special_tokens": SPECIAL[4:]})
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def _sentence(rng, lo=2, hi=7):
    return " ".join(rng.choice(CONTENT) for _ in range(rng.randint(lo, hi)))


def make_data(n=5, seed=0) -> dict[str, list[dict]]:
    rng = random.Random(seed)

    def full():
        return {"question": _sentence(rng) + " ?", "answer": _sentence(rng),
                "paraphrased_answer": _sentence(rng), "perturbed_answer": [_sentence(rng) for _ in range(5)],
                "paraphrased_question": _sentence(rng) + " ?"}

    def short(k):
        return {"question": _sentence(rng) + " ?", "answer": _sentence(rng, 1, 3),
                "perturbed_answer": [_sentence(rng, 1, 3) for _ in range(k)]}

    return {
        "forget": [full() for _ in range(n)],
        "retain": [full() for _ in range(n)],
        "real_authors": [short(4) for _ in range(n)],
        "world_facts": [short(3) for _ in range(n)],
        "holdout": [{"question": _sentence(rng) + " ?", "answer": _sentence(rng)} for _ in range(n)],
    }


class FixedLogits(torch.nn.Module):
    """Next-token logits are table[previous token]: distributions set directly, no further context."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table.clone(), requires_grad=False)
        self.config = SimpleNamespace(vocab_size=table.shape[0])

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return SimpleNamespace(logits=self.table[input_ids])


# ---- score_sequences on hand numbers ---------------------------------------------------------------

P = torch.tensor([
    [0.10, 0.50, 0.20, 0.20],  # after token 0: argmax 1
    [0.40, 0.10, 0.25, 0.25],  # after token 1: argmax 0
    [0.10, 0.10, 0.10, 0.70],  # after token 2: argmax 3
    [0.70, 0.10, 0.10, 0.10],  # after token 3: argmax 0
])


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_score_sequences_hand_values(batch_size):
    model = FixedLogits(P.log())
    examples = [
        {"input_ids": [0, 1, 2, 3], "labels": [IGNORE, 1, 2, 3]},  # p = .5, .25, .7 ; argmax hits T F T
        {"input_ids": [3, 0, 1], "labels": [IGNORE, IGNORE, 1]},  # p = .5 ; hit
        {"input_ids": [2, 3, 0, 1, 2], "labels": [IGNORE, IGNORE, 0, 1, 2]},  # p = .7, .5, .25 ; T T F
    ]
    # pad with 3, a real label token: padding must be masked by position, not by id
    out = score_sequences(model, examples, batch_size=batch_size, pad=3)
    a, b, c = out
    assert a.avg_loss == pytest.approx(-(math.log(.5) + math.log(.25) + math.log(.7)) / 3, abs=1e-6)
    assert M.prob(a.avg_loss) == pytest.approx((.5 * .25 * .7) ** (1 / 3), abs=1e-6)
    assert list(a.logprobs) == pytest.approx([math.log(.5), math.log(.25), math.log(.7)], abs=1e-6)
    assert a.correct.tolist() == [True, False, True]
    assert b.avg_loss == pytest.approx(math.log(2), abs=1e-6)
    assert b.correct.tolist() == [True]
    assert c.correct.tolist() == [True, True, False]
    # derived per-item metrics over all answer tokens (the EOS rule is tested below)
    assert M.exact_memorization(a.correct) == pytest.approx(2 / 3)
    assert M.extraction_strength(a.correct) == pytest.approx(1 / 3)
    assert M.extraction_strength(b.correct) == 1.0
    assert M.extraction_strength(c.correct) == pytest.approx(1 / 3)  # no suffix matches: 1/n
    assert M.min_k_score(a.logprobs) == pytest.approx(math.log(4), abs=1e-6)  # int(3 * .4) = 1 lowest: .25
    # truth ratio with a as "true" and b, c as perturbed: exp(l_a - mean(l_b, l_c))
    tr = M.truth_ratio(a.avg_loss, [b.avg_loss, c.avg_loss])
    assert tr == pytest.approx(math.exp(a.avg_loss - (b.avg_loss + c.avg_loss) / 2), abs=1e-6)


# Token 4 plays EOS. Every row puts 0.6 on its argmax and 0.1 on the other four tokens.
_NEXT = {0: 1, 1: 2, 2: 4, 3: 0, 4: 0}
P_EOS = torch.full((5, 5), 0.1)
for _t, _n in _NEXT.items():
    P_EOS[_t, _n] = 0.6


def _memorization(answer: list[int]) -> dict:
    from mpu_cli.evals.tofu import memorization_scores

    ex = {"input_ids": [3, *answer], "labels": [IGNORE, *answer]}  # prompt = token 3
    (score,) = score_sequences(FixedLogits(P_EOS.log()), [ex], batch_size=1, pad=0)
    return memorization_scores(score)


def test_memorization_metrics_leave_the_eos_prediction_out():
    # body and EOS both predicted: every counted token is right
    right = _memorization([0, 1, 2, 4])
    assert right["extraction_strength"] == 1.0 and right["exact_memorization"] == 1.0
    assert right["min_k"] == pytest.approx(-math.log(0.6), abs=1e-6)  # int(3 * .4) -> the lowest 1 of 3
    # the same body, the EOS token mispredicted (label 3, argmax 4): the final prediction does not count
    wrong_eos = _memorization([0, 1, 2, 3])
    assert wrong_eos == pytest.approx(right, abs=1e-6)
    # on all answer tokens the EOS miss would have cost ES its whole suffix and EM a quarter
    (full,) = score_sequences(FixedLogits(P_EOS.log()), [{"input_ids": [3, 0, 1, 2, 3],
                                                           "labels": [IGNORE, 0, 1, 2, 3]}], 1, pad=0)
    assert full.correct.tolist() == [True, True, True, False]


def test_extraction_strength_without_a_matching_suffix_is_one_over_n():
    # after 3 -> 0 right; after 0 label 2 (argmax 1), after 2 label 1 (argmax 4): counted hits T F F
    s = _memorization([0, 2, 1, 4])
    assert s["extraction_strength"] == pytest.approx(1 / 3)  # open-unlearning's loop stops at k = n - 1
    assert s["exact_memorization"] == pytest.approx(1 / 3)
    assert s["min_k"] == pytest.approx(-math.log(0.1), abs=1e-6)
    # a one-token answer is only its EOS: nothing is left to count
    eos_only = _memorization([4])
    assert eos_only["extraction_strength"] == 0.0
    assert math.isnan(eos_only["exact_memorization"]) and math.isnan(eos_only["min_k"])


def test_decode_cuts_at_stop_tokens_and_strings():
    tok = make_tokenizer(chat=True)
    v = tok.get_vocab()
    stops = set(stop_token_ids(tok))
    assert {v["</s>"], v["<|end|>"]} <= stops
    ids = [v["paris"], v["rome"], v["<|end|>"], v["oslo"]]
    assert _decode_new(tok, ids, stops, ()) == "paris rome"
    ids = [v["paris"], v["<s>"], v["question"], v[":"], v["rome"], v["</s>"]]
    assert _decode_new(tok, ids, stops, ()) == "paris question : rome"  # special tokens skipped
    assert _decode_new(tok, ids, stops, ("question :",)) == "paris"


# ---- evaluate() against an independent recomputation ------------------------------------------------

def _ref_stats(table: torch.Tensor, tok, fmt, q: str, a: str):
    """Per-token log-probs and argmax hits recomputed position by position from the table."""
    enc = encode_qa(tok, q, a, fmt)
    ids, labels = enc["input_ids"], enc["labels"]
    logp = torch.log_softmax(table.double(), dim=-1)
    lps, hits = [], []
    for t in range(1, len(ids)):
        if labels[t] == IGNORE:
            continue
        row = logp[ids[t - 1]]
        lps.append(float(row[ids[t]]))
        hits.append(int(row.argmax()) == ids[t])
    return lps, hits


def _avg(lps):
    return -sum(lps) / len(lps)


def test_evaluate_matches_recomputation_from_fixed_distributions(tmp_path):
    tok = make_tokenizer(chat=False)  # the tag-template path
    fmt = ChatFormat()
    data = make_data(n=4, seed=1)
    g = torch.Generator().manual_seed(0)
    table = torch.randn(len(tok), len(tok), generator=g) * 2.0
    # make some answers partly predictable so ES / EM are not trivially 0
    v = tok.get_vocab()
    words = [":", *data["forget"][0]["answer"].split(), "</s>"]  # answer 0, from its first token to EOS
    for w1, w2 in itertools.pairwise(words):
        table[v[w1], v[w2]] = 30.0
    model = FixedLogits(table)
    ref_log = {"forget_truth_ratio": {"agg_value": 0.6, "value_by_index": {
        str(i): {"score": s} for i, s in enumerate([0.3, 0.8, 1.1, 0.5, 0.9])}},
        "mia_min_k": {"agg_value": 0.7}}
    wanted = tuple(m for m in ALL_METRICS if not m.endswith("ROUGE") and m != "model_utility")
    ev = evaluate(model, tok, data, fmt, EvalConfig(batch_size=3, metrics=wanted),
                  retain_reference=ref_log, progress=False)
    assert list(ev) == list(wanted)

    def stats(key, field="answer"):
        return [_ref_stats(table, tok, fmt, r["question"], r[field]) for r in data[key]]

    def pert_losses(key):
        return [[_avg(_ref_stats(table, tok, fmt, r["question"], p)[0]) for p in r["perturbed_answer"]]
                for r in data[key]]

    ans = stats("forget")
    assert ev["forget_Q_A_Prob"]["agg_value"] == pytest.approx(
        sum(math.exp(-_avg(lp)) for lp, _ in ans) / 4, rel=1e-5)
    item = ev["forget_Q_A_Prob"]["value_by_index"]["2"]
    assert item["avg_loss"] == pytest.approx(_avg(ans[2][0]), rel=1e-5)

    def trs_of(key):  # TR over the paraphrased answer
        para = stats(key, "paraphrased_answer")
        return [math.exp(_avg(lp) - sum(pl) / len(pl)) for (lp, _), pl in zip(para, pert_losses(key), strict=False)]

    trs = trs_of("forget")
    assert [ev["forget_truth_ratio"]["value_by_index"][str(i)]["score"] for i in range(4)] == pytest.approx(
        trs, rel=1e-5)
    assert ev["forget_truth_ratio"]["agg_value"] == pytest.approx(
        sum(min(t, 1 / t) for t in trs) / 4, rel=1e-5)
    assert ev["forget_quality"]["agg_value"] == pytest.approx(
        ks_2samp(trs, [0.3, 0.8, 1.1, 0.5, 0.9]).pvalue, rel=1e-5)

    rtrs = trs_of("retain")
    assert ev["retain_Truth_Ratio"]["agg_value"] == pytest.approx(
        sum(max(0.0, 1 - t) for t in rtrs) / 4, rel=1e-5, abs=1e-7)

    for prefix, key in (("ra", "real_authors"), ("wf", "world_facts")):
        la = [_avg(lp) for lp, _ in stats(key)]
        pl = pert_losses(key)
        norm = [math.exp(-a) / (math.exp(-a) + sum(math.exp(-x) for x in p)) for a, p in zip(la, pl, strict=False)]
        assert ev[f"{prefix}_Q_A_Prob_normalised"]["agg_value"] == pytest.approx(sum(norm) / 4, rel=1e-5)
        tr = [math.exp(a - sum(p) / len(p)) for a, p in zip(la, pl, strict=False)]  # over the true answer
        assert ev[f"{prefix}_Truth_Ratio"]["agg_value"] == pytest.approx(
            sum(max(0.0, 1 - t) for t in tr) / 4, rel=1e-5, abs=1e-7)

    def es_ou(hits):  # open-unlearning's loop: the first k whose suffix all matches, else it ends at n - 1
        n = len(hits)
        for k in range(n):
            if all(hits[k:]):
                break
        return 1 - k / n

    # the memorization metrics leave the final (EOS) prediction out, as open-unlearning does
    es = [es_ou(h[:-1]) for _, h in ans]
    em = [sum(h[:-1]) / len(h[:-1]) for _, h in ans]
    assert es[0] == 1.0 and em[0] == 1.0  # the boosted answer is fully extractable
    assert ev["extraction_strength"]["agg_value"] == pytest.approx(sum(es) / 4)
    assert ev["exact_memorization"]["agg_value"] == pytest.approx(sum(em) / 4)

    def mink(lps):
        s = sorted(lps)
        n = max(1, int(len(s) * 0.4))
        return -sum(s[:n]) / n

    f_scores = [mink(lp[:-1]) for lp, _ in ans]
    h_scores = [mink(lp[:-1]) for lp, _ in stats("holdout")]
    wins = sum((h > f) + 0.5 * (h == f) for h in h_scores for f in f_scores)
    auc = wins / (len(f_scores) * len(h_scores))
    assert ev["mia_min_k"]["agg_value"] == pytest.approx(auc)
    assert ev["mia_min_k"]["forget"]["value_by_index"]["1"]["score"] == pytest.approx(f_scores[1], rel=1e-5)
    assert ev["privleak"]["agg_value"] == pytest.approx(((1 - auc) - 0.3) / 0.3 * 100, rel=1e-6)


def test_uniform_model_and_missing_reference():
    tok = make_tokenizer(chat=True)
    data = make_data(n=3, seed=2)
    model = FixedLogits(torch.zeros(len(tok), len(tok)))
    wanted = ("forget_Q_A_Prob", "forget_quality", "ra_Q_A_Prob_normalised", "retain_Truth_Ratio",
              "privleak", "exact_memorization", "extraction_strength")
    ev = evaluate(model, tok, data, ChatFormat(), EvalConfig(batch_size=2, metrics=wanted), progress=False)
    # no retain reference: forget_quality omitted (its truth ratio still reported), privleak vs AUC_retain 0.5
    assert "forget_quality" not in ev
    assert ev["forget_truth_ratio"]["agg_value"] == pytest.approx(1.0)
    assert ev["forget_Q_A_Prob"]["agg_value"] == pytest.approx(1 / len(tok))
    assert ev["ra_Q_A_Prob_normalised"]["agg_value"] == pytest.approx(1 / 5)  # answer + 4 perturbed
    assert ev["retain_Truth_Ratio"]["agg_value"] == pytest.approx(0.0, abs=1e-6)
    assert ev["mia_min_k"]["agg_value"] == pytest.approx(0.5)
    assert ev["privleak"]["agg_value"] == pytest.approx(0.0, abs=1e-6)
    assert ev["exact_memorization"]["agg_value"] == 0.0  # argmax is <pad>, never a label
    # nothing is ever predicted, so no suffix matches: 1/n per item over the n tokens before the EOS
    n = [sum(lab != IGNORE for lab in encode_qa(tok, r["question"], r["answer"], ChatFormat())["labels"]) - 1
         for r in data["forget"]]
    assert ev["extraction_strength"]["agg_value"] == pytest.approx(sum(1 / k for k in n) / len(n))
    # missing holdout -> the attack and privleak are skipped
    ev = evaluate(model, tok, {k: v for k, v in data.items() if k != "holdout"}, ChatFormat(),
                  EvalConfig(metrics=("privleak", "forget_Q_A_Prob")), progress=False)
    assert list(ev) == ["forget_Q_A_Prob"]


# ---- batch-size invariance on a small random Llama ----------------------------------------------------

def tiny_llama(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      initializer_range=0.3, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(cfg).float()
    # sampling defaults as shipped with instruct models: the evaluator must override them silently
    model.generation_config.do_sample = True
    model.generation_config.temperature = 0.6
    model.generation_config.top_p = 0.9
    return model


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.msgs = []

    def emit(self, record):
        self.msgs.append(record.getMessage())


def _assert_same(a, b, path=""):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, str):
        assert a == b, path
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert b == pytest.approx(a, rel=1e-5, abs=1e-5), path


def test_every_metric_is_batch_size_invariant():
    tok = make_tokenizer(chat=True)
    model = tiny_llama(tok)
    data = make_data(n=5, seed=3)
    reference = {"forget_tr": [0.2, 0.5, 0.9, 1.3, 2.0], "mia_auc": 0.55}
    was_training = model.training
    hf_logger = logging.getLogger("transformers")
    rec = _Records()
    hf_logger.addHandler(rec)
    try:
        runs = [evaluate(model, tok, data, ChatFormat(), EvalConfig(batch_size=bs, max_new_tokens=8),
                         retain_reference=reference, progress=False) for bs in (1, 3)]
    finally:
        hf_logger.removeHandler(rec)
    ev1, ev3 = runs
    assert list(ev1) == list(ALL_METRICS)
    _assert_same(ev1, ev3)
    gens = [ev1[m]["value_by_index"][str(i)]["generation"]
            for m in ev1 if m.endswith("ROUGE") for i in range(5)]
    assert any(gens) and all("<" not in g for g in gens)  # no special tokens leak into generations
    assert ev1["model_utility"]["agg_value"] == pytest.approx(
        M.model_utility([ev1[m]["agg_value"] for m in UTILITY_METRICS]))
    assert model.training == was_training  # mode restored
    assert model.generation_config.do_sample and model.generation_config.temperature == 0.6
    noisy = [m for m in rec.msgs if "generation" in m.lower() or "temperature" in m or "pad" in m]
    assert not noisy, noisy


def test_generation_left_padding_matches_single_and_quick_metrics():
    tok = make_tokenizer(chat=False)
    model = tiny_llama(tok)
    prompts = [tok("you are a helpful assistant . question : " + q, add_special_tokens=False)["input_ids"]
               for q in ("who wrote", "what city born paris rome", "when")]
    one = [generate_greedy(model, tok, [p], 1, 6)[0] for p in prompts]
    assert generate_greedy(model, tok, prompts, 3, 6) == one
    data = make_data(n=3, seed=4)
    data = {k: data[k] for k in ("forget", "retain")}
    ev = evaluate(model, tok, data, ChatFormat(), EvalConfig(batch_size=2, max_new_tokens=4,
                                                            metrics=QUICK_METRICS), progress=False)
    assert list(ev) == list(QUICK_METRICS)
    item = ev["forget_Q_A_ROUGE"]["value_by_index"]["0"]
    assert set(item) >= {"rougeL_recall", "rouge1_recall", "input", "ground_truth", "generation"}
    assert item["ground_truth"] == data["forget"][0]["answer"]
