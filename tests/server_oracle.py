"""Today's whole-model server against the streaming server: the models, the cases and both paths.

The whole-model path (θ, the base and each copy as in-memory state dicts, `build_server`) is the oracle; the
streaming path opens the same model folders lazily and works on files. Both run one round on the same folder
with the same seed and give the SHA-256 of every published copy and of θ_r, each as the file the server writes.
server_oracle.json holds those hashes as the whole-model code recorded them before the server streamed
(`MPU_RECORD_SERVER_ORACLE=1 pytest ...` re-records, on purpose only); they hold on the CPU model and torch
version that recorded them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from mpu_cli.devices import cpu_model

RECORD = Path(__file__).with_name("server_oracle.json")
RECORDING = os.environ.get("MPU_RECORD_SERVER_ORACLE") == "1"

TINY_CASES = {  # ServerConfig fields, the model dtype
    "mpu_m2": ({"arm": "mpu", "m": 2, "kappa": 0.1, "seed": 3}, "float32"),
    "mpu_m3_pow2_unprotected": ({"arm": "mpu", "m": 3, "kappa": 0.05, "seed": 4, "alpha_schedule": "pow2",
                                 "perturb_unprotected": True}, "float32"),
    "mpu_m2_bf16": ({"arm": "mpu", "m": 2, "kappa": 0.1, "seed": 5}, "bfloat16"),
    "mpu_m2_bf16_publish_fp32": ({"arm": "mpu", "m": 2, "kappa": 0.1, "seed": 6, "publish_dtype": "float32"},
                                 "bfloat16"),
    "noised_raw": ({"arm": "noised", "kappa": 0.1, "seed": 7, "noise_reference": "raw"}, "float32"),
    "clean": ({"arm": "clean", "seed": 8}, "float32"),
    "mpu_m2_eta": ({"arm": "mpu", "m": 2, "kappa": 0.1, "seed": 9, "eta": 0.5}, "float32"),
}
# The 2-block model at Llama-3.2-1B's width: stored in bf16 and sharded (like the real one) or fp32, one file
WIDE_CASES = {
    "wide_bf16_sharded_m2": ({"arm": "mpu", "m": 2, "kappa": 0.01, "seed": 11}, "bfloat16", "bfloat16", True),
    "wide_fp32_m3_raw": ({"arm": "mpu", "m": 3, "kappa": 0.1, "seed": 12, "noise_reference": "raw",
                          "perturb_unprotected": True}, "float32", "float32", False),
    "wide_bf16_sharded_as_fp32": ({"arm": "mpu", "m": 2, "kappa": 0.01, "seed": 13}, "bfloat16", "float32", True),
}


def tiny_models(folder: Path) -> tuple[Path, Path]:
    """(target, base): the shipped embedded base (one file), and a target made from it by a seeded perturbation,
    stored in shards."""
    from transformers import AutoModelForCausalLM

    from mpu_cli.models.tiny import SHIPPED_BASE

    target = folder / "tiny_target"
    if not target.exists():
        model = AutoModelForCausalLM.from_pretrained(str(SHIPPED_BASE), dtype=torch.float32)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g), alpha=0.01)
        model.save_pretrained(str(target), max_shard_size="2MB")
    return target, SHIPPED_BASE


def wide_config():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=512, hidden_size=2048, intermediate_size=8192, num_hidden_layers=2,
                       num_attention_heads=32, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True,
                       rope_theta=500000.0, max_position_embeddings=256)


def wide_models(folder: Path, stored: str, sharded: bool) -> tuple[Path, Path]:
    """(target, base) of the 2-block wide model, random init; base = the target's weights · 0.9 (one file)."""
    from transformers import LlamaForCausalLM

    target, base = folder / f"wide_{stored}_{'sharded' if sharded else 'one'}", folder / f"wide_{stored}_base"
    if not target.exists():
        torch.manual_seed(0)
        model = LlamaForCausalLM(wide_config()).to(getattr(torch, stored))
        model.save_pretrained(str(target), max_shard_size="150MB" if sharded else "50GB")
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(0.9)
        model.save_pretrained(str(base), max_shard_size="50GB")
        del model
    return target, base


def returned_copy(published, k: int) -> dict:
    """What a client hands back for copy k: a deterministic, copy-dependent change of every tensor (fp32)."""
    return {n: published[n].float().mul(1.0 + 1e-3 * (k + 1)).add_(1e-4) for n in published.keys()}  # noqa: SIM118


def whole_model_round(target: Path, base: Path, dtype: str, settings: dict, work: Path) -> dict:
    """Today's path: θ and the base loaded as whole models, each copy built in memory and saved, θ_r saved."""
    from mpu_cli.models.io import load_model, resolve_dtype, state_dict_fp32
    from mpu_cli.mpu.build import build_server
    from mpu_cli.mpu.settings import ServerConfig
    from mpu_cli.transport import exchange as ex

    torch_dtype = resolve_dtype(dtype)
    model = load_model(str(target), torch_dtype)
    base_state = state_dict_fp32(load_model(str(base), torch_dtype))
    server = build_server(model, ServerConfig(**settings), base=base_state)
    del model
    copies, returned = [], []
    for k, copy in enumerate(server.publish_copies()):
        copies.append(ex.write_safetensors(work / f"whole_pub_{k}.safetensors", copy)["sha256"])
        ex.write_safetensors(work / f"whole_ret_{k}.safetensors", returned_copy(copy, k))
        returned.append(ex.LazyStateDict(work / f"whole_ret_{k}.safetensors"))
        del copy
    server.aggregate(returned)
    theta = ex.write_safetensors(work / "whole_theta.safetensors", server.theta)["sha256"]
    return {"copies": copies, "theta_r": theta}


def streaming_round(target: Path, base: Path, dtype: str, settings: dict, work: Path, damage=None) -> dict:
    """The streaming path: θ and the base read lazily from their folders, the copies written side by side tensor
    by tensor, the returned copies read lazily, θ_r written tensor by tensor. damage(paths): done to the
    published files after the client's copies were made, before the aggregate reads them back."""
    from mpu_cli.models.files import TensorFiles
    from mpu_cli.models.io import resolve_dtype
    from mpu_cli.mpu.build import load_server
    from mpu_cli.mpu.settings import ServerConfig
    from mpu_cli.transport import exchange as ex

    server = load_server(str(target), str(base), resolve_dtype(dtype), ServerConfig(**settings))
    assert isinstance(server.theta, TensorFiles) and isinstance(server.base, TensorFiles)  # nothing loaded whole
    server.publish_copies()
    paths = [work / f"stream_pub_{k}.safetensors" for k in range(server.n_copies)]
    copies = [info["sha256"] for info in server.write_copies(paths)]
    returned = []
    for k, path in enumerate(paths):
        ex.write_safetensors(work / f"stream_ret_{k}.safetensors", returned_copy(ex.LazyStateDict(path), k))
        returned.append(ex.LazyStateDict(work / f"stream_ret_{k}.safetensors"))
    if damage is not None:
        damage(paths)
    server.aggregate(returned, out=work / "stream_theta.safetensors")
    assert isinstance(server.theta, TensorFiles)
    return {"copies": copies, "theta_r": server.theta_file["sha256"]}


def recorded(case: str) -> dict | None:
    """The hashes recorded for `case`, or None when they were recorded on another CPU model or torch."""
    data = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    if data.get("cpu") != cpu_model() or data.get("torch") != torch.__version__:
        return None
    return data["cases"].get(case)


def record(case: str, hashes: dict) -> None:
    data = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    if data.get("cpu") != cpu_model() or data.get("torch") != torch.__version__:
        data = {"cpu": cpu_model(), "torch": torch.__version__, "cases": {}}
    data["cases"][case] = hashes
    RECORD.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
