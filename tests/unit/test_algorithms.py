"""Client losses against values computed by hand on a bigram model (every probability known)."""
import math

import pytest
import torch

from helpers import BigramLM, answer_pairs, hand_logp
from mpu_cli.data.formatting import collate_right
from mpu_cli.unlearn.algorithms import ALGORITHMS, build_algorithm

V = 7
FORGET = [{"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4]},
          {"input_ids": [5, 1, 6], "labels": [-100, 1, 6]}]
RETAIN = [{"input_ids": [2, 2, 5], "labels": [-100, -100, 5]},
          {"input_ids": [6, 3, 1, 0], "labels": [-100, 3, 1, 0]}]


def _batch(rows):
    return collate_right(rows, pad=0)


def _seq_logps(table, rows):
    return [sum(hand_logp(table, a, b) for a, b in answer_pairs(r["input_ids"], r["labels"])) for r in rows]


def _nll_mean(table, rows):
    pairs = [p for r in rows for p in answer_pairs(r["input_ids"], r["labels"])]
    return -sum(hand_logp(table, a, b) for a, b in pairs) / len(pairs)


def test_registry_has_the_first_three():
    assert {"ga", "graddiff", "npo"} <= set(ALGORITHMS)
    with pytest.raises(ValueError, match="not one of"):
        build_algorithm("nope", {})


def test_gradascent_is_negative_mean_nll():
    model = BigramLM(V)
    loss = build_algorithm("ga", {}).loss(model, _batch(FORGET), None, None)
    assert loss.item() == pytest.approx(-_nll_mean(model.table.detach(), FORGET), rel=1e-5)


def test_graddiff_nll_and_kl():
    model, ref = BigramLM(V, 0), BigramLM(V, 1)
    t, r = model.table.detach(), ref.table.detach()
    algo = build_algorithm("graddiff", {"gamma": 0.5, "alpha": 2.0})
    got = algo.loss(model, _batch(FORGET), _batch(RETAIN), None).item()
    assert got == pytest.approx(-0.5 * _nll_mean(t, FORGET) + 2.0 * _nll_mean(t, RETAIN), rel=1e-5)

    algo = build_algorithm("graddiff", {"retain_loss_type": "KL"})
    assert algo.needs_reference
    kls = []
    for row in RETAIN:
        for prev, _ in answer_pairs(row["input_ids"], row["labels"]):
            p = torch.softmax(r[prev], -1).tolist()
            q = torch.softmax(t[prev], -1).tolist()
            kls.append(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)))
    got = algo.loss(model, _batch(FORGET), _batch(RETAIN), ref).item()
    assert got == pytest.approx(-_nll_mean(t, FORGET) + sum(kls) / len(kls), rel=1e-5)


def test_npo_matches_its_formula():
    model, ref = BigramLM(V, 0), BigramLM(V, 1)
    t, r = model.table.detach(), ref.table.detach()
    beta = 0.1
    algo = build_algorithm("npo", {"beta": beta, "gamma": 1.0, "alpha": 1.0})
    lp, lp_ref = _seq_logps(t, FORGET), _seq_logps(r, FORGET)
    # -(2/beta) log sigmoid(-beta (log pi_theta - log pi_ref)), mean over items
    forget = sum(-(2 / beta) * math.log(1 / (1 + math.exp(beta * (a - b)))) for a, b in zip(lp, lp_ref)) / len(lp)
    got = algo.loss(model, _batch(FORGET), _batch(RETAIN), ref).item()
    assert got == pytest.approx(forget + _nll_mean(t, RETAIN), rel=1e-5)


def test_no_gradient_reaches_the_reference():
    model, ref = BigramLM(V, 0), BigramLM(V, 1)
    algo = build_algorithm("npo", {"retain_loss_type": "KL"})
    algo.loss(model, _batch(FORGET), _batch(RETAIN), ref).backward()
    assert model.table.grad is not None and model.table.grad.abs().sum() > 0
    assert ref.table.grad is None


def test_padding_does_not_change_the_loss():
    """Masking is by position: extra pad columns leave every loss unchanged."""
    model, ref = BigramLM(V, 0), BigramLM(V, 1)
    algo = build_algorithm("npo", {})
    a = algo.loss(model, _batch(FORGET), _batch(RETAIN), ref).item()
    padded = [dict(r, input_ids=r["input_ids"] + [0, 0], labels=r["labels"] + [-100, -100]) for r in FORGET]
    f = collate_right(padded, pad=0)
    f["attention_mask"][:, -2:] = 0
    assert algo.loss(model, f, _batch(RETAIN), ref).item() == pytest.approx(a, rel=1e-6)


def test_batches_follow_the_model_to_its_device():
    """The plain client loop moves every collated tensor (the IdkDPO refusals nested inside) to the model's
    device; `meta` stands in for a GPU here."""
    from mpu_cli.devices import batch_to, pick_device

    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "idk": {"labels": torch.zeros(2, 3)}, "n": 2}
    moved = batch_to(batch, torch.device("meta"))
    assert moved["input_ids"].is_meta and moved["idk"]["labels"].is_meta and moved["n"] == 2
    assert batch_to(None, torch.device("meta")) is None
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
