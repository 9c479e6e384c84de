"""How much of MPU's noise survives publication in bf16, against publication in fp32 (server.publish_dtype).

For each model the server publishes one round (seed 0) of a noised copy and of MPU's m = 2 copies at each κ, in
the model's bf16 and with server.publish_dtype=float32, and measures (mpu/survival.py, the numbers every run
records in results.csv): the fraction of published block elements that differ from the noise-free published
copy, and the effective κ = RMS(published − T(θ)) / RMS(θ − θ_base) (each copy divided by its α_k: κ when all
the noise survives). Models, all cast to bf16 as `model.dtype=bfloat16` loads them:

- tiny: the embedded default's target and base (the prepare stage's, built or reused from the cache);
- smollm2-135m: SmolLM2-135M-Instruct fine-tuned on the embedded TOFU-shaped data as open-unlearning builds its
  TOFU targets (AdamW lr 1e-5, 5 epochs; the prepare preset of conf/reproduce_smollm2.yaml, cached: `make
  reproduce-smollm2` uses the same target; ~10 min on 2 cores to build it the first time);
- llama-1b-shape: the Llama-3.2-1B shape of scripts/make_llama1b_shape.py at random init (bf16) as the base, 2 of its 16
  identical blocks (enough on a CPU: each block is 60.8 M parameters), and as target the base plus a Gaussian
  task vector of SmolLM2's relative size RMS(θ − θ_base)/RMS(θ) (per tensor, added in fp32, then cast to bf16
  as a bf16 fine-tune's weights are).

    python scripts/noise_survival.py [--out DIR] [--models tiny,smollm2-135m,llama-1b-shape] [--kappas 0.01,0.1,1]

Prints the markdown table (also DIR/noise_survival.md) and writes every record to DIR/noise_survival.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "outputs" / "noise_survival"
MODELS = ("tiny", "smollm2-135m", "llama-1b-shape")
LLAMA_BLOCKS = 2


def _compose(config_name: str):
    from hydra import compose, initialize_config_dir

    from mpu_cli.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose(config_name=config_name)


def _prepared_bf16(config_name: str) -> tuple[dict, dict, object, dict]:
    """(θ bf16, θ_base fp32 of the bf16 base, HF config, facts) of a config's prepared target and base."""
    import torch

    from mpu_cli.cache import built_info
    from mpu_cli.models.io import load_model, state_dict_fp32
    from mpu_cli.models.prepare import prepare_models

    cfg = _compose(config_name)
    if config_name == "reproduce_smollm2" and not (REPO / cfg.data.source).exists():
        sys.path.insert(0, str(REPO / "scripts"))
        from make_tofu_subset import subset, write_folder

        write_folder(subset("embedded"), REPO / cfg.data.source)
    prepared = prepare_models(cfg.model, cfg.data, cfg.prepare)
    target = load_model(prepared.target, torch.float32)
    fp32_target, config = state_dict_fp32(target), target.config
    del target
    fp32_base = state_dict_fp32(load_model(prepared.base, torch.float32))
    facts = {"target": prepared.target, "prepare": built_info(prepared.target),
             "relative_task_vector_fp32": _relative(fp32_target, fp32_base)}
    # bf16 as `model.dtype=bfloat16` loads both (the prepare stage fine-tunes in fp32 and casts on save)
    theta = {n: t.to(torch.bfloat16) for n, t in fp32_target.items()}
    base = {n: t.to(torch.bfloat16).float() for n, t in fp32_base.items()}
    return theta, base, config, facts


def _relative(theta: dict, base: dict) -> float:
    """RMS(θ − θ_base) / RMS(θ) over the transformer blocks."""
    from mpu_cli.mpu import block_of

    num = den = 0.0
    for n, t in theta.items():
        if block_of(n) is not None:
            num += float((t.double() - base[n].double()).square().sum())
            den += float(t.double().square().sum())
    return (num / den) ** 0.5


def _llama_shape(relative: float, seed: int = 0) -> tuple[dict, dict, object, dict]:
    """The 1B shape's first LLAMA_BLOCKS blocks at random init (bf16) as base, base + task vector as target."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(REPO / "scripts"))
    from make_llama1b_shape import CONFIG

    from mpu_cli.models.tiny import load_embedded_tokenizer
    from mpu_cli.mpu import block_of

    tok = load_embedded_tokenizer()
    # outside the blocks (embeddings: the embedded tokenizer's vocabulary) not measured
    config = LlamaConfig.from_dict({**CONFIG, "num_hidden_layers": LLAMA_BLOCKS, "vocab_size": len(tok),
                                    "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
                                    "eos_token_id": tok.eos_token_id})
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    base = {n: t.detach().float() for n, t in model.state_dict().items()}
    g = torch.Generator().manual_seed(seed + 1)
    theta = {}
    for n, b in base.items():
        v = torch.randn(b.shape, generator=g) * (relative * float(b.square().mean().sqrt())) if block_of(n) is not None \
            else torch.zeros_like(b)
        theta[n] = (b + v).to(torch.bfloat16)
    facts = {"blocks": LLAMA_BLOCKS, "block_params": sum(t.numel() for n, t in base.items() if block_of(n) == 0),
             "relative_task_vector_fp32": relative}
    return theta, base, config, facts


def measure(theta: dict, base: dict, config, kappas: list[float]) -> list[dict]:
    from mpu_cli.mpu import ModelLayout, MPUServer, ServerConfig

    layout = ModelLayout.from_hf_config(config)
    rows = []
    for kappa in kappas:
        for arm in ("noised", "mpu"):
            row = {"kappa": kappa, "arm": arm}
            for publish in ("model", "float32"):
                server = MPUServer(theta, layout, ServerConfig(arm=arm, kappa=kappa, m=2, seed=0, publish_dtype=publish),
                                   base=base)
                server.publish_copies()  # starts the round; noise_survival builds the copies tensor by tensor
                row[publish] = server.noise_survival()
            rows.append(row)
            s = row["model"]["summary"]
            print(f"  κ={kappa:g} {arm}: bf16 changed {100 * s['changed_frac']:.2f} %, effective κ "
                  f"{s['effective_kappa']:.3g}", flush=True)
    return rows


def _bf16_facts(theta: dict, base: dict) -> dict:
    """The bf16 target against the bf16 base: relative task vector and the fraction of block elements it moved."""
    from mpu_cli.mpu import block_of

    moved = n = 0
    for k, t in theta.items():
        if block_of(k) is not None:
            moved += int((t.float() != base[k]).sum())
            n += t.numel()
    return {"relative_task_vector_bf16": _relative({k: t.float() for k, t in theta.items()}, base),
            "moved_frac_bf16": moved / n}


def _pct(x: float) -> str:
    return f"{100 * x:.2g} %" if x < 0.995 else f"{100 * x:.0f} %"


def markdown(results: dict) -> str:
    lines = ["| model | κ | arm | bf16: changed | bf16: effective κ (vs exact) | fp32: changed | fp32: effective κ |",
             "|---|---|---|---|---|---|---|"]
    for model, res in results.items():
        for row in res["rows"]:
            b, f = row["model"]["summary"], row["float32"]["summary"]
            lines.append(f"| {model} | {row['kappa']:g} | {row['arm']} | {_pct(b['changed_frac'])} | "
                         f"{b['effective_kappa']:.3g} ({b['effective_kappa_vs_exact']:.3g}) | "
                         f"{_pct(f['changed_frac'])} | {f['effective_kappa']:.3g} |")
    facts = []
    for model, res in results.items():
        f = res["facts"]
        extra = f" ({f['blocks']} of 16 blocks)" if "blocks" in f else ""
        facts.append(f"{model}{extra}: RMS(θ − θ_base)/RMS(θ) = {f['relative_task_vector_fp32']:.2g} in fp32, "
                     f"{f['relative_task_vector_bf16']:.2g} in bf16, where the target differs from the base in "
                     f"{_pct(f['moved_frac_bf16'])} of the block elements")
    return ("Task vectors over the transformer blocks — " + "; ".join(facts) + ".\n\n" + "\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--kappas", default="0.01,0.1,1")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad:
        print(f"noise_survival: error: --models {bad[0]!r} is not one of {list(MODELS)}", file=sys.stderr)
        return 2
    kappas = [float(k) for k in args.kappas.split(",")]
    results, relative = {}, None
    for model in models:
        t0 = time.perf_counter()
        print(f"noise_survival: {model} ...", flush=True)
        if model == "tiny":
            theta, base, config, facts = _prepared_bf16("config")
        elif model == "smollm2-135m":
            theta, base, config, facts = _prepared_bf16("reproduce_smollm2")
            relative = facts["relative_task_vector_fp32"]
        else:
            if relative is None:  # the task vector's size comes from the SmolLM2 fine-tune
                relative = _prepared_bf16("reproduce_smollm2")[3]["relative_task_vector_fp32"]
            theta, base, config, facts = _llama_shape(relative)
        facts |= _bf16_facts(theta, base)
        results[model] = {"facts": facts, "rows": measure(theta, base, config, kappas),
                          "seconds": round(time.perf_counter() - t0, 1)}
        del theta, base
    table = markdown(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "noise_survival.json").write_text(json.dumps(results, indent=1, default=str))
    (args.out / "noise_survival.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
