"""Harmonic weights cancel the first-order noise term; what remains scales as κ²."""

import pytest
import torch

from mpu_cli.mpu import (
    ModelLayout,
    MPUServer,
    ServerConfig,
    UpdateAccumulator,
    harmonic_weights,
    invert_transform,
)

torch.set_num_threads(1)

LAYOUT = ModelLayout(
    num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, hidden_size=32, intermediate_size=64,
    model_type="qwen2",
)


def random_state(layout=LAYOUT, seed=0):
    """HF-named Qwen2-like state dict (q/k/v biases included) with random O(1) values."""
    g = torch.Generator().manual_seed(seed)
    h, f, q, kv = (
        layout.hidden_size,
        layout.intermediate_size,
        layout.num_heads * layout.head_dim,
        layout.num_kv_heads * layout.head_dim,
    )
    shapes = {"model.embed_tokens.weight": (50, h), "model.norm.weight": (h,), "lm_head.weight": (50, h)}
    for layer in range(layout.num_layers):
        p = f"model.layers.{layer}."
        shapes |= {
            p + "self_attn.q_proj.weight": (q, h),
            p + "self_attn.q_proj.bias": (q,),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.k_proj.bias": (kv,),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.v_proj.bias": (kv,),
            p + "self_attn.o_proj.weight": (h, q),
            p + "mlp.gate_proj.weight": (f, h),
            p + "mlp.up_proj.weight": (f, h),
            p + "mlp.down_proj.weight": (h, f),
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
        }
    return {n: torch.randn(s, generator=g) for n, s in shapes.items()}


def run_round(theta, client, **cfg):
    """One round through the server with a synthetic client; returns (θ_new − θ, server, published, returned)."""
    server = MPUServer(theta, LAYOUT, ServerConfig(**cfg))
    published = server.publish()
    returned = [{n: x + client(n, x) for n, x in pub.items()} for pub in published]
    new = server.aggregate(returned)
    return {n: new[n] - theta[n] for n in theta}, server, published, returned


def max_err(update, expected):
    return max((update[n].double() - expected[n].double()).abs().max().item() for n in update)


def test_harmonic_weights():
    assert harmonic_weights([1.0, 2.0]) == pytest.approx([2 / 3, 1 / 3])
    w = harmonic_weights([1.0, 1.5, 2.0, 4.0])
    assert sum(w) == pytest.approx(1.0)
    products = [wk * ak for wk, ak in zip(w, [1.0, 1.5, 2.0, 4.0])]
    assert max(products) - min(products) < 1e-12  # w_k α_k constant: what cancels the first-order term
    with pytest.raises(ValueError):
        harmonic_weights([1.0, 0.0])


def test_accumulator_streams_weighted_fp32_sum():
    acc = UpdateAccumulator()
    a = {"x": torch.ones(3, dtype=torch.bfloat16), "y": torch.full((2,), 2.0)}
    acc.add(a, 0.25)
    acc.add({"x": torch.full((3,), 4.0)}, 0.5)  # a partial delta: streaming tensor by tensor is allowed
    out = acc.result()
    assert out["x"].dtype == torch.float32 and torch.equal(out["x"], torch.full((3,), 2.25))
    assert torch.equal(out["y"], torch.full((2,), 0.5))
    assert torch.equal(a["y"], torch.full((2,), 2.0))  # the caller's delta is not modified


@pytest.mark.parametrize("m,schedule", [(2, "linear"), (3, "pow2"), (4, "random")])
def test_linear_client_is_denoised_exactly(m, schedule):
    """Δ'(x') = −λ·x' is linear and equivariant under T, so Σ w_k Δ_k = −λθ exactly, whatever the noise."""
    lam = 0.3
    theta = random_state()
    update, server, _, returned = run_round(
        theta, lambda n, x: -lam * x, arm="mpu", kappa=0.1, m=m, alpha_schedule=schedule, seed=11
    )
    assert max_err(update, {n: -lam * t for n, t in theta.items()}) < 1e-5
    # The same updates averaged with uniform weights keep the first-order noise: harmonic weights matter.
    secrets = server.private_state()
    acc = UpdateAccumulator()
    for k, ret in enumerate(returned):
        pub_k = {n: x / (1 - lam) for n, x in ret.items()}  # the client returned (1 − λ)·pub_k
        delta = invert_transform({n: ret[n] - pub_k[n] for n in ret}, LAYOUT, secrets["transforms"][k])
        acc.add(delta, 1.0 / m)
    assert max_err(acc.result(), {n: -lam * t for n, t in theta.items()}) > 1e-3


def _cubic_client(theta):
    """Δ'_n(x) = −λ_n ‖x‖² x: nonlinear, yet equivariant under permutations and rotations (a per-tensor norm)."""
    lam = {n: 0.5 / t.double().square().sum().item() for n, t in theta.items()}
    return lambda n, x: (-lam[n] * x.double().square().sum() * x.double()).float()


def test_nonlinear_client_error_scales_with_kappa_squared():
    theta = random_state()
    client = _cubic_client(theta)
    exact = {n: client(n, t) for n, t in theta.items()}  # the noise-free update F(θ)
    no_noise, *_ = run_round(theta, client, arm="mpu", kappa=0.0, seed=3)
    assert max_err(no_noise, exact) < 1e-5  # T alone changes nothing
    errors = []
    for kappa in (0.04, 0.02):
        update, *_ = run_round(theta, client, arm="mpu", kappa=kappa, m=2, seed=3, noise_reference="raw")
        errors.append(max_err(update, exact))
    assert errors[1] > 1e-5  # well above fp32 round-off, so the ratio is meaningful
    assert 3.0 < errors[0] / errors[1] < 5.0
