"""SimNPO, IdkDPO, UNDIAL, WGA, SatImp and RMU against values computed by hand, and the client hooks they use
(refusal answers for IdkDPO, RMU's trainable subset and layer hidden states)."""
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from helpers import BigramLM, answer_pairs, hand_logp
from mpu_cli.data.formatting import collate_right
from mpu_cli.unlearn.algorithms import ALGORITHMS, build_algorithm
from mpu_cli.unlearn.base import block_output, scaled_layer
from mpu_cli.unlearn.client import ClientConfig, ClientData, encode_client_data, unlearn_copy

V = 7
FORGET = [{"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4]},
          {"input_ids": [5, 1, 6], "labels": [-100, 1, 6]}]
# Same prompts as FORGET, other ("refusal") answers.
IDK = [{"input_ids": [1, 2, 0, 5, 2], "labels": [-100, -100, 0, 5, 2]},
       {"input_ids": [5, 3], "labels": [-100, 3]}]
RETAIN = [{"input_ids": [2, 2, 5], "labels": [-100, -100, 5]},
          {"input_ids": [6, 3, 1, 0], "labels": [-100, 3, 1, 0]}]


def _batch(rows):
    return collate_right(rows, pad=0)


def _forget_batch(with_idk=False):
    f = _batch(FORGET)
    if with_idk:
        f["idk"] = _batch(IDK)
    return f


def _seq_logps(table, rows):
    return [sum(hand_logp(table, a, b) for a, b in answer_pairs(r["input_ids"], r["labels"])) for r in rows]


def _token_logps(table, rows):
    return [hand_logp(table, a, b) for r in rows for a, b in answer_pairs(r["input_ids"], r["labels"])]


def _nll_mean(table, rows):
    lps = _token_logps(table, rows)
    return -sum(lps) / len(lps)


def _logsig(x):
    return -math.log1p(math.exp(-x))


def _models():
    model, ref = BigramLM(V, 0), BigramLM(V, 1)
    return model, ref, model.table.detach(), ref.table.detach()


def test_registry_has_all_nine():
    assert set(ALGORITHMS) == {"ga", "graddiff", "npo", "simnpo", "idkdpo", "undial", "wga", "satimp", "rmu"}


def test_reference_only_where_used():
    built = {n: build_algorithm(n, {}) for n in ALGORITHMS}
    assert {n for n, a in built.items() if a.needs_reference} == {"npo", "idkdpo", "undial", "rmu"}
    assert build_algorithm("simnpo", {"retain_loss_type": "KL"}).needs_reference
    assert not build_algorithm("rmu", {"retain_loss_type": "NLL"}).needs_reference
    assert not built["undial"].uses_retain  # alpha = 0: no retain data at all
    assert build_algorithm("undial", {"alpha": 1.0}).uses_retain
    assert built["idkdpo"].needs_idk and not built["npo"].needs_idk


def test_simnpo_matches_its_formula():
    model, _, t, _ = _models()
    beta, delta, gamma, alpha = 4.5, 0.3, 0.125, 2.0
    algo = build_algorithm("simnpo", {"beta": beta, "delta": delta, "gamma": gamma, "alpha": alpha})
    assert not algo.needs_reference
    forget = 0.0
    for row, lp in zip(FORGET, _seq_logps(t, FORGET)):
        n = len(answer_pairs(row["input_ids"], row["labels"]))
        forget += -(2 / beta) * _logsig(beta * (-lp / n - delta)) / len(FORGET)
    got = algo.loss(model, _batch(FORGET), _batch(RETAIN), None).item()
    assert got == pytest.approx(gamma * forget + alpha * _nll_mean(t, RETAIN), rel=1e-5)


def test_idkdpo_matches_its_formula():
    model, ref, t, r = _models()
    beta = 0.1
    algo = build_algorithm("idkdpo", {"beta": beta, "gamma": 1.0, "alpha": 0.5})
    win = [a - b for a, b in zip(_seq_logps(t, IDK), _seq_logps(r, IDK))]
    lose = [a - b for a, b in zip(_seq_logps(t, FORGET), _seq_logps(r, FORGET))]
    forget = sum(-(2 / beta) * _logsig(beta * (w - lo)) for w, lo in zip(win, lose)) / len(win)
    got = algo.loss(model, _forget_batch(with_idk=True), _batch(RETAIN), ref).item()
    assert got == pytest.approx(forget + 0.5 * _nll_mean(t, RETAIN), rel=1e-5)
    with pytest.raises(ValueError, match="idk"):
        algo.loss(model, _forget_batch(), _batch(RETAIN), ref)


def test_undial_matches_its_formula_over_answer_tokens_only():
    model, ref, t, r = _models()
    beta = 10.0
    ces = []
    for row in FORGET:
        for prev, nxt in answer_pairs(row["input_ids"], row["labels"]):
            adjusted = r[prev].tolist()
            adjusted[nxt] -= beta
            z = sum(math.exp(x) for x in adjusted)
            soft = [math.exp(x) / z for x in adjusted]
            ces.append(-sum(s * hand_logp(t, prev, k) for k, s in enumerate(soft)))
    expected = sum(ces) / len(ces)
    algo = build_algorithm("undial", {"beta": beta})
    assert algo.loss(model, _batch(FORGET), None, ref).item() == pytest.approx(expected, rel=1e-5)
    # Prompt positions don't count: here only 1 -> 2 is an answer pair, so the rows of token 6 (which only
    # predicts prompt tokens) can change freely.
    rows = [{"input_ids": [6, 6, 1, 2], "labels": [-100, -100, -100, 2]}]
    before = algo.loss(model, _batch(rows), None, ref).item()
    with torch.no_grad():
        model.table[6] += 5.0
        ref.table[6] -= 3.0
    assert algo.loss(model, _batch(rows), None, ref).item() == pytest.approx(before, rel=1e-6)
    # With alpha the retain NLL is added.
    algo = build_algorithm("undial", {"beta": beta, "alpha": 1.0})
    model, ref, t, r = _models()
    got = algo.loss(model, _batch(FORGET), _batch(RETAIN), ref).item()
    assert got == pytest.approx(expected + _nll_mean(t, RETAIN), rel=1e-5)


@pytest.mark.parametrize("name,params,weight", [
    ("wga", {"beta": 2.0}, lambda p: p ** 2.0),
    ("satimp", {"beta1": 5.0, "beta2": 1.5}, lambda p: p ** 5.0 * (1 - p) ** 1.5),
])
def test_weighted_ascent_matches_its_formula(name, params, weight):
    model, _, t, _ = _models()
    algo = build_algorithm(name, params | {"gamma": 1.5, "alpha": 0.1})
    lps = _token_logps(t, FORGET)
    forget = -sum(weight(math.exp(lp)) * -lp for lp in lps) / len(lps)
    got = algo.loss(model, _batch(FORGET), _batch(RETAIN), None).item()
    assert got == pytest.approx(1.5 * forget + 0.1 * _nll_mean(t, RETAIN), rel=1e-5)


@pytest.mark.parametrize("name", ["wga", "satimp"])
def test_weights_are_detached(name):
    """The gradient is weight * d(log p): as if the weight were a constant."""
    model = BigramLM(V, 0)
    algo = build_algorithm(name, {"alpha": 0.0})
    algo.loss(model, _batch(FORGET), None, None).backward()
    got = model.table.grad.clone()
    model.table.grad = None
    logp = torch.log_softmax(model.table, -1)
    pairs = [p for r in FORGET for p in answer_pairs(r["input_ids"], r["labels"])]
    lp = torch.stack([logp[a, b] for a, b in pairs])
    w = lp.detach().exp()
    w = w if name == "wga" else w ** 5 * (1 - w)
    (w * lp).mean().backward()
    assert torch.allclose(got, model.table.grad, atol=1e-6)


def test_padding_does_not_change_any_loss():
    padded = [dict(r, input_ids=r["input_ids"] + [0, 0], labels=r["labels"] + [-100, -100]) for r in FORGET]
    for name in ["simnpo", "idkdpo", "undial", "wga", "satimp"]:
        model, ref, _, _ = _models()
        algo = build_algorithm(name, {})
        a = algo.loss(model, _forget_batch(True), _batch(RETAIN), ref).item()
        f = collate_right(padded, pad=0)
        f["attention_mask"][:, -2:] = 0
        f["idk"] = _batch(IDK)
        assert algo.loss(model, f, _batch(RETAIN), ref).item() == pytest.approx(a, rel=1e-6), name


@pytest.mark.parametrize("name,params", [
    ("idkdpo", {"retain_loss_type": "KL"}), ("undial", {"alpha": 1.0, "retain_loss_type": "KL"}),
    ("simnpo", {"retain_loss_type": "KL"}), ("wga", {"retain_loss_type": "KL"}),
    ("satimp", {"retain_loss_type": "KL"}),
])
def test_no_gradient_reaches_the_reference(name, params):
    model, ref, _, _ = _models()
    ref.requires_grad_(False)
    algo = build_algorithm(name, params)
    assert algo.needs_reference
    algo.loss(model, _forget_batch(True), _batch(RETAIN), ref).backward()
    assert model.table.grad is not None and model.table.grad.abs().sum() > 0
    assert ref.table.grad is None


# --- RMU on a real (tiny) decoder ------------------------------------------------------------------------


def _tiny_llama(seed=0, layers=4):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=24, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16)
    return LlamaForCausalLM(cfg).eval()


def test_rmu_layer_scales_with_depth():
    assert scaled_layer(16) == 7 and scaled_layer(4) == 2 and scaled_layer(32) == 14 and scaled_layer(1) == 0
    model = _tiny_llama()
    algo = build_algorithm("rmu", {})
    assert algo.layer(model) == 2
    assert algo.trainable_parameters(model) == [f"model.layers.{i}.mlp.down_proj.weight" for i in (0, 1, 2)]
    assert build_algorithm("rmu", {"layer": 1}).trainable_parameters(model) == [
        "model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    with pytest.raises(ValueError, match="matches no parameter"):
        build_algorithm("rmu", {"trainable_params_regex": "nothing"}).trainable_parameters(model)


def test_block_output_is_the_hidden_state_after_block_l():
    model = _tiny_llama()
    batch = _batch(FORGET)
    hs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
               output_hidden_states=True).hidden_states
    for L in range(3):  # the last entry of hidden_states has the final norm applied; blocks 0..2 don't
        assert torch.allclose(block_output(model, batch, L), hs[L + 1], atol=1e-6)


def test_rmu_matches_its_formula():
    model, ref = _tiny_llama(0), _tiny_llama(1)
    L, c = 1, 3.0
    algo = build_algorithm("rmu", {"layer": L, "steering_coeff": c, "gamma": 1.0, "alpha": 2.0})
    f, r = _batch(FORGET), _batch(RETAIN)
    with torch.no_grad():
        hf = model(input_ids=f["input_ids"], attention_mask=f["attention_mask"], output_hidden_states=True)
        hr = model(input_ids=r["input_ids"], attention_mask=r["attention_mask"], output_hidden_states=True)
        hr_ref = ref(input_ids=r["input_ids"], attention_mask=r["attention_mask"], output_hidden_states=True)
    u = algo.unit_vector(16)
    assert u.norm().item() == pytest.approx(1.0) and torch.equal(u, build_algorithm("rmu", {}).unit_vector(16))

    def dist(h, target, rows):
        per_seq = []
        for i, row in enumerate(rows):
            pos = [t for t, lab in enumerate(row["labels"]) if lab != -100]
            per_seq.append(sum(((h[i, t] - target(i, t)) ** 2).mean().item() for t in pos) / len(pos))
        return sum(per_seq) / len(per_seq)

    forget = dist(hf.hidden_states[L + 1], lambda i, t: c * u, FORGET)
    retain = dist(hr.hidden_states[L + 1], lambda i, t: hr_ref.hidden_states[L + 1][i, t], RETAIN)
    got = algo.loss(model, f, r, ref).item()
    assert got == pytest.approx(forget + 2.0 * retain, rel=1e-5)


def test_rmu_client_step_updates_only_its_parameters_and_not_the_reference():
    model = _tiny_llama(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    algo = build_algorithm("rmu", {})
    trainable = set(algo.trainable_parameters(model))
    model.model.layers[0].mlp.up_proj.weight.requires_grad_(False)  # the caller's own flags survive
    cfg = ClientConfig(lr=1e-2, epochs=2, batch_size=1, grad_accum=2)
    out = unlearn_copy(model, before, algo, ClientData(FORGET, RETAIN), cfg, pad=0)
    changed = {k for k in before if not torch.equal(before[k], out[k])}
    assert changed == trainable
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    assert flags.pop("model.layers.0.mlp.up_proj.weight") is False and all(flags.values())


def test_rmu_reference_gets_no_gradient():
    model, ref = _tiny_llama(0), _tiny_llama(1)
    ref.requires_grad_(False)
    algo = build_algorithm("rmu", {})
    algo.loss(model, _batch(FORGET), _batch(RETAIN), ref).backward()
    assert all(p.grad is None for p in ref.parameters())
    assert model.model.layers[2].mlp.down_proj.weight.grad.abs().sum() > 0


# --- client hooks --------------------------------------------------------------------------------------


def test_client_reference_is_frozen_and_idk_is_collated():
    """A client step with IdkDPO: the forget batch carries the refusal answers; the reference never moves."""
    seen = {}
    algo = build_algorithm("idkdpo", {})
    original = algo.loss

    def spy(model, forget, retain, ref):
        seen.setdefault("ref_table", ref.table.detach().clone())
        assert not ref.table.requires_grad
        seen["idk_rows"] = forget["idk"]["input_ids"].shape[0]
        assert forget["idk"]["input_ids"].shape[0] == forget["input_ids"].shape[0]
        loss = original(model, forget, retain, ref)
        seen["ref_after"] = ref.table.detach().clone()
        return loss

    algo.loss = spy
    model = BigramLM(V, 0)
    published = {k: v.clone() for k, v in model.state_dict().items()}
    out = unlearn_copy(model, published, algo, ClientData(FORGET, RETAIN, IDK),
                       ClientConfig(lr=1e-1, epochs=2, batch_size=1, grad_accum=1), pad=0)
    assert torch.equal(seen["ref_table"], published["table"]) and torch.equal(seen["ref_after"], published["table"])
    assert not torch.equal(out["table"], published["table"])
    with pytest.raises(ValueError, match="refusal"):
        unlearn_copy(model, published, build_algorithm("idkdpo", {}), ClientData(FORGET, RETAIN),
                     ClientConfig(epochs=1), pad=0)


def test_encode_client_data_adds_seeded_refusals():
    from mpu_cli.data.formatting import ChatFormat
    from mpu_cli.data.tofu import load_idk
    from mpu_cli.models.tiny import load_embedded_tokenizer

    tok, fmt = load_embedded_tokenizer(), ChatFormat()
    algo = build_algorithm("idkdpo", {})
    a = encode_client_data(tok, fmt, "embedded", "forget01", algo, seed=0)
    b = encode_client_data(tok, fmt, "embedded", "forget01", algo, seed=0)
    assert a.idk == b.idk and len(a.idk) == len(a.forget) > 0
    refusals = {tok.decode([t for t, lab in zip(r["input_ids"], r["labels"]) if lab != -100],
                           skip_special_tokens=True).strip() for r in a.idk}
    assert refusals <= {s.strip() for s in load_idk("embedded")}
    for f, i in zip(a.forget, a.idk):  # same prompt, other answer
        n = f["labels"].index(next(lab for lab in f["labels"] if lab != -100))
        assert i["input_ids"][:n] == f["input_ids"][:n]
    assert encode_client_data(tok, fmt, "embedded", "forget01", build_algorithm("npo", {})).idk is None
