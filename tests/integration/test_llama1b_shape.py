"""scripts/make_llama1b_shape.py at a reduced width, run as a process: the folder it writes is the real model's
layout (config, bf16 sharded safetensors with an index, Llama-3's special tokens at their ids and its chat
format), and the project's model checks and loaders accept it."""
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "make_llama1b_shape.py"
SMALL = ["--layers", "2", "--hidden", "64", "--intermediate", "128", "--heads", "4", "--kv-heads", "2",
         "--max-shard-size", "5MB"]


def _make(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(out), *SMALL, *args], check=False, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """Base (seed 0) and target (seed 1), as scripts/scale_1b.py makes them."""
    root = tmp_path_factory.mktemp("shape")
    for seed in (0, 1):
        proc = _make(root / f"s{seed}", "--seed", str(seed))
        assert proc.returncode == 0, proc.stderr[-2000:]
    return root / "s0", root / "s1"


def test_config_is_llama_3_2_1b_except_the_reduced_sizes(shapes):
    cfg = json.loads((shapes[0] / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"]) == (2, 64, 4)
    assert cfg["head_dim"] == 16 and cfg["num_key_value_heads"] == 2
    assert cfg["vocab_size"] == 128256 and cfg["tie_word_embeddings"] is True and cfg["torch_dtype"] == "bfloat16"
    assert cfg["rope_theta"] == 500000.0 and cfg["rope_scaling"]["rope_type"] == "llama3"
    assert cfg["bos_token_id"] == 128000 and cfg["eos_token_id"] == [128001, 128008, 128009]


def test_weights_are_bf16_sharded_with_an_index(shapes):
    from safetensors import safe_open

    index = json.loads((shapes[0] / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2 and all((shapes[0] / s).is_file() for s in shards)
    assert "lm_head.weight" not in index["weight_map"]  # tied to the embeddings, as in the real folder
    for shard in shards:
        with safe_open(str(shapes[0] / shard), framework="pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}  # noqa: SIM118


def test_seeds_give_different_weights_and_a_seed_the_same(shapes, tmp_path):
    from safetensors.torch import load_file

    proc = _make(tmp_path / "again", "--seed", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = min(shapes[0].glob("model-*.safetensors")).name
    a, b, again = (load_file(str(d / first)) for d in (shapes[0], shapes[1], tmp_path / "again"))
    name = "model.embed_tokens.weight"
    assert a[name].equal(again[name]) and not a[name].equal(b[name])


def test_tokenizer_has_llama3_special_tokens_and_chat_format(shapes):
    from mpu_cli.data.formatting import ChatFormat, encode_qa, full_text
    from mpu_cli.models.io import load_tokenizer

    tok = load_tokenizer(str(shapes[0]))
    assert len(tok) == 128256
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                                      "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>",
                                                      "<|python_tag|>", "<|reserved_special_token_247|>")}
    assert ids == {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|start_header_id|>": 128006,
                   "<|end_header_id|>": 128007, "<|eom_id|>": 128008, "<|eot_id|>": 128009,
                   "<|python_tag|>": 128010, "<|reserved_special_token_247|>": 128255}
    assert tok.bos_token_id == 128000 and tok.eos_token_id == 128009
    assert tok("Hi")["input_ids"][0] == 128000  # add_special_tokens prepends <|begin_of_text|>, as Llama-3's
    fmt = ChatFormat("You are a helpful assistant.", "10 Apr 2025", 512)
    text = full_text(tok, "Who?", "Me.", fmt)
    assert text == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
                    "December 2023\nToday Date: 10 Apr 2025\n\nYou are a helpful assistant.<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\nWho?<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\nMe.<|eot_id|>")
    enc = encode_qa(tok, "Who?", "Me.", fmt)
    assert enc["input_ids"][-1] == 128009 and tok.decode(enc["input_ids"]) == text
    answer = [i for i, lab in zip(enc["input_ids"], enc["labels"]) if lab != -100]
    assert tok.decode(answer) == "Me.<|eot_id|>"  # the loss covers the answer and its end of turn only


def test_model_checks_and_loader_accept_it(shapes):
    from mpu_cli.models.check import check_models, model_family
    from mpu_cli.models.io import load_model
    from mpu_cli.run.inputs import check_model_families, check_model_sources

    base, target = (str(p) for p in shapes)
    model_cfg = {"base": base, "target": target, "retain": None, "tokenizer": None}
    check_model_sources(model_cfg)
    check_model_families(model_cfg)
    assert "llama" in model_family(base, "model.base", base).model_types
    check_models(SimpleNamespace(base=base, target=target, retain=None), model_cfg)
    model = load_model(target)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.config.rope_parameters["rope_type"] == "llama3"


def test_mpu_run_config_checks_accept_it_as_base_and_target(shapes):
    from hydra import compose, initialize_config_dir

    from mpu_cli.config import CONF_DIR, register_configs
    from mpu_cli.run.checks import validate

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=[
            "model=llama-3.2-1b-instruct", f"model.base={shapes[0]}", f"model.target={shapes[1]}",
            "model.retain=null", "model.tokenizer=null", "server.publish_dtype=float32", "transport=files"])
    validate(cfg)


def test_a_folder_in_the_way_is_refused(tmp_path):
    (tmp_path / "x").write_text("")
    proc = _make(tmp_path)
    assert proc.returncode == 2 and "not empty" in proc.stderr
