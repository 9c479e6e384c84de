"""T preserves the function (RoPE-plane rotations, GQA, Qwen2 biases) and T⁻¹ undoes it."""

import math

import pytest
import torch
from torch.func import functional_call
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from mpu_cli.models.family import (
    COLUMNS,
    KEEP,
    PERMUTE_COLUMNS,
    PERMUTE_ROWS,
    ROTATE_KV_ROWS,
    ROTATE_QUERY_COLUMNS,
    ROTATE_QUERY_ROWS,
    ROWS,
    SUPPORTED,
    UnsupportedModel,
    split_block,
)
from mpu_cli.mpu import (
    ModelLayout,
    apply_transform,
    block_of,
    identity_transform,
    invert_lora,
    invert_transform,
    sample_transform,
)

torch.set_num_threads(1)

SMALL = {
    "vocab_size": 100,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}
MODELS = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),  # q/k/v biases
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),  # per-head q_norm / k_norm: not supported
}
# Every supported family at random init, with the options that add tensors (GQA 4:2 throughout).
FAMILY_CASES = {
    "llama": ("llama", {}),
    "llama-hd8": ("llama", {"head_dim": 8}),
    "llama-biases": ("llama", {"attention_bias": True, "mlp_bias": True}),
    "mistral": ("mistral", {}),
    "qwen2": ("qwen2", {}),
}


def tiny_model(kind="llama", **overrides):
    """Tiny random model whose every weight and bias is O(0.1..1), so a wrong transform shows in the logits."""
    config_cls, model_cls = MODELS[kind]
    torch.manual_seed(0)
    model = model_cls(config_cls(**{**SMALL, **overrides})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.normal_(0, 0.5)
            else:
                p.normal_(0, 0.15)
    return model


def logits(model, state, ids):
    with torch.no_grad():
        return functional_call(model, state, (ids,)).logits


def input_ids():
    return torch.randint(0, SMALL["vocab_size"], (2, 24), generator=torch.Generator().manual_seed(1))


def plane_matrices(angles, pairs, head_dim):
    """Explicit S_j (float64) with a 2×2 rotation by angles[j, p] on plane pairs[p]; S·x rotates by +φ."""
    s = torch.eye(head_dim, dtype=torch.float64).repeat(angles.shape[0], 1, 1)
    for j in range(angles.shape[0]):
        for p, (a, b) in enumerate(pairs):
            c, n = math.cos(angles[j, p]), math.sin(angles[j, p])
            s[j, a, a], s[j, a, b], s[j, b, a], s[j, b, b] = c, -n, n, c
    return s


def explicit_attention_transform(state, layout, angles, pairs):
    """Spec formula with full matrices: q_h, k_j, v_j ← S_jᵀ·rows, o_proj column block ← block·S_j."""
    out = dict(state)
    hd = layout.head_dim
    for layer, ang in angles.items():
        s_kv = plane_matrices(ang, pairs, hd)
        s_q = s_kv.repeat_interleave(layout.group_size, 0)
        pre = f"model.layers.{layer}.self_attn."
        for proj, s in (("q_proj", s_q), ("k_proj", s_kv), ("v_proj", s_kv)):
            for key in (pre + proj + ".weight", pre + proj + ".bias"):
                if key in state:
                    w = state[key].double()
                    rows = w.reshape(s.shape[0], hd, -1)
                    out[key] = torch.einsum("hba,hbi->hai", s, rows).reshape(w.shape).float()
        wo = state[pre + "o_proj.weight"].double()
        cols = wo.reshape(wo.shape[0], layout.num_heads, hd)
        out[pre + "o_proj.weight"] = torch.einsum("ohb,hba->oha", cols, s_q).reshape(wo.shape).float()
    return out


def test_block_of():
    assert block_of("model.layers.3.mlp.up_proj.weight") == 3
    assert block_of("model.layers.12.input_layernorm.weight") == 12
    for name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        assert block_of(name) is None


def test_layout_from_hf_config():
    llama = ModelLayout.from_hf_config(LlamaConfig(**{**SMALL, "head_dim": 32}))
    assert (llama.num_layers, llama.num_heads, llama.num_kv_heads, llama.head_dim) == (2, 4, 2, 32)
    assert (llama.hidden_size, llama.intermediate_size, llama.group_size) == (64, 128, 2)
    qwen = ModelLayout.from_hf_config(Qwen2Config(**{**SMALL, "num_key_value_heads": None}))
    assert qwen.head_dim == 16 and qwen.num_kv_heads == 4


def test_every_supported_family_is_proven():
    assert {kind for kind, _ in FAMILY_CASES.values()} == set(SUPPORTED)


@pytest.mark.parametrize("case", list(FAMILY_CASES))
def test_transform_preserves_logits(case):
    kind, overrides = FAMILY_CASES[case]
    model = tiny_model(kind, **overrides)
    layout = ModelLayout.from_hf_config(model.config)
    assert layout.model_type == kind and layout.num_kv_heads < layout.num_heads
    state = model.state_dict()
    t = sample_transform(layout, torch.Generator().manual_seed(2))
    new = apply_transform(state, layout, t)
    moved = {n for n in state if not torch.allclose(new[n], state[n], atol=1e-3)}
    # every tensor T should move does (weights and biases), and nothing else
    family = layout.family
    expected = {n for n in state if block_of(n) is not None and family.role(split_block(n)[1]).op != KEEP}
    assert moved == expected and any(n.endswith("q_proj.weight") for n in moved)
    if kind == "qwen2" or overrides.get("attention_bias"):
        assert "model.layers.0.self_attn.k_proj.bias" in moved
    ids = input_ids()
    ref = logits(model, state, ids)
    scale = ref.abs().max()
    assert scale > 0.5  # the model is not trivially flat
    assert (logits(model, new, ids) - ref).abs().max() <= 1e-5 * scale  # fp32 rounding


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_transform_matches_explicit_rope_plane_matrices(kind):
    model = tiny_model(kind)
    layout = ModelLayout.from_hf_config(model.config)
    state = model.state_dict()
    t = sample_transform(layout, torch.Generator().manual_seed(3))
    t.perms = identity_transform(layout).perms  # compare the attention part only
    half = layout.head_dim // 2
    explicit = explicit_attention_transform(state, layout, t.angles, [(i, i + half) for i in range(half)])
    ours = apply_transform(state, layout, t)
    for name in state:
        torch.testing.assert_close(ours[name], explicit[name], atol=1e-6, rtol=0)


def test_interleaved_pairing_breaks_function():
    """Pairing dims (2i, 2i+1) does not commute with HF's rotate_half RoPE: the test setup can tell."""
    model = tiny_model("llama")
    layout = ModelLayout.from_hf_config(model.config)
    state = model.state_dict()
    t = sample_transform(layout, torch.Generator().manual_seed(4))
    wrong = explicit_attention_transform(
        state, layout, t.angles, [(2 * i, 2 * i + 1) for i in range(layout.head_dim // 2)]
    )
    ids = input_ids()
    assert (logits(model, wrong, ids) - logits(model, state, ids)).abs().max() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_inverse_undoes_transform_on_weights_and_updates(dtype):
    model = tiny_model("qwen2")
    layout = ModelLayout.from_hf_config(model.config)
    weights = {n: w.to(dtype) for n, w in model.state_dict().items()}
    g = torch.Generator().manual_seed(5)
    update = {n: torch.randn(w.shape, generator=g).to(dtype) for n, w in weights.items()}
    t = sample_transform(layout, g)
    for state in (weights, update):
        forward = apply_transform(state, layout, t)
        back = invert_transform(forward, layout, t)
        assert set(back) == set(state)
        for name in state:
            assert forward[name].dtype == dtype and back[name].dtype == dtype
            tol = 1e-6 if dtype == torch.float32 else 2e-2 * state[name].abs().max().item()
            torch.testing.assert_close(back[name], state[name], atol=tol, rtol=0)
        # T⁻¹ is a different map from T (it is not an involution)
        assert not torch.allclose(
            invert_transform(state, layout, t)["model.layers.0.self_attn.q_proj.weight"].float(),
            forward["model.layers.0.self_attn.q_proj.weight"].float(),
            atol=1e-3,
        )


def test_identity_transform_is_identity_and_outside_tensors_pass_through():
    model = tiny_model("llama")
    layout = ModelLayout.from_hf_config(model.config)
    state = model.state_dict()
    same = apply_transform(state, layout, identity_transform(layout))
    for name in state:
        torch.testing.assert_close(same[name], state[name], atol=1e-7, rtol=0)
    moved = apply_transform(state, layout, sample_transform(layout, torch.Generator().manual_seed(6)))
    for name in (
        "model.embed_tokens.weight",
        "model.norm.weight",
        "lm_head.weight",
        "model.layers.0.input_layernorm.weight",
    ):
        assert torch.equal(moved[name], state[name])


@pytest.mark.parametrize("suffix", ["self_attn.q_norm.weight", "pre_feedforward_layernorm.weight"])
def test_unknown_block_tensor_is_refused(suffix):
    """A per-head q_norm (Qwen3) does not commute with the rotations, and a tensor the adapter does not know is
    never passed through: refuse rather than break the model or publish it unprotected."""
    layout = ModelLayout(
        num_layers=1, num_heads=2, num_kv_heads=1, head_dim=4, hidden_size=8, intermediate_size=8,
        model_type="llama",
    )
    state = {f"model.layers.0.{suffix}": torch.ones(4)}
    for transform in (apply_transform, invert_transform):
        with pytest.raises(UnsupportedModel, match=f"block tensor '{suffix}' has no declared role"):
            transform(state, layout, identity_transform(layout))


def test_transform_preserves_logits_of_the_embedded_model():
    """The shipped tiny Llama (GQA 4:2, RoPE) itself, at its own size and tokenizer."""
    from mpu_cli.models.tiny import init_tiny_llama, load_embedded_tokenizer

    tok = load_embedded_tokenizer()
    model = init_tiny_llama(tok, seed=0).float()
    layout = ModelLayout.from_hf_config(model.config)
    assert layout.num_kv_heads < layout.num_heads
    state = model.state_dict()
    new = apply_transform(state, layout, sample_transform(layout, torch.Generator().manual_seed(5)))
    ids = torch.tensor([tok("Where was Talia Morven born? She was born in Quarnel.")["input_ids"]])
    ref = logits(model, state, ids)
    assert (logits(model, new, ids) - ref).abs().max() <= 1e-5


def test_passing_qwen3_q_norm_through_would_break_the_function():
    """Why an undeclared block tensor is refused: T with Qwen3's per-head q_norm / k_norm left as they are (the
    old pass-through) changes the logits — the norm's per-dimension weights do not commute with the rotations."""
    model = tiny_model("qwen3", head_dim=16)
    layout = ModelLayout.from_hf_config(Qwen2Config(**SMALL))  # the same shapes, without the norms
    assert layout.head_dim == model.config.head_dim
    state = model.state_dict()
    norms = {n: x for n, x in state.items() if n.endswith(("q_norm.weight", "k_norm.weight"))}
    assert norms
    with pytest.raises(UnsupportedModel, match="q_norm"):
        layout.family.check_names(state)
    t = sample_transform(layout, torch.Generator().manual_seed(7))
    rest = apply_transform({n: x for n, x in state.items() if n not in norms}, layout, t)
    ids = input_ids()
    assert (logits(model, {**rest, **norms}, ids) - logits(model, state, ids)).abs().max() > 1e-3


@pytest.mark.parametrize("kind", sorted(SUPPORTED))
def test_inverse_on_lora_factors_equals_inverse_on_their_product(kind):
    """For every role of a matrix and every supported family: T⁻¹ on (A, B) of an update B·A equals T⁻¹ on the
    dense B·A (fp32 rounding)."""
    overrides = {"attention_bias": True, "mlp_bias": True} if kind == "llama" else {}
    model = tiny_model(kind, **overrides)
    layout = ModelLayout.from_hf_config(model.config)
    g = torch.Generator().manual_seed(8)
    t = sample_transform(layout, g)
    roles = set()
    for name, w in model.state_dict().items():
        if w.dim() != 2:
            continue
        b = torch.randn(w.shape[0], 3, generator=g)
        a = torch.randn(3, w.shape[1], generator=g)
        dense = invert_transform({name: b @ a}, layout, t)[name]
        a2, b2 = invert_lora(name, a, b, layout, t)
        torch.testing.assert_close(b2 @ a2, dense, atol=1e-5 * dense.abs().max().item(), rtol=0)
        if block_of(name) is not None:
            role = layout.family.role(split_block(name)[1])
            roles.add(role)
            # the factor on the other side is left as it is
            assert (a2 is a) if role.axis == ROWS else (b2 is b) if role.axis == COLUMNS else (a2 is a and b2 is b)
    assert {r for r in roles if r.op != KEEP} == {ROTATE_QUERY_ROWS, ROTATE_KV_ROWS, ROTATE_QUERY_COLUMNS,
                                                  PERMUTE_ROWS, PERMUTE_COLUMNS}
