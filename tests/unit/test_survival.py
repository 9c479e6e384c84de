"""The noise that survives publication (mpu/survival.py): effective κ and the fraction of changed elements,
checked by hand on small tensors; server.publish_dtype; the record stays in the server's private state."""
from __future__ import annotations

import json
import math
import os
import stat

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mpu_cli.mpu import ModelLayout, MPUServer, ServerConfig, apply_transform, block_of
from mpu_cli.mpu.survival import RESULT_COLUMNS, SurvivalMeter, result_columns

torch.set_num_threads(1)

CONFIG = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=32)
LAYOUT = ModelLayout.from_hf_config(CONFIG)


def _theta(dtype=torch.float32, seed=0) -> dict:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(CONFIG)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return {n: t.detach().to(dtype).clone() for n, t in model.state_dict().items()}


def _base(theta: dict, scale: float, seed=1) -> dict:
    """θ_base = θ − v with v ~ N(0, scale²): a task vector of a chosen size."""
    g = torch.Generator().manual_seed(seed)
    return {n: t.float() - scale * torch.randn(t.shape, generator=g) for n, t in theta.items()}


def _by_hand(server: MPUServer, theta: dict, base: dict, copy: dict, k: int, exact: bool = False) -> dict[int, float]:
    """RMS(published − T_k(θ)) / RMS(θ − θ_base) per block, computed directly from one published copy; T_k(θ)
    cast to the copy's dtype, or exact (fp32)."""
    s = server.private_state()
    num, den = {}, {}
    for name, x in theta.items():
        layer = block_of(name)
        if layer is None:
            continue
        x = x.float()
        clean = apply_transform({name: x}, LAYOUT, s["transforms"][k])[name] if s["transforms"] else x
        clean = clean if exact else clean.to(copy[name].dtype).float()
        num[layer] = num.get(layer, 0.0) + float((copy[name].float() - clean).square().sum())
        den[layer] = den.get(layer, 0.0) + float((x - base[name]).square().sum())
    return {layer: math.sqrt(num[layer] / den[layer]) for layer in num}


@pytest.mark.parametrize("arm,m", [("noised", 1), ("mpu", 2)])
def test_effective_kappa_by_hand_in_fp32_equals_kappa(arm, m):
    theta = _theta()
    base = _base(theta, 0.01)
    server = MPUServer(theta, LAYOUT, ServerConfig(arm=arm, kappa=0.1, m=max(m, 2), seed=0), base=base)
    copies = server.publish()
    record = server.noise_survival()
    alphas = server.private_state()["alphas"]
    assert record["published_dtype"] == "float32" and record["blocks"] == [0, 1]
    for k, copy in enumerate(copies):
        got = record["copies"][k]
        hand = _by_hand(server, theta, base, copy, k)
        assert got["blocks"]["effective_kappa"] == pytest.approx([hand[0], hand[1]], rel=1e-6)
        # the reparameterization is undone: against T_k(θ) the copy differs by its noise α_k ε⁰_k only
        assert got["effective_kappa"] == pytest.approx(alphas[k] * 0.1, rel=0.05)
        assert got["nominal_kappa"] == pytest.approx(alphas[k] * 0.1)
        assert got["changed_frac"] > 0.999  # fp32: every element carries its noise
        assert got["effective_kappa_vs_exact"] == pytest.approx(got["effective_kappa"], rel=1e-6)
    # the run-level numbers divide each copy by its α_k: they read as κ
    cols = result_columns([record])
    assert cols["effective_kappa"] == pytest.approx(0.1, rel=0.05)
    assert json.loads(cols["effective_kappa_blocks"]) == pytest.approx([0.1, 0.1], rel=0.08)
    assert cols["published_changed_frac"] > 0.999 and set(cols) == set(RESULT_COLUMNS)


def test_bf16_rounds_away_noise_far_below_its_spacing_and_fp32_publication_keeps_it():
    theta = _theta(torch.bfloat16)  # |w| ~ 0.02: bf16 spacing ~1e-4
    base = _base(theta, 1e-4)  # σ = κ·1e-4 = 1e-6 at κ = 0.01, a hundredth of the spacing
    bf16 = MPUServer(theta, LAYOUT, ServerConfig(arm="noised", kappa=0.01, seed=0), base=base)
    (copy,) = bf16.publish()
    rec = bf16.noise_survival()
    assert copy["model.layers.0.mlp.up_proj.weight"].dtype == torch.bfloat16 and rec["published_dtype"] == "bfloat16"
    assert rec["copies"][0]["changed_frac"] < 0.01  # only the few weights near 0 move
    assert rec["copies"][0]["effective_kappa"] < 0.002  # a fifth of κ or less survives
    fp32 = MPUServer(theta, LAYOUT, ServerConfig(arm="noised", kappa=0.01, seed=0, publish_dtype="float32"), base=base)
    (copy,) = fp32.publish()
    rec = fp32.noise_survival()
    assert copy["model.layers.0.mlp.up_proj.weight"].dtype == torch.float32 and rec["published_dtype"] == "float32"
    assert rec["copies"][0]["changed_frac"] > 0.999
    assert rec["copies"][0]["effective_kappa"] == pytest.approx(0.01, rel=0.05)


def test_rotated_bf16_copies_count_the_rounding_of_theta_only_against_the_exact_value():
    theta = _theta(torch.bfloat16)
    base = _base(theta, 1e-4)
    server = MPUServer(theta, LAYOUT, ServerConfig(arm="mpu", kappa=0.01, m=2, seed=0), base=base)
    copies = server.publish()
    c = server.noise_survival()["copies"][0]
    hand, exact = (_by_hand(server, theta, base, copies[0], 0, exact=e) for e in (False, True))
    assert c["blocks"]["effective_kappa"] == pytest.approx([hand[0], hand[1]], rel=1e-6)
    assert c["blocks"]["effective_kappa_vs_exact"] == pytest.approx([exact[0], exact[1]], rel=1e-6)
    # T_k(θ) (RoPE-plane rotations) is off the bf16 grid: its own rounding (~ the spacing) dwarfs σ
    assert c["effective_kappa_vs_exact"] > 3 * c["effective_kappa"]


def test_survival_numbers_average_over_rounds_and_blank_without_a_record():
    meter = SurvivalMeter(1)
    meter.add_reference(0, torch.ones(4), torch.zeros(4))  # RMS(θ − θ_base) = 1
    meter.add(0, 0, torch.tensor([1.0, 1.0, 3.0, 1.0]), torch.ones(4))  # one element moved by 2: RMS 1
    rec = meter.result(1, 0.5, [1.0])
    assert rec["copies"][0]["changed_frac"] == 0.25 and rec["copies"][0]["effective_kappa"] == pytest.approx(1.0)
    other = json.loads(json.dumps(rec))
    other["summary"]["effective_kappa"] = 3.0
    assert result_columns([rec, other])["effective_kappa"] == pytest.approx(2.0)
    assert result_columns([]) == dict.fromkeys(RESULT_COLUMNS)


def test_publish_dtype_is_validated_with_the_accepted_values():
    from mpu_cli.cli.precheck import check_overrides
    from mpu_cli.config import CONF_DIR, ConfigError

    with pytest.raises(ConfigError, match=r"server.publish_dtype='bf16' is not one of \['model', 'float32'\]"):
        check_overrides(["server.publish_dtype=bf16"], CONF_DIR)
    with pytest.raises(ValueError, match=r"^publish_dtype='fp16' is not one of \['model', 'float32'\]"):
        ServerConfig(publish_dtype="fp16")
    assert check_overrides(["server.publish_dtype=float32"], CONF_DIR) == 1


def test_mpu_server_refuses_a_bad_publish_dtype_before_loading_anything(tmp_path, capsys):
    from mpu_cli.cli import server as server_cli

    with pytest.raises(SystemExit) as e:
        server_cli.main(["init", "--state", str(tmp_path / "s"), "--exchange", str(tmp_path / "x"),
                         "--target", str(tmp_path / "no-model"), "--publish-dtype", "half"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "publish_dtype='half'" in err[0] and "['model', 'float32']" in err[0]
    assert not (tmp_path / "s").exists()


def test_the_client_trains_in_the_published_dtype():
    from hydra import compose, initialize_config_dir

    from mpu_cli.config import CONF_DIR, register_configs
    from mpu_cli.run.settings import client_dtype, client_settings

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        model = compose(config_name="config", overrides=["model.dtype=bfloat16"])
        fp32 = compose(config_name="config", overrides=["model.dtype=bfloat16", "server.publish_dtype=float32"])
    assert client_dtype(model) == "bfloat16" and client_dtype(fp32) == "float32"
    assert client_settings(fp32)["dtype"] == "float32"


def _tiny_model_folder(path):
    from mpu_cli.models.tiny import load_embedded_tokenizer

    tok = load_embedded_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return model


def test_the_survival_record_stays_in_the_private_state_of_both_servers(tmp_path):
    """mpu-server (its main(), in this process) and the in-process runner write noise_survival.json into the
    server's private state (0600), and nothing the client receives mentions it."""
    from mpu_cli.cli import server as server_cli
    from mpu_cli.run.checkpoint import Checkpoint
    from mpu_cli.run.rounds import InProcessRounds, drive

    target = _tiny_model_folder(tmp_path / "target")
    base = tmp_path / "base"
    with torch.no_grad():
        for p in target.parameters():
            p.add_(0.01)
    target.save_pretrained(str(base))
    state, exchange = tmp_path / "server_private", tmp_path / "exchange"
    settings = tmp_path / "server.json"
    ServerConfig(seed=0).write(settings)
    server_cli.main(["init", "--state", str(state), "--exchange", str(exchange), "--target", str(tmp_path / "target"),
                     "--base", str(base), "--config", str(settings), "--kappa", "0.1"])
    server_cli.main(["publish", "--state", str(state)])
    record = json.loads((state / "noise_survival.json").read_text())["rounds"]["1"]
    assert [c["copy"] for c in record["copies"]] == [1, 2]
    assert record["summary"]["effective_kappa"] == pytest.approx(0.1, rel=0.1)
    assert stat.S_IMODE(os.stat(state / "noise_survival.json").st_mode) == 0o600
    words = ("survival", "effective_kappa", "changed_frac", "nominal_kappa")
    for f in exchange.rglob("*"):
        if f.is_file():
            text = f.read_bytes()
            assert not any(w.encode() in text for w in words), f

    # in process: the client function receives the copy's tensors and nothing else
    theta = {n: t.detach().clone() for n, t in LlamaForCausalLM.from_pretrained(str(tmp_path / "target")).state_dict().items()}
    server = MPUServer(theta, ModelLayout.from_hf_config(target.config), ServerConfig(kappa=0.1, m=2, seed=0))
    seen = []

    def client(r, k, published):
        seen.append(set(published))
        return {n: t.float() for n, t in published.items()}

    run = tmp_path / "run"
    drive(InProcessRounds(server, client, Checkpoint(run)), 2)
    assert seen == [set(theta)] * 4
    rounds = json.loads((run / "server_private" / "noise_survival.json").read_text())["rounds"]
    assert sorted(rounds) == ["1", "2"]
    assert stat.S_IMODE(os.stat(run / "server_private" / "noise_survival.json").st_mode) == 0o600


def test_the_record_from_the_sigma_pass_sums_equals_the_one_summed_for_it():
    """A server publishing sums σ's pass once and reuses it as the record's reference; a server restored with its
    σ (no sums) measures the reference itself: the same record."""
    theta = _theta(torch.bfloat16)
    base = _base(theta, 1e-3)
    server = MPUServer(theta, LAYOUT, ServerConfig(arm="mpu", kappa=0.1, m=2, seed=0), base=base)
    server.publish()
    exported, meta = server.export_state()
    restored = MPUServer.restore(exported, meta, LAYOUT, base=base)
    assert server._secrets.references and not restored._secrets.references  # the two paths under test
    a, b = server.noise_survival(), restored.noise_survival()
    for ca, cb in zip(a["copies"], b["copies"]):
        for metric in ("changed_frac", "effective_kappa", "effective_kappa_vs_exact"):
            assert ca[metric] == pytest.approx(cb[metric], rel=1e-12)
            assert ca["blocks"][metric] == pytest.approx(cb["blocks"][metric], rel=1e-12)
