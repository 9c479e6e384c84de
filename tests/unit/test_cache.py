"""The content-addressed cache and a model's identity: an entry is reused only while every file matches what was
recorded when it was built (a damaged one is rebuilt), a model is identified by the content of its weights,
config and tokenizer (hashed without reading a whole file into memory), and a resumed run refuses models that
changed since it started."""
from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import pytest

from mpu_cli import cache
from mpu_cli.config import ConfigError
from mpu_cli.models.identity import model_identity
from mpu_cli.models.prepare import _cached
from mpu_cli.models.tiny import SHIPPED_BASE
from mpu_cli.run import identity


def _build(calls: list):
    """A stand-in for a model build: weights, config and tokenizer files, as a prepared model has them."""
    def build(out: Path) -> dict:
        calls.append(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.safetensors").write_bytes(bytes(range(256)) * 64)
        (out / "config.json").write_text(json.dumps({"model_type": "llama", "rms_norm_eps": 1e-6}))
        (out / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {str(i): i for i in range(200)}}}))
        return {"epochs": 3}
    return build


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", ["truncated tokenizer", "edited config", "missing weights", "added file",
                                    "truncated marker"])
def test_a_damaged_cache_entry_is_rebuilt(tmp_path, caplog, damage):
    calls: list = []
    entry = Path(_cached(tmp_path, "target", {"k": 1}, _build(calls)))
    assert _cached(tmp_path, "target", {"k": 1}, _build(calls)) == str(entry) and len(calls) == 1  # reused
    if damage == "truncated tokenizer":
        _truncate(entry / "tokenizer.json")
    elif damage == "edited config":
        (entry / "config.json").write_text(json.dumps({"model_type": "llama", "rms_norm_eps": 0.5}))
    elif damage == "missing weights":
        (entry / "model.safetensors").unlink()
    elif damage == "added file":
        (entry / "tokenizer.model").write_bytes(b"not ours")
    else:
        _truncate(entry / cache.MARKER)
    with caplog.at_level("WARNING"):
        assert _cached(tmp_path, "target", {"k": 1}, _build(calls)) == str(entry)
    assert len(calls) == 2 and "is damaged" in caplog.text and "rebuilding" in caplog.text
    assert cache.damaged(entry) is None and cache.built_info(entry) == {"epochs": 3}
    assert json.loads((entry / "tokenizer.json").read_text())["model"]["vocab"]["199"] == 199


def _copy_of_a_model(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(SHIPPED_BASE, folder)
    return folder


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"])
def test_a_models_identity_covers_its_weights_config_and_tokenizer(tmp_path, name):
    folder = _copy_of_a_model(tmp_path)
    before = model_identity(folder)
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(before.files)
    assert "recipe.json" not in before.files  # the cache's own record is not part of the model
    data = bytearray((folder / name).read_bytes())
    data[-2] ^= 1  # one bit of the file changed, its size kept
    (folder / name).write_bytes(bytes(data))
    after = model_identity(folder)
    assert after.digest != before.digest
    assert after.changed_file(before) == str(folder / name)


def test_a_models_identity_is_hashed_without_reading_a_whole_file(tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    with open(folder / "model.safetensors", "wb") as f:
        f.writelines(bytes(range(256)) * 16384 for _ in range(16))  # 64 MiB in all, written 4 MiB at a time
    tracemalloc.start()
    try:
        model_identity(folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB while hashing a 64 MiB file"


def test_resume_refuses_a_model_file_changed_since_the_run_started(tmp_path):
    from types import SimpleNamespace

    folder = _copy_of_a_model(tmp_path)
    run = tmp_path / "run"
    prepared = SimpleNamespace(base=str(SHIPPED_BASE), target=str(folder), retain=None, tokenizer=str(folder))
    identity.record(run, identity.run_models(prepared))
    identity.check_unchanged(run, identity.run_models(prepared))  # unchanged: resumes
    _truncate(folder / "tokenizer.json")
    with pytest.raises(ConfigError) as e:
        identity.check_unchanged(run, identity.run_models(prepared))
    assert "\n" not in str(e.value) and str(folder / "tokenizer.json") in str(e.value)
    assert "target model" in str(e.value) and "overwrite=true" in str(e.value)
    moved = SimpleNamespace(**(vars(prepared) | {"target": str(SHIPPED_BASE)}))
    with pytest.raises(ConfigError, match="its target model is now"):
        identity.check_unchanged(run, identity.run_models(moved))


def _tiny_gguf(path: Path) -> Path:
    """The shipped tiny base written as a GGUF file (fp32 tensors, its BPE tokenizer), as llama.cpp lays one out."""
    gguf = pytest.importorskip("gguf")
    import numpy as np
    from safetensors.numpy import load_file

    cfg = json.loads((SHIPPED_BASE / "config.json").read_text())
    tok = json.loads((SHIPPED_BASE / "tokenizer.json").read_text())
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    vocab = tok["model"]["vocab"] | {t["content"]: t["id"] for t in tok["added_tokens"]}
    tokens = sorted(vocab, key=vocab.get)
    special = {t["content"] for t in tok["added_tokens"]}
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in special else 1 for t in tokens])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]])
    w.add_bos_token_id(vocab["<|bos|>"])
    w.add_eos_token_id(vocab["<|end|>"])
    w.add_pad_token_id(vocab["<|pad|>"])
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    block = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for name, t in load_file(str(SHIPPED_BASE / "model.safetensors")).items():
        if name.startswith("model.layers."):
            _, _, i, rest = name.split(".", 3)
            name = f"blk.{i}.{block[rest.removesuffix('.weight')]}.weight"
        w.add_tensor(top.get(name, name), t.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_a_gguf_model_is_converted_into_prepare_cache_dir(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from mpu_cli.config import DataConfig, ModelConfig, PrepareSettings
    from mpu_cli.models.prepare import prepare_models

    monkeypatch.setenv("MPU_CACHE_DIR", str(tmp_path / "env-cache"))
    gguf_file = _tiny_gguf(tmp_path / "tiny.gguf")
    model = OmegaConf.structured(ModelConfig(base=str(gguf_file), target=str(gguf_file), retain=None))
    prep = OmegaConf.structured(PrepareSettings(cache_dir=str(tmp_path / "cache")))
    prepared = prepare_models(model, OmegaConf.structured(DataConfig(split="forget01")), prep)
    converted = Path(prepared.base)
    assert converted.parent == tmp_path / "cache" / "gguf" and cache.damaged(converted) is None
    assert prepared.target == prepared.base and prepared.tokenizer == prepared.base
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(model_identity(converted).files)
    assert not (tmp_path / "env-cache").exists()
    stamp = (converted / cache.MARKER).stat().st_mtime_ns
    assert prepare_models(model, OmegaConf.structured(DataConfig(split="forget01")), prep) == prepared
    assert (converted / cache.MARKER).stat().st_mtime_ns == stamp  # converted once


def test_an_edited_config_is_never_evaluated_from_a_stale_cache(tmp_path):
    """The fixed-model evaluation is keyed by the model's identity: after its config.json changed (same weights),
    the evaluation is computed again, not read from the entry of the old config."""
    from types import SimpleNamespace

    from hydra import compose, initialize_config_dir

    from mpu_cli.config import CONF_DIR, register_configs
    from mpu_cli.models.io import load_tokenizer, resolve_dtype
    from mpu_cli.run.evaluation import cached_evaluation, eval_data
    from mpu_cli.run.settings import chat_format

    folder = _copy_of_a_model(tmp_path)
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=["data.split=forget01", "eval.metrics=quick",
                                                       "eval.max_new_tokens=4", f"prepare.cache_dir={tmp_path / 'c'}"])
    prepared = SimpleNamespace(base=None, target=str(folder), retain=None, tokenizer=str(folder))
    data = {k: v[:4] for k, v in eval_data(cfg.data).items()}

    def evaluate() -> dict:
        models = identity.run_models(prepared)
        return cached_evaluation(cfg, str(folder), load_tokenizer(str(folder)), chat_format(cfg.model),
                                 resolve_dtype("float32"), None, data, None, "target",
                                 identity.evaluated_digest(models, "target"))

    before = evaluate()
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"rms_norm_eps": 0.5}))
    after = evaluate()
    assert after["forget_Q_A_Prob"] != before["forget_Q_A_Prob"]
    assert len(list((tmp_path / "c" / "evals").glob("eval-*"))) == 2
