"""GPU check: one MPU round plus evaluation of a real-size model on one GPU, within a time limit.

The model is Llama-3.2-1B-shaped (16 blocks, d=2048, d_ff=8192, 32 query / 8 KV heads, tied embeddings, 128k
vocabulary, llama3 RoPE) at random init in bf16, or real weights with --model PATH (a local model folder).
The run is the project's own code path: MPUServer (fp32 on the host) publishes m copies in bf16; the client
loop runs each copy on the GPU under accelerate (unlearn/accel.py); the server aggregates in fp32; the result
is loaded into a bf16 model on the GPU and evaluated with the quick TOFU metrics on the embedded data.
Prints the timings and torch.cuda.max_memory_allocated, exits 1 if the run took longer than --time-limit.

    scripts/gpu_check.sh                 # on a machine with a CUDA GPU
    python scripts/gpu_check.py --tiny   # the same code path, shrunk to a small Llama on CPU (tests)
    python scripts/gpu_check.py [--tiny] --print-config   # the model's configuration, nothing run

Without CUDA (and without --tiny) it exits with code 2 and says so.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

NO_GPU = ("gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False). Run it where a GPU is "
          "present, or pass --tiny for the CPU-shrunk version of the same code path.")


def llama_config(tiny: bool, vocab_size: int, tokenizer):
    from transformers import LlamaConfig

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    shape = {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
             "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256, "max_position_embeddings": 131072}
    if tiny:  # same family and features (GQA, llama3 RoPE, tied embeddings), CPU-sized
        shape = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "head_dim": 16, "vocab_size": vocab_size, "max_position_embeddings": 131072}
    return LlamaConfig(**shape, rope_parameters=rope, rms_norm_eps=1e-5, tie_word_embeddings=True,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id)


def run_check(tiny: bool = False, m: int = 2, model_path: str | None = None, split: str = "forget10",
              epochs: int = 1, max_new_tokens: int = 32, algorithm: str = "npo", gradient_checkpointing: bool = True,
              seed: int = 0) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from mpu_cli.data.formatting import ChatFormat, pad_id
    from mpu_cli.data.tofu import load_split, split_names
    from mpu_cli.evals.tofu import QUICK_METRICS, EvalConfig, evaluate, summarize
    from mpu_cli.models.io import load_state_into, load_tokenizer
    from mpu_cli.models.tiny import load_embedded_tokenizer
    from mpu_cli.mpu.build import build_server
    from mpu_cli.mpu.settings import ServerConfig
    from mpu_cli.unlearn.algorithms import build_algorithm
    from mpu_cli.run.rounds import InProcessRounds, drive
    from mpu_cli.unlearn.client import ClientConfig, encode_client_data, unlearn_copy

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda and not tiny else "cpu")
    dtype = torch.bfloat16
    times: dict[str, float] = {}
    t_all = t = time.perf_counter()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(seed)

    # The model: real weights if given, else the architecture at random init (built on the device: fast).
    tokenizer = load_tokenizer(model_path) if model_path else load_embedded_tokenizer()
    with torch.device(device):
        if model_path:
            model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device)
        else:
            model = AutoModelForCausalLM.from_config(llama_config(tiny, len(tokenizer), tokenizer), dtype=dtype)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    # the server: θ_0 copied to the host (fp32 there), copies published in the model's bf16
    server = build_server(model, ServerConfig(arm="mpu", kappa=0.01, m=m, seed=seed, noise_reference="raw"))
    theta = {k: v.clone() for k, v in server.theta.items()}  # θ_0: aggregate updates the server's θ in place
    times["build_s"] = time.perf_counter() - t

    fmt = ChatFormat(max_length=128)
    algo = build_algorithm(algorithm, {})
    data = encode_client_data(tokenizer, fmt, "embedded", split, algo)
    client_cfg = ClientConfig(lr=1e-5, epochs=epochs, batch_size=4, grad_accum=2, seed=seed,
                              mixed_precision="no", gradient_checkpointing=gradient_checkpointing)

    def unlearn_fn(r: int, k: int, published: dict) -> dict:
        return unlearn_copy(model, published, algo, data, client_cfg, pad_id(tokenizer), desc=f"copy {k + 1}/{m}")

    # the project's one round loop; its timings split Pre/Post-Process (server) from the client's work
    t = time.perf_counter()
    new_theta, spent = drive(InProcessRounds(server, unlearn_fn), 1)
    if cuda:
        torch.cuda.synchronize()
    times["round_s"] = time.perf_counter() - t
    times["server_s"], times["client_s"] = spent["server"], spent["client"]
    moved = max((new_theta[k] - theta[k]).abs().max().item() for k in theta)

    t = time.perf_counter()
    load_state_into(model, new_theta)
    model.eval()
    names = split_names(split)
    eval_rows = {"forget": load_split("embedded", names["forget_perturbed"]),
                 "retain": load_split("embedded", names["retain_perturbed"])}
    result = evaluate(model, tokenizer, eval_rows, fmt, EvalConfig(batch_size=16, max_new_tokens=max_new_tokens,
                                                                   metrics=QUICK_METRICS))
    if cuda:
        torch.cuda.synchronize()
    times["eval_s"] = time.perf_counter() - t
    times["total_s"] = time.perf_counter() - t_all
    return {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "params": n_params, "m": m, "dtype": str(dtype).replace("torch.", ""), "split": split, "epochs": epochs,
        "gradient_checkpointing": gradient_checkpointing, "max_abs_update": moved,
        "times": {k: round(v, 2) for k, v in times.items()},
        "peak_gpu_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None,
        "metrics": summarize(result),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="one MPU round + evaluation of a 1B-shaped Llama on one GPU")
    ap.add_argument("--tiny", action="store_true", help="a small Llama on CPU: the same code path, for tests")
    ap.add_argument("--model", default=os.environ.get("MPU_GPU_CHECK_MODEL"),
                    help="local folder with real weights (default: Llama-3.2-1B shape at random init)")
    ap.add_argument("--m", type=int, default=2)
    ap.add_argument("--split", default="forget10")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--time-limit", type=float, default=300.0, help="seconds; exit 1 when exceeded")
    ap.add_argument("--no-gradient-checkpointing", action="store_true")
    ap.add_argument("--json", help="also write the result to this file")
    ap.add_argument("--print-config", action="store_true",
                    help="print the configuration of the model the check would build (JSON) and exit")
    args = ap.parse_args(argv)

    if args.print_config:
        from mpu_cli.models.tiny import load_embedded_tokenizer

        tokenizer = load_embedded_tokenizer()
        print(llama_config(args.tiny, len(tokenizer), tokenizer).to_json_string())
        return 0

    import torch

    if not args.tiny and not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    if args.model and not os.path.isdir(args.model):
        print(f"gpu_check: --model {args.model!r} is not a local model folder", file=sys.stderr)
        return 2
    result = run_check(tiny=args.tiny, m=args.m, model_path=args.model, split=args.split, epochs=args.epochs,
                       gradient_checkpointing=not args.no_gradient_checkpointing)
    ok = result["times"]["total_s"] <= args.time_limit
    result["time_limit_s"] = args.time_limit
    result["within_time_limit"] = ok
    print(json.dumps(result, indent=2))
    print(f"gpu_check: {'OK' if ok else 'TOO SLOW'}: {result['params'] / 1e9:.3f} B parameters on {result['device']}, "
          f"one round (m={result['m']}) + evaluation in {result['times']['total_s']:.1f} s "
          f"(limit {args.time_limit:.0f} s); peak GPU memory {result['peak_gpu_mem_gb']} GB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
