"""The noise common to all copies (server.common_noise) and the client attack that fits the hull to its own data
(A6), checked where the answer is known by construction."""

import math

import pytest
import torch
from helpers import publish, target_and_base
from torch import nn

from mpu_cli.audit import Scorer
from mpu_cli.audit.attacks import a6_hull_fit
from mpu_cli.mpu import ServerConfig, block_of, invert_transform
from mpu_cli.mpu.noise import ZeroSumNoise

torch.set_num_threads(1)


def _rms(t: torch.Tensor) -> float:
    return float(t.double().square().mean().sqrt())


def _blocks(state: dict) -> dict[int, torch.Tensor]:
    """All elements of each transformer block, flattened."""
    out: dict[int, list] = {}
    for name, t in state.items():
        layer = block_of(name)
        if layer is not None:
            out.setdefault(layer, []).append(t.double().reshape(-1))
    return {layer: torch.cat(ts) for layer, ts in out.items()}


# ---- server.common_noise -------------------------------------------------------------------------------------

def test_common_noise_is_off_by_default_and_checked():
    assert ServerConfig().common_noise == 0.0
    with pytest.raises(ValueError, match="common_noise"):
        ServerConfig(common_noise=-1.0)
    with pytest.raises(ValueError, match="common_noise"):
        ServerConfig(arm="noised", m=1, common_noise=1.0)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_copies_differ_from_theta_by_the_stated_scale(gamma):
    """T_k⁻¹(copy_k) − θ = α_k ε⁰_k + c: per-element std σ_l·sqrt(α_k² + γ²); the harmonic combination leaves
    exactly c, of std γ·σ_l, the same in every copy."""
    theta, base, layout = target_and_base()
    server, copies = publish(theta, base, layout, kappa=0.1, m=2, common_noise=gamma)
    secrets = server.private_state()
    exact = _blocks(server.theta)
    for k, copy in enumerate(copies):
        back = _blocks(invert_transform({n: t.double() for n, t in copy.items()}, layout, secrets["transforms"][k]))
        for layer, x in back.items():
            want = secrets["sigmas"][layer] * math.sqrt(secrets["alphas"][k] ** 2 + gamma ** 2)
            assert _rms(x - exact[layer]) == pytest.approx(want, rel=0.03)
    common = _blocks(Scorer(server.theta, base, secrets, layout).oracle(copies))
    for layer, x in common.items():
        assert _rms(x - exact[layer]) == pytest.approx(gamma * secrets["sigmas"][layer], rel=0.03)


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_the_aggregate_keeps_the_common_noise_to_first_order(gamma):
    """A linear client (Δ = −λ·x, equivariant under every T): θ_r = θ − λ(θ + c), so θ_r's error against the
    noise-free update is −λ·c, the common noise through the client's Jacobian — and 0 without common noise."""
    lam = 0.3
    theta, base, layout = target_and_base()
    server, copies = publish(theta, base, layout, kappa=0.1, m=3, common_noise=gamma)
    exact = {n: t.clone() for n, t in server.theta.items()}
    common = Scorer(exact, base, server.private_state(), layout).oracle(copies)
    c = {n: common[n].double() - exact[n].double() for n in exact}
    new = server.aggregate([{n: (1 - lam) * t.float() for n, t in copy.items()} for copy in copies])
    for name, x in exact.items():
        error = new[name].double() - (1 - lam) * x.double()
        torch.testing.assert_close(error, -lam * c[name], rtol=0, atol=2e-6)
    rms = math.sqrt(sum(float(v.square().sum()) for v in c.values()) / sum(v.numel() for v in c.values()))
    assert rms > 1e-4 if gamma else rms < 1e-7  # σ_l ≈ 2e-3 here; without common noise: round-off only


# ---- A6 on hand-built copies ---------------------------------------------------------------------------------

def _linear_problem(common_scale: float, m: int = 3):
    """θ: a linear map; the client's data D_f = {(x, θx)} is fitted exactly by θ alone. Copies built by hand in
    aligned coordinates: x_k = θ + α_k ε⁰_k + c (c common to all copies)."""
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(6, 16, generator=g, dtype=torch.float64)
    inputs = torch.randn(64, 16, generator=g, dtype=torch.float64)
    targets = inputs @ theta.T
    sigma, alphas = 0.1, [1.0, 1.5, 2.0][:m]
    eps = ZeroSumNoise(theta.shape, sigma, seeds=list(range(10, 10 + m)))
    c = common_scale * sigma * torch.randn(theta.shape, generator=g, dtype=torch.float64)
    copies = [{"weight": (theta + eps.copy(k, alphas[k]).double() + c).float()} for k in range(m)]
    model = nn.Linear(16, 6, bias=False, dtype=torch.float64)

    def loss(mod) -> float:
        mod.zero_grad(set_to_none=True)
        value = (mod(inputs) - targets).square().mean()
        value.backward()
        return float(value.detach())

    return theta, c, copies, model, loss


def test_a6_recovers_theta_exactly_without_common_noise():
    theta, _, copies, model, loss = _linear_problem(0.0)
    start = [1 / 3] * 3  # any start: the loss is quadratic on the hull, minimal at θ
    est, weights, info = a6_hull_fit(copies, start, model, loss)
    err = float((est["weight"].double() - theta).norm())
    spread = float((copies[0]["weight"].double() - theta).norm())
    assert err < 1e-5 * spread
    assert sum(weights) == pytest.approx(1.0)
    assert info["loss_fit"] < 1e-8 < info["loss_start"]
    # the weights found are the harmonic ones (α_k⁻¹ / Σ α_j⁻¹): they are what puts θ on the hull
    inv = [1 / a for a in (1.0, 1.5, 2.0)]
    assert weights == pytest.approx([i / sum(inv) for i in inv], abs=1e-4)


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_a6_misses_theta_by_the_common_noise(scale):
    """The hull passes through θ + c instead of θ: the best fit is off by c, less its small projection on the
    hull's m − 1 directions."""
    theta, c, copies, model, loss = _linear_problem(scale)
    est, _, _ = a6_hull_fit(copies, [1 / 3] * 3, model, loss)
    err = float((est["weight"].double() - theta).norm())
    assert 0.8 * float(c.norm()) < err <= 1.0001 * float(c.norm())
