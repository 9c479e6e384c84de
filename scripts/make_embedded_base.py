#!/usr/bin/env python
"""Pretrain the embedded default's public base model and ship it in the package.

Writes ``src/mpu_cli/models/embedded_base/`` (a Hugging Face model folder: safetensors weights, config, the
embedded tokenizer) and ``recipe.json`` there: the pretraining recipe (tokenizer, corpus and chat-format
digests, epochs, lr, batch size, seed of the default ``prepare`` settings) and the SHA-256 of each file. The
prepare stage uses the shipped folder whenever a run asks for that recipe, and pretrains a base itself (into
the cache) when it asks for another. Rerun this after changing how the base is pretrained; one thread, so the
bytes do not depend on the machine's core count (they do depend on the CPU and the torch / transformers versions:
tests/test_shipped_base.py compares what a base pretrained again learned, not its bytes). A change that leaves
the pretraining's token ids as they are (e.g. the tokenizer's post-processor) needs only the shipped folder's
tokenizer files and recipe.json's "tok" digest brought up to date: the weights stay the shipped ones.

    python scripts/make_embedded_base.py
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from mpu_cli.config import CONF_DIR, register_configs
from mpu_cli.models.identity import model_identity
from mpu_cli.models.prepare import build_embedded_base, embedded_base_recipe, write_shipped_base
from mpu_cli.models.tiny import SHIPPED_BASE, load_embedded_tokenizer
from mpu_cli.run.settings import chat_format


def main() -> None:
    torch.set_num_threads(1)
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config")
    fmt = chat_format(cfg.model)
    recipe = embedded_base_recipe(cfg.data, cfg.prepare, fmt)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        built = Path(tmp) / "base"
        build_embedded_base(load_embedded_tokenizer(), cfg.data, cfg.prepare, fmt, built)
        shutil.rmtree(SHIPPED_BASE, ignore_errors=True)
        shutil.copytree(built, SHIPPED_BASE)
    write_shipped_base(recipe, SHIPPED_BASE)
    print(f"{SHIPPED_BASE}: pretrained in {time.perf_counter() - t:.0f} s, identity {model_identity(SHIPPED_BASE).digest}")


if __name__ == "__main__":
    main()
