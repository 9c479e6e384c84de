"""The model-family adapter (models/family.py): the supported model_types, the roles it declares, and the input
checks that refuse any other family — or a block tensor without a role — in one line before any work starts."""
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file
from transformers import GemmaConfig, LlamaConfig, LlamaForCausalLM, Qwen3Config

from mpu_cli.config import ConfigError
from mpu_cli.models.check import check_models
from mpu_cli.models.family import (
    COLUMNS,
    KEEP,
    PERMUTE,
    ROWS,
    SUPPORTED,
    UnsupportedModel,
    family_of,
)
from mpu_cli.mpu import ModelLayout, MPUServer, ServerConfig
from mpu_cli.run.inputs import check_model_families

SMALL = {"vocab_size": 32, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
         "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 16}


def test_supported_families():
    assert SUPPORTED == ("llama", "mistral", "qwen2")
    for model_type in SUPPORTED:
        assert model_type in family_of(model_type).model_types


@pytest.mark.parametrize("config", [Qwen3Config, GemmaConfig], ids=["qwen3", "gemma"])
def test_unsupported_model_type_is_refused_in_one_line(config):
    with pytest.raises(UnsupportedModel) as e:
        ModelLayout.from_hf_config(config(**SMALL))
    line = str(e.value)
    assert "\n" not in line and f"model_type={config.model_type!r}" in line
    assert line.endswith("accepted: llama, mistral, qwen2")
    with pytest.raises(UnsupportedModel, match="accepted: llama, mistral, qwen2"):
        ModelLayout(num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8, hidden_size=16, intermediate_size=24,
                    model_type=config.model_type)


def test_roles_of_the_decoder_family():
    family = family_of("qwen2")
    assert family.members(PERMUTE, axis=ROWS) == ["mlp.gate_proj.weight", "mlp.gate_proj.bias",
                                                  "mlp.up_proj.weight", "mlp.up_proj.bias"]
    assert family.members(PERMUTE, axis=COLUMNS) == ["mlp.down_proj.weight"]
    # a bias follows its projection's output side: kept where T acts on the columns
    for suffix in ("self_attn.o_proj.bias", "mlp.down_proj.bias", "input_layernorm.weight",
                   "post_attention_layernorm.weight"):
        role = family.role(suffix)
        assert role.op == KEEP and "residual stream" in role.why
    assert family.role("self_attn.q_proj.bias") == family.role("self_attn.q_proj.weight")
    assert family.mlp_output_weight(3) == "model.layers.3.mlp.down_proj.weight"
    for suffix in ("self_attn.q_norm.weight", "mlp.down_proj.scale", "self_attn.qkv_proj.weight"):
        with pytest.raises(UnsupportedModel, match="has no declared role"):
            family.role(suffix)


def test_run_input_check_refuses_an_unsupported_family(tmp_path):
    Qwen3Config(**SMALL).save_pretrained(tmp_path / "qwen3")  # the check reads config.json only
    LlamaConfig(**SMALL).save_pretrained(tmp_path / "llama")
    check_model_families(OmegaConf.create({"base": str(tmp_path / "llama"), "target": "finetune", "retain": None}))
    cfg = OmegaConf.create({"base": str(tmp_path / "llama"), "target": str(tmp_path / "qwen3"), "retain": None})
    with pytest.raises(ConfigError) as e:
        check_model_families(cfg)
    line = str(e.value)
    assert "\n" not in line and line.startswith(f"model.target={str(tmp_path / 'qwen3')!r}: model_type='qwen3'")
    assert line.endswith("accepted: llama, mistral, qwen2")


def test_model_check_refuses_a_block_tensor_without_a_role(tmp_path):
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**SMALL)).save_pretrained(tmp_path / "base")
    prepared = SimpleNamespace(base=str(tmp_path / "base"), target=str(tmp_path / "base"), retain=None)
    check_models(prepared, {"base": "base", "target": "finetune"})
    save_file({"model.layers.1.self_attn.q_norm.weight": torch.ones(8)}, str(tmp_path / "base" / "extra.safetensors"))
    with pytest.raises(ConfigError, match=r"model.base='base': block tensor 'self_attn.q_norm.weight' has no "
                                          r"declared role in the llama/mistral/qwen2 adapter"):
        check_models(prepared, {"base": "base", "target": "finetune"})


def test_server_refuses_a_block_tensor_without_a_role():
    layout = ModelLayout.from_hf_config(LlamaConfig(**SMALL))
    theta = {"model.layers.0.input_layernorm.weight": torch.ones(16), "model.norm.weight": torch.ones(16)}
    MPUServer(theta, layout, ServerConfig(seed=0))
    with pytest.raises(UnsupportedModel, match="'self_attn.k_norm.weight' has no declared role"):
        MPUServer({**theta, "model.layers.0.self_attn.k_norm.weight": torch.ones(8)}, layout, ServerConfig(seed=0))
