"""LoRA clients: the adapter a client trains and returns, and the server's aggregate of the adapters' low-rank
updates mapped back through T_k⁻¹ (first-order cancellation, arms, refusals, the exchange files)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from test_aggregate import LAYOUT, random_state
from transformers import LlamaConfig, LlamaForCausalLM

from helpers import write_run
from mpu_cli.finite import NonFiniteError
from mpu_cli.models.lora import config_json, expected_factors, factor_keys, factor_pairs, peft_config, scaling
from mpu_cli.mpu import MPUServer, ServerConfig, aggregate_adapters
from mpu_cli.report.views import VIEWS
from mpu_cli.transport import exchange as ex
from mpu_cli.transport.errors import TransportError
from mpu_cli.unlearn.adapter import Adapter, AdapterDisabled, lora_adapter
from mpu_cli.unlearn.settings import ClientConfig, LoraSettings, ReferencePolicy, check_lora

torch.set_num_threads(1)

RANK = 3
MATRICES = [n for n, t in random_state().items() if t.dim() == 2 and n.startswith("model.layers.")]
_spec = importlib.util.spec_from_file_location("lora_bench", Path(__file__).parents[2] / "scripts" / "lora_bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def lora_round(theta, client, scale=1.0, **cfg):
    server = MPUServer(theta, LAYOUT, ServerConfig(**cfg))
    returned = [client(pub) for pub in server.publish()]
    new = aggregate_adapters(server, returned, [scale] * len(returned))
    return {n: new[n] - theta[n] for n in theta}, server, returned


@pytest.mark.parametrize("m,schedule", [(2, "linear"), (4, "random")])
def test_linear_lora_client_is_denoised_exactly(m, schedule):
    """Σ_k w_k s T_k⁻¹(B_k A_k) equals the noise-free update for a linear client; tensors without an adapter
    stay exact; uniform weights keep the first-order noise."""
    theta = random_state()
    client, exact = bench.linear_lora_client(theta, LAYOUT, rank=RANK)
    assert sorted(exact) == sorted(MATRICES)
    doubled = {n: 2.0 * x for n, x in exact.items()}
    update, _, returned = lora_round(theta, client, scale=2.0, arm="mpu", kappa=0.1, m=m,
                                          alpha_schedule=schedule, seed=11)
    assert bench.relative_error(update, doubled) < 1e-6
    assert all(torch.equal(update[n], torch.zeros_like(update[n])) for n in theta if n not in MATRICES)
    # the same factors averaged uniformly (s_k = 2 / (m w_k)): the noise's first-order term remains
    server2 = MPUServer(theta, LAYOUT, ServerConfig(arm="mpu", kappa=0.1, m=m, alpha_schedule=schedule, seed=11))
    server2.publish()
    uniform = aggregate_adapters(server2, returned, [2.0 / m / w for w in server2.private_state()["weights"]])
    assert bench.relative_error({n: uniform[n] - theta[n] for n in MATRICES}, doubled) > 1e-3


@pytest.mark.parametrize("arm", ["clean", "noised"])
def test_clean_and_noised_arms_merge_the_one_adapter(arm):
    """One copy, weight 1, no T: θ_r = θ + s·B·A for every weight with an adapter."""
    theta = random_state()
    g = torch.Generator().manual_seed(2)
    adapter = {}
    for n in MATRICES:
        adapter |= dict(zip(factor_keys(n), (torch.randn(RANK, theta[n].shape[1], generator=g),
                                             torch.randn(theta[n].shape[0], RANK, generator=g))))
    update, *_ = lora_round(theta, lambda _pub: adapter, scale=0.5, arm=arm, kappa=0.1, seed=1)
    a, b = (adapter[k] for k in factor_keys(MATRICES[0]))
    torch.testing.assert_close(update[MATRICES[0]], 0.5 * b @ a, atol=1e-5, rtol=0)


def test_a_refused_merge_leaves_theta_and_bad_adapters_are_refused():
    theta = random_state()
    client, _ = bench.linear_lora_client(theta, LAYOUT, rank=RANK)
    server = MPUServer(theta, LAYOUT, ServerConfig(arm="mpu", kappa=0.1, m=2, seed=3))
    returned = [client(pub) for pub in server.publish()]
    returned[1][factor_keys(MATRICES[-1])[1]] = torch.full_like(returned[1][factor_keys(MATRICES[-1])[1]], torch.inf)
    with pytest.raises(NonFiniteError, match="adapter"):
        aggregate_adapters(server, returned, [1.0, 1.0])
    assert server.pending and all(torch.equal(server.theta[n], theta[n]) for n in theta)
    with pytest.raises(ValueError, match="other weights"):
        aggregate_adapters(server, [returned[0], {k: v for k, v in returned[0].items() if "layers.0." in k}],
                           [1.0, 1.0])
    outside = {**returned[0], **dict(zip(factor_keys("lm_head.weight"), (torch.ones(RANK, 32), torch.ones(50, RANK))))}
    with pytest.raises(ValueError, match="inside a transformer block"):
        aggregate_adapters(server, [outside, outside], [1.0, 1.0])
    with pytest.raises(ValueError, match="expected 2 returned adapters"):
        aggregate_adapters(server, returned[:1], [1.0])


def test_merge_of_a_lazily_read_theta_writes_theta_r_to_out(tmp_path):
    """θ read from a file one tensor at a time (the streaming server): the merge writes θ_r to `out` tensor by
    tensor, bit for bit the merge of θ held in memory, and leaves θ's own file as it was; without `out` the merged
    θ is kept in memory."""
    from mpu_cli.models.files import open_file

    theta = random_state()
    ex.write_safetensors(tmp_path / "theta.safetensors", theta)
    before = ex.sha256_file(tmp_path / "theta.safetensors")
    client, _ = bench.linear_lora_client(theta, LAYOUT, rank=RANK)

    def merged(th, out=None):
        server = MPUServer(th, LAYOUT, ServerConfig(arm="mpu", kappa=0.1, m=2, seed=5))
        returned = [client(pub) for pub in server.publish()]
        new = aggregate_adapters(server, returned, [1.5, 1.5], out=out)
        return server, {n: new[n] for n in theta}

    _, want = merged(theta)
    assert all(not torch.equal(want[n], theta[n]) for n in MATRICES)
    out = tmp_path / "theta_r.safetensors"
    server, got = merged(open_file(tmp_path / "theta.safetensors"), out=out)
    assert all(torch.equal(got[n], want[n]) for n in theta)
    assert server.theta_file["path"] == str(out) and server.theta_file["sha256"] == ex.sha256_file(out)[0]
    _, kept = merged(open_file(tmp_path / "theta.safetensors"))
    assert all(torch.equal(kept[n], want[n]) for n in theta)
    assert ex.sha256_file(tmp_path / "theta.safetensors") == before


def test_adapter_names_scaling_and_expected_factors():
    w = "model.layers.1.mlp.down_proj.weight"
    a, b = factor_keys(w)
    assert (a, b) == ("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight",
                      "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight")
    assert factor_pairs([b, a]) == {w: (a, b)}
    with pytest.raises(ValueError, match="only one"):
        factor_pairs([a])
    with pytest.raises(ValueError, match="not a LoRA factor"):
        factor_pairs(["model.layers.1.mlp.down_proj.weight"])
    shapes = {w: (32, 64)}
    assert expected_factors([a, b], shapes, 4) == {a: ((4, 64), ("F32", "BF16", "F16")),
                                                   b: ((32, 4), ("F32", "BF16", "F16"))}
    with pytest.raises(ValueError, match="not a matrix"):
        expected_factors(factor_keys("model.norm.weight"), {"model.norm.weight": (32,)}, 4)
    config = config_json(peft_config(LoraSettings(rank=4, alpha=12.0)))
    json.dumps(config)  # JSON as peft writes it
    assert config["r"] == 4 and scaling(config) == 3.0
    for bad in ({"use_rslora": True}, {"use_dora": True}, {"r": 0}, {"lora_alpha": -1}, {"rank_pattern": {"q": 2}}):
        with pytest.raises(ValueError):
            scaling(config | bad)


SMALL = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


def test_the_reference_is_the_copy_with_the_adapter_disabled_and_the_model_comes_back_unchanged():
    torch.manual_seed(0)
    model = LlamaForCausalLM(SMALL)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    ids = torch.randint(0, 100, (2, 10), generator=torch.Generator().manual_seed(1))
    received = model(input_ids=ids).logits.detach()
    with lora_adapter(model, LoraSettings(rank=4, dropout=0.5), seed=0) as peft_model:
        assert all("lora_" in n for n, p in peft_model.named_parameters() if p.requires_grad)
        with torch.no_grad():
            for n, p in peft_model.named_parameters():
                if "lora_B" in n:
                    p.normal_()  # a trained adapter: B ≠ 0
        peft_model.train()
        ref = AdapterDisabled(peft_model)
        torch.testing.assert_close(ref(input_ids=ids).logits, received, atol=0, rtol=0)
        assert peft_model.training and ref.config is peft_model.config  # train mode back; attributes delegated
        peft_model.eval()
        assert (peft_model(input_ids=ids).logits - received).abs().max() > 1e-3
        adapter = Adapter(peft_model)
    assert len(adapter) == 2 * 7 * SMALL.num_hidden_layers and all(".lora_" in k for k in adapter)
    assert adapter.config["r"] == 4 and sorted(adapter.config["target_modules"]) == sorted(
        LoraSettings().target_modules)
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[n], before[n]) for n in before)


def test_rmus_trained_weights_get_the_adapter_and_an_adapter_outside_the_blocks_is_refused():
    torch.manual_seed(0)
    model = LlamaForCausalLM(SMALL)
    with lora_adapter(model, LoraSettings(), 0, ["model.layers.1.mlp.down_proj.weight"]) as peft_model:
        assert sorted(factor_pairs(Adapter(peft_model))) == ["model.layers.1.mlp.down_proj.weight"]
    with pytest.raises(ValueError, match="outside every transformer block"), \
            lora_adapter(model, LoraSettings(target_modules=["lm_head"]), 0):
        pass
    assert type(model.lm_head) is torch.nn.Linear  # removed again after the refusal


@pytest.mark.parametrize("bad,match", [({"reference": ReferencePolicy.server_clean}, "client_copy"),
                                       ({"gradient_checkpointing": True}, "gradient_checkpointing"),
                                       ({"mixed_precision": "bf16"}, "mixed_precision")])
def test_lora_refuses_what_it_does_not_combine_with(bad, match):
    with pytest.raises(ValueError, match=match):
        check_lora(ClientConfig(lora=LoraSettings(enabled=True), **bad))
    assert ClientConfig(lora={"enabled": True, "rank": 2}).lora == LoraSettings(enabled=True, rank=2)  # CLIENT.json


def test_mpu_run_refuses_a_lora_combination_before_any_work():
    from hydra import compose, initialize_config_dir

    from mpu_cli.config import CONF_DIR, register_configs
    from mpu_cli.options import ConfigError
    from mpu_cli.run.checks import validate

    def config(*overrides):
        register_configs()
        with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
            return compose(config_name="config", overrides=["client.lora.enabled=true", *overrides])

    validate(config())
    with pytest.raises(ConfigError, match="client.reference=server_clean with client.lora.enabled=true"):
        validate(config("client.reference=server_clean"))
    with pytest.raises(ConfigError, match=r"client.lora.rank=0 must be >= 1"):
        validate(config("client.lora.rank=0"))


def test_the_exchange_carries_the_adapter_in_peft_files_under_the_manifest(tmp_path):
    pub = {"run_id": "x", "round": 1, "copy": 0, "n_copies": 2, "files": {ex.PUBLISHED: {"sha256": "0" * 64}}}
    tensors = dict(zip(factor_keys(MATRICES[0]), (torch.ones(RANK, 32), torch.ones(64, RANK))))
    config = config_json(peft_config(LoraSettings(rank=RANK)))
    m = ex.write_returned(tmp_path, pub, tensors, config)
    d = ex.copy_dir(tmp_path, 1, 0)
    assert m["content"] == ex.ADAPTER_CONTENT and set(m["files"]) == {ex.ADAPTER, ex.ADAPTER_CONFIG}
    assert sorted(p.name for p in d.iterdir()) == sorted([ex.ADAPTER, ex.ADAPTER_CONFIG, ex.RETURNED_MANIFEST])
    assert ex.read_validated_json(d / ex.ADAPTER_CONFIG, m, "copy 0") == config
    expected = expected_factors(m["tensors"], {MATRICES[0]: (64, 32)}, config["r"])
    assert ex.read_validated(d / ex.ADAPTER, m, expected, "copy 0").keys() == tensors.keys()
    (d / ex.ADAPTER_CONFIG).write_text(json.dumps(config | {"lora_alpha": 1e6}))
    with pytest.raises(TransportError, match="adapter_config.json"):
        ex.read_validated_json(d / ex.ADAPTER_CONFIG, m, "copy 0")


def test_a_sound_returned_adapter_is_kept_and_a_damaged_one_refused(tmp_path):
    """returned_refusal, which mpu-run asks before redoing copies of a resumed round, judges an adapter as the server
    does (its config, factor shapes against the published copy, hashes) instead of refusing it for not being a full
    copy; an updated copy of the same copy is judged as before."""
    spec = {MATRICES[0]: ((64, 32), torch.float32)}
    pub = ex.published_manifest("x", 1, 0, 2, {"sha256": "0" * 64, "bytes": 1}, spec)
    ex.write_manifest(ex.copy_dir(tmp_path, 1, 0) / ex.PUBLISHED_MANIFEST, pub)
    ex.write_returned(tmp_path, pub, {MATRICES[0]: torch.ones(64, 32)})
    assert ex.returned_refusal(tmp_path, 1, 0) is None
    factors = dict(zip(factor_keys(MATRICES[0]), (torch.ones(RANK, 32), torch.ones(64, RANK))))
    ex.write_returned(tmp_path, pub, factors, config_json(peft_config(LoraSettings(rank=RANK))))
    assert ex.returned_refusal(tmp_path, 1, 0) is None
    adapter = ex.copy_dir(tmp_path, 1, 0) / ex.ADAPTER
    data = bytearray(adapter.read_bytes())
    data[-4] ^= 0xFF
    adapter.write_bytes(bytes(data))
    assert "round 1 copy 0: adapter_model.safetensors SHA-256" in ex.returned_refusal(tmp_path, 1, 0)
    wrong_rank = dict(zip(factor_keys(MATRICES[0]), (torch.ones(RANK + 1, 32), torch.ones(64, RANK + 1))))
    ex.write_returned(tmp_path, pub, wrong_rank, config_json(peft_config(LoraSettings(rank=RANK))))
    assert "shape" in ex.returned_refusal(tmp_path, 1, 0)


def _quick(forget, retain=0.5):
    return {"forget_Q_A_Prob": forget, "forget_Q_A_ROUGE": 0.4, "retain_Q_A_Prob": retain, "retain_Q_A_ROUGE": 0.6}


def _two_seed_pairs(root: Path) -> None:
    """Clean NPO runs, full and LoRA, at two seeds: forget Prob 0.10 / 0.30 and 0.20 / 0.36."""
    for seed, (full, lora) in enumerate([(0.10, 0.30), (0.20, 0.36)]):
        for on, fp in ((False, full), (True, lora)):
            write_run(root, f"clean_{on}_s{seed}", _quick(fp), arm="clean", seed=seed, algorithm__name="npo",
                      client__lora__enabled=on)


def test_the_lora_view_pairs_each_lora_run_with_the_full_run_of_its_seed(tmp_path):
    _two_seed_pairs(tmp_path)
    text = VIEWS["lora"].render(tmp_path)
    row = next(r for r in text.splitlines() if r.startswith("| npo"))
    assert "LoRA r = 8" in text and "| 2 |" in row
    # forget Prob: full 0.15 → LoRA 0.33; paired differences 0.20 and 0.16: mean 0.18 ± 12.71·0.0283/√2
    assert "0.15 → 0.33; +0.180 [-0.074, +0.434]" in row
    with pytest.raises(ValueError, match="both with and without"):
        VIEWS["lora"].render(tmp_path / "none")


def test_the_short_lora_view_gives_forget_and_retain_prob_with_the_full_clients_spread(tmp_path):
    _two_seed_pairs(tmp_path)
    text = VIEWS["lora_short"].render(tmp_path)
    header = next(r for r in text.splitlines() if r.startswith("| algorithm"))
    row = next(r for r in text.splitlines() if r.startswith("| npo"))
    assert "forget_Q_A_Prob" in header and "retain_Q_A_Prob" in header and "ROUGE" not in header
    # forget Prob as the long view has it, then the full client's sd over seeds: |0.10 − 0.20| / √2 = 0.0707
    assert "0.15 → 0.33; +0.180 [-0.074, +0.434]; full sd 0.071" in row
    assert "0.5 → 0.5; +0.000 [+0.000, +0.000]; full sd 0.000" in row


def test_the_pilot_view_marks_the_lr_scale_whose_forget_prob_is_closest_to_the_full_clients(tmp_path):
    write_run(tmp_path, "full", _quick(0.06, 0.21), arm="clean", algorithm__name="npo", client__lora__enabled=False)
    for scale, forget in ((10, 0.43), (30, 0.07), (100, 0.04)):
        write_run(tmp_path, f"lora{scale}", _quick(forget), arm="clean", algorithm__name="npo",
                  client__lora__enabled=True, client__lora__lr_scale=scale)
    rows = {r.split(" | ")[1]: r for r in VIEWS["lora_pilot"].render(tmp_path).splitlines() if r.startswith("| LoRA")}
    assert list(rows) == ["10", "30", "100"]
    assert rows["10"].endswith("| +0.370 |") and rows["100"].endswith("| -0.020 |")
    assert rows["30"].endswith("| +0.010 (closest) |")
    with pytest.raises(ValueError, match="both with and without"):
        VIEWS["lora_pilot"].render(tmp_path / "none")
