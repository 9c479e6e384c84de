"""σ per block, zero-sum noise across copies, α schedules."""

import math

import pytest
import torch

from mpu_cli.mpu import (
    ModelLayout,
    ZeroSumNoise,
    alpha_schedule,
    block_sigmas,
    unprotected_sigma,
    zero_sum_noise,
)

torch.set_num_threads(1)

LAYOUT = ModelLayout(
    num_layers=2, num_heads=2, num_kv_heads=1, head_dim=4, hidden_size=8, intermediate_size=16,
    model_type="llama",
)


@pytest.mark.parametrize("m", [2, 4])
def test_zero_sum_noise_sums_to_zero_with_variance_sigma_squared(m):
    sigma = 0.5
    eps = zero_sum_noise((1000, 1000), sigma, list(range(m)))
    assert len(eps) == m and all(e.dtype == torch.float32 and e.shape == (1000, 1000) for e in eps)
    assert torch.stack(eps).sum(0).abs().max() <= 1e-5
    for e in eps:
        assert abs(e.std().item() / sigma - 1) < 0.05
        assert abs(e.mean().item()) < 0.01
    # copies are negatively correlated, corr = −1/(m−1): the noise really is shared across copies
    corr = torch.corrcoef(torch.stack([eps[0].flatten(), eps[1].flatten()]))[0, 1].item()
    assert abs(corr + 1 / (m - 1)) < 0.01


def test_zero_sum_noise_is_reproducible_and_needs_two_copies():
    a = zero_sum_noise((3, 5), 1.0, [7, 8, 9])
    b = zero_sum_noise((3, 5), 1.0, [7, 8, 9])
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="m >= 2"):
        zero_sum_noise((3,), 1.0, [1])


def test_each_copy_of_zero_sum_noise_is_regenerated_alone():
    """Copy k comes from its own seed and the mean: asking for copies in any order, one at a time, gives the
    same tensors as building all m together (what lets the server hand out one copy at a time)."""
    seeds = [11, 22, 33, 44]
    together = zero_sum_noise((64, 32), 0.3, seeds)
    noise = ZeroSumNoise((64, 32), 0.3, seeds)
    for k in (3, 0, 2, 1, 3):
        assert torch.equal(noise.copy(k), together[k])
    # a different seed for one copy changes every copy (through the mean), not only that one
    other = zero_sum_noise((64, 32), 0.3, [11, 22, 33, 45])
    assert not any(torch.equal(x, y) for x, y in zip(together, other))


def _state():
    g = torch.Generator().manual_seed(1)
    return {
        "model.embed_tokens.weight": torch.randn(10, 8, generator=g),
        "model.layers.0.mlp.up_proj.weight": torch.randn(16, 8, generator=g),
        "model.layers.0.input_layernorm.weight": torch.randn(8, generator=g),
        "model.layers.1.mlp.up_proj.weight": 3 * torch.randn(16, 8, generator=g),
        "model.norm.weight": torch.randn(8, generator=g),
    }


def _rms(tensors):
    flat = torch.cat([t.double().flatten() for t in tensors])
    return flat.square().mean().sqrt().item()


def test_block_sigmas_raw_and_base_reference():
    theta = _state()
    blocks = {
        0: ["model.layers.0.mlp.up_proj.weight", "model.layers.0.input_layernorm.weight"],
        1: ["model.layers.1.mlp.up_proj.weight"],
    }
    raw = block_sigmas(theta, None, 0.1, LAYOUT)
    assert set(raw) == {0, 1}
    for layer, names in blocks.items():
        assert raw[layer] == pytest.approx(0.1 * _rms([theta[n] for n in names]), rel=1e-12)
    # with a base model: RMS of the fine-tuning difference, pooled over all elements of the block
    g = torch.Generator().manual_seed(2)
    diff = {
        n: torch.randn(t.shape, generator=g) * (0.01 if "layers.0" in n else 0.02) for n, t in theta.items()
    }
    base = {n: theta[n] - diff[n] for n in theta}
    ref = block_sigmas(theta, base, 0.1, LAYOUT)
    for layer, names in blocks.items():
        assert ref[layer] == pytest.approx(0.1 * _rms([diff[n] for n in names]), rel=1e-5)


def test_block_sigmas_reduce_in_float64():
    # 4M elements of 1.0 plus one 3000.0: a float32 running sum would drift; float64 gives the exact RMS
    t = torch.ones(1 << 22)
    t[0] = 3000.0
    sigma = block_sigmas({"model.layers.0.mlp.up_proj.weight": t}, None, 1.0, LAYOUT)[0]
    expected = math.sqrt(((1 << 22) - 1 + 3000.0**2) / (1 << 22))
    assert sigma == pytest.approx(expected, rel=1e-12)


def test_unprotected_sigma_covers_only_tensors_outside_blocks():
    theta = _state()
    outside = [theta["model.embed_tokens.weight"], theta["model.norm.weight"]]
    assert unprotected_sigma(theta, None, 0.01) == pytest.approx(0.01 * _rms(outside), rel=1e-12)


def test_block_sigmas_reject_bad_base_and_layers():
    theta = _state()
    with pytest.raises(ValueError, match="base model has no tensor"):
        block_sigmas(theta, {}, 0.1, LAYOUT)
    one_layer = ModelLayout(
        num_layers=1, num_heads=2, num_kv_heads=1, head_dim=4, hidden_size=8, intermediate_size=16,
        model_type="llama",
    )
    with pytest.raises(ValueError, match="block 1"):
        block_sigmas(theta, None, 0.1, one_layer)


def test_alpha_schedules():
    assert alpha_schedule(2) == [1.0, 2.0]
    assert alpha_schedule(3) == [1.0, 1.5, 2.0]
    assert alpha_schedule(1) == [1.0]
    assert alpha_schedule(3, "pow2") == [1.0, 2.0, 4.0]
    rnd = alpha_schedule(4, "random", torch.Generator().manual_seed(0))
    assert rnd[0] == 1.0 and all(1.0 <= a < 2.0 for a in rnd) and len(set(rnd)) == 4
    with pytest.raises(ValueError, match="linear, pow2, random"):
        alpha_schedule(2, "cubic")


def test_gaussian_noise_depends_on_the_seed_only():
    from mpu_cli.mpu.noise import gaussian

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = gaussian((300, 1000), 0.5, 1234)
        torch.set_num_threads(2)
        two = gaussian((300, 1000), 0.5, 1234)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two) and one.dtype == torch.float32 and one.shape == (300, 1000)
    assert abs(one.std().item() / 0.5 - 1) < 0.01 and abs(one.mean().item()) < 0.005
    assert not torch.equal(gaussian((300, 1000), 0.5, 1235), one)


def test_kept_draws_drawn_side_by_side_equal_the_sequential_ones():
    """ZeroSumNoise(keep=True) draws the m streams on several threads: each copy is bit for bit the one drawn alone."""
    from mpu_cli.mpu.noise import ZeroSumNoise

    seeds = [11, 22, 33, 44]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        kept = ZeroSumNoise((64, 33), 0.5, seeds, keep=True)
        together = [kept.copy(k, scale=1.5) for k in range(4)]
    finally:
        torch.set_num_threads(threads)
    alone = ZeroSumNoise((64, 33), 0.5, seeds)
    assert all(torch.equal(a, alone.copy(k, scale=1.5)) for k, a in enumerate(together))
    assert all(torch.equal(a, kept.copy(k, scale=1.5)) for k, a in enumerate(together))  # drawn again once handed out
