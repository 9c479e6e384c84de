"""The embedded default model: a tiny Llama (GQA + RoPE) sized for CPU runs in minutes."""
from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

EMBEDDED_TOKENIZER = Path(__file__).parent / "embedded_tokenizer"
# The public base, pretrained once by scripts/make_embedded_base.py (see models/prepare.shipped_base).
SHIPPED_BASE = Path(__file__).parent / "embedded_base"


def load_embedded_tokenizer():
    return AutoTokenizer.from_pretrained(str(EMBEDDED_TOKENIZER))


def tiny_llama_config(tokenizer) -> LlamaConfig:
    """~1.5 M parameters: 4 blocks, 4 query heads sharing 2 KV heads (GQA), RoPE, SwiGLU."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=160,
        intermediate_size=432,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def init_tiny_llama(tokenizer, seed: int) -> LlamaForCausalLM:
    import torch

    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(tokenizer))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model
