"""The server's arms, rounds, seeds, secrets and precision."""

import ast
import json
from pathlib import Path

import pytest
import torch
from torch.func import functional_call
from transformers import LlamaConfig, LlamaForCausalLM

from mpu_cli.mpu import ModelLayout, MPUServer, ServerConfig, block_of, block_sigmas, invert_transform

torch.set_num_threads(1)

CONFIG = LlamaConfig(
    vocab_size=100,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)
LAYOUT = ModelLayout.from_hf_config(CONFIG)
OUTSIDE = ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    llama = LlamaForCausalLM(CONFIG).eval()
    with torch.no_grad():
        for name, p in llama.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0, 0.15)
    return llama


@pytest.fixture
def theta(model):
    return {n: t.clone() for n, t in model.state_dict().items()}


def server_for(theta, **cfg):
    return MPUServer(theta, LAYOUT, ServerConfig(**cfg))


def test_clean_publishes_theta_bitwise_and_applies_the_difference(theta):
    server = server_for(theta, arm="clean")
    (pub,) = server.publish()
    assert all(torch.equal(pub[n], theta[n]) for n in theta)
    pub["model.norm.weight"].add_(1.0)  # a client training in place must not reach the server's θ
    assert torch.equal(server.theta["model.norm.weight"], theta["model.norm.weight"])
    g = torch.Generator().manual_seed(1)
    returned = {n: t + 0.01 * torch.randn(t.shape, generator=g) for n, t in theta.items()}
    new = server.aggregate([returned])
    assert all(torch.equal(new[n], theta[n] + (returned[n] - theta[n])) for n in theta)


def test_noised_publishes_one_copy_with_sigma_per_block(theta):
    server = server_for(theta, arm="noised", kappa=0.1, seed=0)
    copies = server.publish()
    assert len(copies) == 1
    sigmas = server.private_state()["sigmas"]
    assert sigmas == block_sigmas(theta, None, 0.1, LAYOUT)  # no base given: raw-weight reference
    for layer, sigma in sigmas.items():
        noise = torch.cat([(copies[0][n] - theta[n]).flatten() for n in theta if block_of(n) == layer])
        assert abs(noise.std().item() / sigma - 1) < 0.05
    for n in OUTSIDE:
        assert torch.equal(copies[0][n], theta[n])
    # no transform: the noise is centred on θ element by element
    q = "model.layers.0.self_attn.q_proj.weight"
    assert (copies[0][q] - theta[q]).abs().max() < 6 * sigmas[0]


@pytest.mark.parametrize(("noised_alpha", "m", "schedule", "alpha"), [
    ("one", 2, "linear", 1.0), ("mean", 2, "linear", 1.5), ("max", 2, "linear", 2.0),
    ("mean", 4, "pow2", 3.75), ("max", 4, "pow2", 8.0),
])
def test_noised_alpha_gives_the_one_copy_the_noise_scale_of_mpus_copies(theta, noised_alpha, m, schedule, alpha):
    server = server_for(theta, arm="noised", kappa=0.1, m=m, alpha_schedule=schedule, noised_alpha=noised_alpha,
                        seed=0)
    (copy,) = server.publish()
    secrets = server.private_state()
    assert secrets["alphas"] == [alpha] and secrets["weights"] == [1.0]
    for layer, sigma in secrets["sigmas"].items():
        noise = torch.cat([(copy[n] - theta[n]).flatten() for n in theta if block_of(n) == layer])
        assert abs(noise.std().item() / (alpha * sigma) - 1) < 0.05, (layer, noise.std().item(), alpha * sigma)
    # the update is applied as for any one copy: θ + (returned − published)
    returned = {n: t + 0.01 for n, t in copy.items()}
    new = server.aggregate([returned])
    assert all(torch.allclose(new[n], theta[n] + 0.01, atol=1e-6) for n in theta)


def test_noised_alpha_max_at_kappa_is_one_copy_at_twice_kappa(theta):
    """Linear α_k run from 1 to 2: the noised copy at the largest α is the same draw as a plain noised copy at 2κ
    (same seed), element for element."""
    (at_max,) = server_for(theta, arm="noised", kappa=0.5, noised_alpha="max", seed=4).publish()
    (at_2k,) = server_for(theta, arm="noised", kappa=1.0, seed=4).publish()
    assert all(torch.allclose(at_max[n], at_2k[n], rtol=0, atol=1e-6) for n in theta)
    assert not torch.equal(at_max["model.layers.0.mlp.up_proj.weight"], theta["model.layers.0.mlp.up_proj.weight"])


def test_noised_alpha_random_takes_the_rounds_secret_alphas(theta):
    server = server_for(theta, arm="noised", kappa=0.1, m=4, alpha_schedule="random", noised_alpha="max", seed=3)
    server.publish()
    (alpha,) = server.private_state()["alphas"]
    assert 1.0 < alpha < 2.0
    mpu = server_for(theta, arm="mpu", kappa=0.1, m=4, alpha_schedule="random", seed=3)
    mpu.publish()
    assert alpha == max(mpu.private_state()["alphas"])  # the α the MPU arm of the same seed draws


def test_noised_alpha_is_refused_when_bad(theta):
    with pytest.raises(ValueError, match=r"^noised_alpha='median' is not one of \['one', 'mean', 'max'\]"):
        ServerConfig(arm="noised", noised_alpha="median")
    with pytest.raises(ValueError, match="m=1 .*noised_alpha=mean"):
        ServerConfig(arm="noised", m=1, noised_alpha="mean")
    ServerConfig(arm="noised", m=1)  # one copy at σ needs no m


def test_the_server_settings_travel_to_mpu_server_init_in_server_json(tmp_path, capsys):
    """transport=files: run/processes.py writes ServerConfig.from_config(cfg) as SERVER.json into the private state
    folder; `mpu-server init --config` reads it back whole (the seed included, which is never an option), its
    options override it, and a bad value is refused in one line before any model is loaded."""
    from omegaconf import OmegaConf

    from mpu_cli.cli.server import main, parser
    from mpu_cli.config import MPUConfig
    from mpu_cli.run.processes import write_server_settings

    cfg = OmegaConf.merge(OmegaConf.structured(MPUConfig), OmegaConf.from_dotlist(
        ["arm=noised", "kappa=1", "seed=7", "server.noised_alpha=max", "server.perturb_unprotected=true"]))
    path = write_server_settings(cfg, tmp_path / "state")
    sent = ServerConfig.from_config(cfg)
    assert ServerConfig.read(path) == sent and (sent.arm, sent.kappa, sent.seed, sent.noised_alpha) == (
        "noised", 1.0, 7, "max") and isinstance(sent.kappa, float)
    args = parser().parse_args(["init", "--state", "s", "--exchange", "x", "--target", "T", "--config", str(path),
                                "--m", "3", "--no-perturb-unprotected"])
    given = ServerConfig.read(args.config, {name: getattr(args, name) for name in args.settings})
    assert (given.m, given.perturb_unprotected, given.seed, given.noised_alpha) == (3, False, 7, "max")
    with pytest.raises(SystemExit):  # the seed is a secret: no option for it
        parser().parse_args(["init", "--state", "s", "--exchange", "x", "--target", "T", "--seed", "1"])
    capsys.readouterr()
    for argv, message in (
            (["--arm", "noised", "--noised-alpha", "median"], "noised_alpha='median' is not one of ['one', 'mean', 'max']"),
            (["--config", str(tmp_path / "none.json")], "none.json: not a readable SERVER.json"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(["init", "--state", str(tmp_path / "s"), "--exchange", str(tmp_path / "x"), "--target", "T", *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(err) == 1 and message in err[0], err
    (tmp_path / "extra.json").write_text(json.dumps({"kappa": 0.1, "sigma": 2}))
    with pytest.raises(ValueError, match=r"unknown keys \['sigma'\]; accepted: \['alpha_schedule'"):
        ServerConfig.read(tmp_path / "extra.json")


def test_every_server_setting_is_a_config_key_an_mpu_server_option_and_travels(tmp_path, capsys):
    """A setting added to mpu/settings.py is all it takes: the schema knows it, mpu-run's --help and mpu-server's
    init describe it, SERVER.json carries it (the seed, a secret, is never an option)."""
    from dataclasses import fields

    from omegaconf import OmegaConf

    from mpu_cli.cli.help import entries
    from mpu_cli.cli.server import main
    from mpu_cli.config import MPUConfig
    from mpu_cli.mpu.settings import ServerOptions

    schema = OmegaConf.structured(MPUConfig)
    with pytest.raises(SystemExit):
        main(["init", "--help"])
    init_help = capsys.readouterr().out
    run_help = {e.name for e in entries("config")[1]}
    options = {f.name for f in fields(ServerOptions)}
    for f in fields(ServerConfig):
        assert f.metadata["help"], f.name
        assert (f"server.{f.name}" in run_help and f.name in schema.server) if f.name in options else f.name in schema
        assert (f"--{f.name.replace('_', '-')}" in init_help) is not f.metadata["secret"], f.name
    # two configs between them change every field: noised_alpha needs arm=noised, common_noise an mpu arm
    noised = ServerConfig(alpha_schedule="pow2", eta=0.5, publish_dtype="float32", perturb_unprotected=True,
                          noise_reference="raw", noised_alpha="mean", arm="noised", kappa=0.2, m=3, seed=11)
    common = ServerConfig(arm="mpu", kappa=0.2, m=3, seed=11, common_noise=0.5)
    assert all(any(getattr(c, f.name) != f.default for c in (noised, common)) for f in fields(ServerConfig)), \
        "every field changed"
    for changed in (noised, common):
        changed.write(tmp_path / "server.json")
        assert ServerConfig.read(tmp_path / "server.json") == changed


def test_a_rule_added_to_the_server_settings_is_checked_by_mpu_run_before_any_work(monkeypatch):
    """mpu-run's input checks apply ServerConfig.validate whole: a new rule needs no second copy in config.py."""
    from omegaconf import OmegaConf

    from mpu_cli.config import ConfigError, MPUConfig
    from mpu_cli.run.checks import validate

    def validate_with_a_new_rule(self):
        if self.eta > 2:
            raise ValueError(f"eta={self.eta!r} is not valid; accepted: at most 2")

    monkeypatch.setattr(ServerConfig, "validate", validate_with_a_new_rule)
    cfg = OmegaConf.merge(OmegaConf.structured(MPUConfig), OmegaConf.from_dotlist(["server.eta=3"]))
    with pytest.raises(ConfigError, match=r"^server\.eta=3\.0 is not valid; accepted: at most 2$"):
        validate(cfg)


def test_mpu_publishes_m_transformed_zero_sum_copies(model, theta):
    server = server_for(theta, arm="mpu", kappa=0.1, m=3, seed=0)
    copies = server.publish()
    secrets = server.private_state()
    assert len(copies) == 3 and secrets["alphas"] == [1.0, 1.5, 2.0]
    for pub in copies:
        assert set(pub) == set(theta) and all(type(v) is torch.Tensor for v in pub.values())
        assert not torch.allclose(
            pub["model.layers.0.mlp.up_proj.weight"], theta["model.layers.0.mlp.up_proj.weight"], atol=1e-2
        )
        assert all(torch.equal(pub[n], theta[n]) for n in OUTSIDE)
    # undo T_k and α_k: the noises ε⁰_k sum to zero
    eps0 = [
        {n: (x - theta[n]) / a for n, x in invert_transform(pub, LAYOUT, t).items()}
        for pub, t, a in zip(copies, secrets["transforms"], secrets["alphas"])
    ]
    for n in theta:
        assert (eps0[0][n] + eps0[1][n] + eps0[2][n]).abs().max() < 1e-5
    # fresh T every round
    server.aggregate(copies)
    server.publish()
    perm1, perm2 = secrets["transforms"][0].perms[0], server.private_state()["transforms"][0].perms[0]
    assert not torch.equal(perm1, perm2)


def test_mpu_copies_without_noise_compute_the_same_function(model, theta):
    server = server_for(theta, arm="mpu", kappa=0.0, m=2, seed=0)
    ids = torch.randint(0, 100, (1, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(ids).logits
        for pub in server.publish():
            assert not torch.equal(
                pub["model.layers.1.mlp.down_proj.weight"], theta["model.layers.1.mlp.down_proj.weight"]
            )
            assert (functional_call(model, pub, (ids,)).logits - ref).abs().max() <= 1e-5


def test_linear_client_over_two_rounds(theta):
    server = server_for(theta, arm="mpu", kappa=0.1, m=2, seed=4)
    for _ in range(2):
        server.aggregate([{n: 0.5 * x for n, x in pub.items()} for pub in server.publish()])
    assert server.public_info()["round"] == 2
    assert max((server.theta[n] - 0.25 * theta[n]).abs().max().item() for n in theta) < 1e-5


@pytest.mark.parametrize("arm", ["noised", "mpu"])
def test_aggregate_leaves_the_returned_copies_untouched(theta, arm):
    server = server_for(theta, arm=arm, kappa=0.1, m=2, seed=5)
    returned = [{n: x + 0.01 for n, x in pub.items()} for pub in server.publish()]
    before = [{n: x.clone() for n, x in r.items()} for r in returned]
    server.aggregate(returned)
    assert all(torch.equal(r[n], b[n]) for r, b in zip(returned, before) for n in r)


def test_publish_copies_builds_each_copy_alone_like_publish(theta):
    a, b = server_for(theta, m=3, seed=9), server_for(theta, m=3, seed=9)
    together, lazy = a.publish(), b.publish_copies()
    assert len(lazy) == 3
    for k in (2, 0, 1):  # any order, one at a time
        assert all(torch.equal(lazy[k][n], together[k][n]) for n in theta)
    returned = [{n: x * 0.9 for n, x in c.items()} for c in together]
    b.aggregate(returned)
    with pytest.raises(RuntimeError, match="no longer pending"):
        lazy[0]


def test_seed_reproduces_copies_and_no_seed_draws_fresh_secrets(theta):
    a, b = server_for(theta, seed=123), server_for(theta, seed=123)
    for _ in range(2):
        ca, cb = a.publish(), b.publish()
        assert all(torch.equal(x[n], y[n]) for x, y in zip(ca, cb) for n in theta)
        a.aggregate(ca), b.aggregate(cb)
    c, d = server_for(theta, seed=None), server_for(theta, seed=None)
    name = "model.layers.0.self_attn.k_proj.weight"
    assert not torch.equal(c.publish()[0][name], d.publish()[0][name])
    assert c.private_state()["round_seed"] != d.private_state()["round_seed"]


def test_public_info_reveals_no_secret(theta):
    server = server_for(theta, seed=99)
    server.publish()
    info = server.public_info()
    assert set(info) == {
        "round",
        "arm",
        "m",
        "kappa",
        "noise_reference",
        "perturb_unprotected",
        "exposed_fraction",
        "seed_recorded",
    }
    text = json.dumps(info)
    secrets = server.private_state()
    assert str(secrets["round_seed"]) not in text and 99 not in info.values()
    assert not any(repr(s) in text for s in secrets["sigmas"].values())
    assert info["seed_recorded"] is True and info["round"] == 1 and info["m"] == 2
    assert server_for(theta).public_info()["seed_recorded"] is False
    assert "round_seed" not in repr(server.__dict__.get("_secrets"))  # secrets do not print themselves


def test_exposed_fraction_on_small_llama(theta):
    total = sum(t.numel() for t in theta.values())
    outside = sum(theta[n].numel() for n in OUTSIDE)
    assert outside == 100 * 64 * 2 + 64
    assert server_for(theta).public_info()["exposed_fraction"] == pytest.approx(outside / total)
    assert server_for(theta, arm="clean").public_info()["exposed_fraction"] == 1.0
    covered = server_for(theta, perturb_unprotected=True, kappa=0.1, seed=0)
    assert covered.public_info()["exposed_fraction"] == 0.0
    pubs = covered.publish()
    assert not any(torch.equal(pubs[0][n], theta[n]) for n in OUTSIDE)
    # unprotected tensors get zero-sum noise too, with α but without T
    s = covered.private_state()
    e = [(pub["lm_head.weight"] - theta["lm_head.weight"]) / a for pub, a in zip(pubs, s["alphas"])]
    assert (e[0] + e[1]).abs().max() < 1e-5 and s["sigma_unprotected"] > 0


def test_tied_embeddings_get_the_same_noise(theta):
    theta["lm_head.weight"] = theta["model.embed_tokens.weight"]
    (pub, _) = server_for(theta, perturb_unprotected=True, kappa=0.1, seed=0).publish()
    assert torch.equal(pub["lm_head.weight"], pub["model.embed_tokens.weight"])


def test_bf16_model_keeps_fp32_theta_and_identity_round_is_exact(theta):
    bf16 = {n: t.to(torch.bfloat16) for n, t in theta.items()}
    server = server_for(bf16, arm="mpu", kappa=0.01, m=2, seed=5)
    assert all(
        server.theta[n].dtype == torch.float32 and torch.equal(server.theta[n], bf16[n].float()) for n in bf16
    )
    for _ in range(2):
        copies = server.publish()
        assert all(t.dtype == torch.bfloat16 for pub in copies for t in pub.values())
        # 1 % noise survives bf16 rounding on most elements (the reference's bf16 server arithmetic loses it)
        name = "model.layers.0.mlp.up_proj.weight"
        inv = invert_transform(copies[0], LAYOUT, server.private_state()["transforms"][0])
        assert (inv[name] != bf16[name]).float().mean() > 0.5
        new = server.aggregate(copies)  # the client changed nothing
        assert all(new[n].dtype == torch.float32 and torch.equal(new[n], bf16[n].float()) for n in bf16)


def test_base_reference_and_raw_fallback(theta):
    g = torch.Generator().manual_seed(3)
    base = {n: t - 0.01 * torch.randn(t.shape, generator=g) for n, t in theta.items()}
    with_base = MPUServer(theta, LAYOUT, ServerConfig(kappa=0.1, seed=0), base=base)
    with_base.publish()
    assert with_base.public_info()["noise_reference"] == "base"
    assert with_base.private_state()["sigmas"] == block_sigmas(theta, base, 0.1, LAYOUT)
    assert all(s < 0.002 for s in with_base.private_state()["sigmas"].values())  # κ · RMS(θ − θ_base) ≈ 0.001
    raw = MPUServer(theta, LAYOUT, ServerConfig(kappa=0.1, noise_reference="raw", seed=0), base=base)
    raw.publish()
    assert raw.private_state()["sigmas"] == block_sigmas(theta, None, 0.1, LAYOUT)
    assert server_for(theta).public_info()["noise_reference"] == "raw"  # no base: falls back to raw


@pytest.mark.parametrize("settings, expected", [
    ({"kappa": float("inf")}, "kappa=inf is not a finite number; accepted: a finite number >= 0"),
    ({"kappa": -0.1}, "kappa=-0.1 must be >= 0"),
    ({"eta": float("nan")}, "eta=nan is not a finite number; accepted: a finite number > 0"),
    ({"eta": 0.0}, "eta=0.0 must be > 0"),
    ({"m": 0, "arm": "noised"}, "m=0 must be >= 1"),
    ({"seed": "7"}, "seed='7' is not an integer; accepted: an integer"),
    ({"alpha_schedule": "pow3"},
     "alpha_schedule='pow3' is not one of ['linear', 'pow2', 'random']; did you mean 'pow2'?"),
])
def test_server_settings_read_from_json_keep_the_schemas_rules(settings, expected):
    """SERVER.json and mpu-server's options never pass the config schema: the same declared types, choices and
    ranges are enforced on the ServerConfig itself (options.check_settings), with mpu-run's one-line message."""
    with pytest.raises(ValueError) as e:
        ServerConfig(**settings)
    assert str(e.value) == expected


def test_bad_config_and_call_order_fail_clearly(theta):
    with pytest.raises(ValueError, match=r"arm='foo' is not one of \['clean', 'noised', 'mpu'\]"):
        ServerConfig(arm="foo")
    with pytest.raises(ValueError, match="m=1"):
        ServerConfig(arm="mpu", m=1)
    with pytest.raises(ValueError, match="noise_reference"):
        ServerConfig(noise_reference="zero")
    server = server_for(theta, seed=0)
    with pytest.raises(RuntimeError, match="publish"):
        server.aggregate([])
    copies = server.publish()
    with pytest.raises(RuntimeError, match="aggregate"):
        server.publish()
    with pytest.raises(ValueError, match="expected 2 returned copies"):
        server.aggregate(copies[:1])
    del copies[1]["lm_head.weight"]
    with pytest.raises(ValueError, match="lm_head.weight"):
        server.aggregate(copies)


def test_server_package_imports_neither_client_nor_data():
    import mpu_cli.mpu as pkg

    for path in Path(pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                assert not any(part in ("unlearn", "data") for part in name.lstrip(".").split(".")), (
                    path.name,
                    name,
                )
                assert not name.startswith(".."), (path.name, name)  # nothing from the parent package at all
