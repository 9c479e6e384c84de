"""models/files.py: a model folder read one tensor at a time gives what load_model gives, in the same order and
dtype, from one file or from shards, tied LM head included; a folder without safetensors is loaded whole."""
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from mpu_cli.models.files import TensorFiles, open_model
from mpu_cli.models.io import load_model
from mpu_cli.models.tiny import SHIPPED_BASE


def _tied(folder, **save):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(str(folder), **save)
    return folder


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("which", ["shipped", "tied_sharded"])
def test_lazy_folder_equals_load_model(tmp_path, dtype, which):
    folder = SHIPPED_BASE if which == "shipped" else _tied(tmp_path / "m", max_shard_size="20KB")
    if which != "shipped":
        assert len(list(folder.glob("model-*.safetensors"))) > 1
    lazy = open_model(str(folder), dtype)
    assert isinstance(lazy, TensorFiles)
    whole = load_model(str(folder), dtype).state_dict()
    assert list(lazy) == list(whole)
    for name, t in whole.items():
        got = lazy[name]
        assert lazy.shape(name) == tuple(t.shape) and lazy.dtype(name) == t.dtype == got.dtype
        assert torch.equal(got, t), name


def test_a_folder_without_safetensors_is_loaded_whole(tmp_path):
    from safetensors.torch import load_file

    folder = _tied(tmp_path / "bin")
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    state = open_model(str(folder), torch.float32)
    assert not isinstance(state, TensorFiles)
    whole = AutoModelForCausalLM.from_pretrained(str(folder)).state_dict()
    assert list(state) == list(whole) and all(torch.equal(state[n], whole[n]) for n in whole)
