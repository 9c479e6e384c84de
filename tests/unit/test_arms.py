"""arm=clean runs through the same server + client path and must equal plain unlearning of theta exactly."""
import torch

from mpu_cli.data.formatting import ChatFormat, encode_qa, pad_id
from mpu_cli.data.tofu import load_split
from mpu_cli.models.io import state_dict_fp32
from mpu_cli.models.tiny import init_tiny_llama, load_embedded_tokenizer
from mpu_cli.mpu.layout import ModelLayout
from mpu_cli.mpu.server import MPUServer, ServerConfig
from mpu_cli.unlearn.algorithms import build_algorithm
from mpu_cli.unlearn.client import ClientConfig, ClientData, unlearn_copy


def _setup():
    tok = load_embedded_tokenizer()
    fmt = ChatFormat(max_length=64)
    enc = lambda rows: [encode_qa(tok, r["question"], r["answer"], fmt) for r in rows]
    data = ClientData(enc(load_split("embedded", "forget01")), enc(load_split("embedded", "retain99")[:8]))
    model = init_tiny_llama(tok, seed=1)
    cfg = ClientConfig(lr=1e-3, epochs=2, batch_size=2, grad_accum=2, seed=3)
    return tok, data, model, cfg


def test_clean_arm_equals_plain_unlearning_exactly():
    tok, data, model, cfg = _setup()
    theta = state_dict_fp32(model)
    algo = build_algorithm("npo", {})
    plain = unlearn_copy(model, theta, algo, data, cfg, pad_id(tok))

    server = MPUServer(theta, ModelLayout.from_hf_config(model.config), ServerConfig(arm="clean"))
    (copy,) = server.publish()
    returned = unlearn_copy(model, copy, algo, data, cfg, pad_id(tok))
    result = server.aggregate([returned])
    assert all(torch.equal(result[k], plain[k]) for k in plain)
    assert any(not torch.equal(plain[k], theta[k]) for k in plain)  # unlearning did move the model


def test_mpu_arm_moves_theta_differently_from_clean_but_close():
    tok, data, model, cfg = _setup()
    theta = state_dict_fp32(model)
    algo = build_algorithm("ga", {})
    clean = unlearn_copy(model, theta, algo, data, cfg, pad_id(tok))
    server = MPUServer(theta, ModelLayout.from_hf_config(model.config), ServerConfig(arm="mpu", kappa=0.01, m=2, seed=0))
    copies = server.publish()
    result = server.aggregate([unlearn_copy(model, c, algo, data, cfg, pad_id(tok)) for c in copies])
    num = sum((result[k] - clean[k]).pow(2).sum() for k in theta).sqrt()
    den = sum((clean[k] - theta[k]).pow(2).sum() for k in theta).sqrt()
    assert 0 < num / den < 0.5, float(num / den)
