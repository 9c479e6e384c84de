"""The audit's float64 work in slices (attacks.CHUNK_ELEMENTS) gives the numbers of the whole-tensor computation:
the hull points bit for bit, the sums up to the order of summation."""

import pytest
import torch

from helpers import MODELS, SMALL, publish, target_and_base
from mpu_cli.audit import ClientView, Scorer, attacks, client_attacks, score_client_attacks
from mpu_cli.audit.attacks import _HullModel, float64_slices, hull_gram, row_slices

torch.set_num_threads(1)

TINY = 50  # smaller than one row of most tensors of the small model: every tensor is cut into many slices


def test_row_slices_cover_every_row_once():
    t = torch.arange(37 * 5, dtype=torch.float32).reshape(37, 5)
    parts = list(float64_slices(t, elements=12))
    assert len(parts) == 19  # 2 rows (10 elements) per slice
    assert all(p.numel() <= 12 for (p,) in parts)
    torch.testing.assert_close(torch.cat([p for (p,) in parts]), t.double(), rtol=0, atol=0)
    assert [s for s in row_slices(t, elements=3)] == [slice(i, i + 1) for i in range(37)]  # at least one row
    assert list(row_slices(torch.tensor(2.0), elements=1)) == [...]  # 0-d: whole
    assert list(row_slices(t)) == [...]  # small: whole


def _attacks(copies, base, layout):
    est = client_attacks(ClientView(copies=copies, base=base, layout=layout))
    return est, hull_gram(est.aligned["A3"], base)


def _reference_gram(aligned, base):
    """G and b from whole float64 tensors, written out independently."""
    names = list(aligned[0])
    flat = [torch.cat([a[n].double().reshape(-1) for n in names]) for a in aligned]
    target = torch.cat([base[n].double().reshape(-1) for n in names])
    dirs = [x - flat[0] for x in flat[1:]]
    gram = torch.tensor([[float(d @ e) for e in dirs] for d in dirs], dtype=torch.float64)
    return gram.numpy(), torch.tensor([float(d @ (target - flat[0])) for d in dirs], dtype=torch.float64).numpy()


def test_sliced_audit_equals_whole_tensors(monkeypatch):
    theta, base, layout = target_and_base()
    server, copies = publish(theta, base, layout, kappa=0.1, m=3)
    scorer = Scorer(server.theta, base, server.private_state(), layout)
    whole_est, (whole_g, whole_b) = _attacks(copies, base, layout)
    whole = score_client_attacks(whole_est, scorer, copies, server.exposed_fraction())

    monkeypatch.setattr(attacks, "CHUNK_ELEMENTS", TINY)
    assert len(list(row_slices(theta["model.embed_tokens.weight"]))) == 64  # sliced indeed
    est, (g, b) = _attacks(copies, base, layout)
    sliced = score_client_attacks(est, Scorer(server.theta, base, server.private_state(), layout), copies,
                                  server.exposed_fraction())

    ref_g, ref_b = _reference_gram(est.aligned["A3"], base)
    for got in ((g, b), (whole_g, whole_b)):
        assert got[0] == pytest.approx(ref_g, rel=1e-10)
        assert got[1] == pytest.approx(ref_b, rel=1e-10)
    assert est.hull_weights == pytest.approx(whole_est.hull_weights, rel=1e-9)
    # the same weights give the same hull point bit for bit (elementwise: no summation order involved)
    point = attacks.HullPoint(est.aligned["A3"], whole_est.hull_weights)
    for name in theta:
        assert torch.equal(point[name], whole_est.estimates["A5"][name]), name
    for attack, values in whole.items():
        for key, v in values.items():
            if isinstance(v, float):
                assert sliced[attack][key] == pytest.approx(v, rel=1e-7, abs=1e-12), (attack, key)


def test_sliced_hull_gradient_equals_whole_tensors(monkeypatch):
    """A6's gradient in hull coordinates g_i = ⟨∇L, x_{i+1} − x_1⟩, sliced and whole."""
    config_cls, model_cls = MODELS["llama"]
    torch.manual_seed(0)
    model = model_cls(config_cls(**SMALL))
    theta, base, layout = target_and_base()
    _, copies = publish(theta, base, layout, kappa=0.1, m=3)
    aligned = client_attacks(ClientView(copies=copies, base=base, layout=layout)).aligned["A3"]
    ids = torch.arange(24).reshape(2, 12) % SMALL["vocab_size"]

    def loss(mod) -> float:
        mod.zero_grad(set_to_none=True)
        value = mod(input_ids=ids).logits.float().logsumexp(-1).mean()
        value.backward()
        return float(value.detach())

    coef = [0.2, -0.1]
    value, whole = _HullModel(aligned, model, loss).value_and_grad(coef)
    monkeypatch.setattr(attacks, "CHUNK_ELEMENTS", TINY)
    value_sliced, sliced = _HullModel(aligned, model, loss).value_and_grad(coef)
    assert value_sliced == value
    assert sliced == pytest.approx(whole, rel=1e-10)
    assert abs(whole).max() > 0
