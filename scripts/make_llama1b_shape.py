"""Write a Llama-3.2-1B-Instruct-shaped local model folder, offline: random weights (seeded), the real model's
config.json, bf16 weights in sharded safetensors with model.safetensors.index.json, and a tokenizer with Llama-3's
special tokens at Llama-3's ids and Llama-3's chat template.

    python scripts/make_llama1b_shape.py outputs/models/llama1b-shape            # the 1B shape (~2.5 GB)
    python scripts/make_llama1b_shape.py OUT --layers 2 --hidden 64 --intermediate 128 --heads 4 --kv-heads 2

The tokenizer cannot be Meta's (no Hub here): it is a byte-level BPE trained with `tokenizers` on the embedded
TOFU-shaped data (questions, answers, public text) with Llama-3's pre-tokenizer split pattern, its vocabulary
padded with never-produced filler entries up to id 127999, then Llama-3's 256 special tokens at ids
128000-128255 (<|begin_of_text|> 128000, <|end_of_text|> 128001, <|start_header_id|> 128006,
<|end_header_id|> 128007, <|eom_id|> 128008, <|eot_id|> 128009, <|python_tag|> 128010, the rest reserved), so
the vocabulary is 128256 like the real one and every special token has its real id. The chat template renders
system / user / assistant turns exactly as Llama-3.2-Instruct's does ("Cutting Knowledge Date" / "Today Date"
header, <|eot_id|> after every turn); its tool-calling branches are left out.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

VOCAB = 128256
FIRST_SPECIAL = 128000
NAMED_SPECIAL = {128000: "<|begin_of_text|>", 128001: "<|end_of_text|>", 128004: "<|finetune_right_pad_id|>",
                 128006: "<|start_header_id|>", 128007: "<|end_header_id|>", 128008: "<|eom_id|>",
                 128009: "<|eot_id|>", 128010: "<|python_tag|>"}
# Llama-3's pre-tokenizer (tiktoken's cl100k-style split) as in its tokenizer.json.
SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
         r"\s*[\r\n]+|\s+(?!\S)|\s+")

# Llama-3.2-1B-Instruct's config.json, key for key (transformers reads its rope_scaling / torch_dtype as given).
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 8192,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.45.0.dev0",
    "use_cache": True,
    "vocab_size": VOCAB,
}
GENERATION_CONFIG = {"bos_token_id": 128000, "do_sample": True, "eos_token_id": [128001, 128008, 128009],
                     "temperature": 0.6, "top_p": 0.9, "transformers_version": "4.45.0.dev0"}

# Llama-3.2-Instruct's template for system / user / assistant messages (its tool branches left out).
CHAT_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- if not date_string is defined %}\n"
    "    {%- if strftime_now is defined %}\n"
    "        {%- set date_string = strftime_now(\"%d %b %Y\") %}\n"
    "    {%- else %}\n"
    "        {%- set date_string = \"26 Jul 2024\" %}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content']|trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set system_message = \"\" %}\n"
    "{%- endif %}\n"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n"
    "{{- system_message }}\n"
    "{{- \"<|eot_id|>\" }}\n"
    "{%- for message in messages %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)


def special_tokens() -> list[str]:
    """Llama-3's 256 special tokens in id order (128000 + index): the named ones, the rest
    <|reserved_special_token_N|> numbered as Meta numbers them."""
    out, reserved = [], 0
    for i in range(FIRST_SPECIAL, VOCAB):
        if i in NAMED_SPECIAL:
            out.append(NAMED_SPECIAL[i])
        else:
            out.append(f"<|reserved_special_token_{reserved}|>")
            reserved += 1
    return out


def corpus() -> list[str]:
    """The embedded TOFU-shaped data's text: public text, questions and answers of every split."""
    from mpu_cli.data.tofu import EMBEDDED, embedded_dir, load_public_text

    texts = list(load_public_text(EMBEDDED))
    for f in sorted(embedded_dir().glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            texts += [v for v in row.values() if isinstance(v, str)]
    return texts


def build_tokenizer(bpe_vocab: int):
    """Byte-level BPE of `bpe_vocab` entries at most on the embedded text, padded to 128000 entries with filler
    that no merge produces, then Llama-3's special tokens at 128000-128255."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=bpe_vocab, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    # Filler: in the vocabulary (so the ids exist and decode) but unreachable, since no merge builds them.
    for i in range(len(vocab), FIRST_SPECIAL):
        vocab[f"<|filler_{i}|>"] = i
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.add_special_tokens(special_tokens())
    bos = NAMED_SPECIAL[128000]
    # As Llama-3's: add_special_tokens=True prepends <|begin_of_text|>.
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, 128000)])
    if tok.get_vocab_size() != VOCAB or tok.token_to_id("<|eot_id|>") != 128009:
        raise RuntimeError(f"tokenizer came out with {tok.get_vocab_size()} entries; expected {VOCAB}")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token="<|eot_id|>",
                                   chat_template=CHAT_TEMPLATE, model_max_length=131072,
                                   clean_up_tokenization_spaces=False)


def model_config(args) -> dict:
    cfg = dict(CONFIG)
    for key, value in (("num_hidden_layers", args.layers), ("hidden_size", args.hidden),
                       ("intermediate_size", args.intermediate), ("num_attention_heads", args.heads),
                       ("num_key_value_heads", args.kv_heads)):
        if value is not None:
            cfg[key] = value
    cfg["head_dim"] = cfg["hidden_size"] // cfg["num_attention_heads"]
    return cfg


def write_weights(cfg: dict, seed: int, out: Path, max_shard_size: str) -> int:
    """Random init in bf16 (the real model's storage dtype), saved as sharded safetensors with an index."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig.from_dict(cfg)
    with torch.device("cpu"):
        torch.set_default_dtype(torch.bfloat16)  # built in bf16: the fp32 1B (5 GB) is never held
        try:
            model = LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(torch.float32)
    model.save_pretrained(out, max_shard_size=max_shard_size)
    return sum(p.numel() for p in model.parameters())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("out", type=Path, help="the model folder to write (must not exist or be empty)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random init (default 0)")
    p.add_argument("--layers", type=int, help="a reduced shape: transformer blocks (default 16)")
    p.add_argument("--hidden", type=int, help="a reduced shape: hidden size (default 2048)")
    p.add_argument("--intermediate", type=int, help="a reduced shape: MLP width (default 8192)")
    p.add_argument("--heads", type=int, help="a reduced shape: query heads (default 32)")
    p.add_argument("--kv-heads", type=int, help="a reduced shape: KV heads (default 8)")
    p.add_argument("--bpe-vocab", type=int, default=8000, help="the trained BPE's size at most (default 8000)")
    p.add_argument("--max-shard-size", default="1GB", help="safetensors shard size (default 1GB: 3 shards at 1B)")
    args = p.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        print(f"out={str(args.out)!r} exists and is not empty; accepted: a new or empty folder", file=sys.stderr)
        return 2
    cfg = model_config(args)
    if cfg["hidden_size"] % cfg["num_attention_heads"] or cfg["num_attention_heads"] % cfg["num_key_value_heads"]:
        print(f"--hidden {cfg['hidden_size']} / --heads {cfg['num_attention_heads']} / --kv-heads "
              f"{cfg['num_key_value_heads']}: accepted: heads divide hidden, kv-heads divide heads", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    params = write_weights(cfg, args.seed, args.out, args.max_shard_size)
    # The real files, not transformers' re-serialization (which renames rope_scaling / torch_dtype).
    (args.out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    (args.out / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2) + "\n",
                                                      encoding="utf-8")
    build_tokenizer(args.bpe_vocab).save_pretrained(args.out)
    print(f"{args.out}: {params / 1e9:.3f}B parameters, {cfg['num_hidden_layers']} layers, hidden "
          f"{cfg['hidden_size']}, bf16, seed {args.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
