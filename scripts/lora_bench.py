"""What a LoRA client (client.lora) saves, and whether MPU's denoising still holds for its updates.

    python scripts/lora_bench.py [--models tiny,smollm2-135m] [--ranks 8,16,64] [--shape-ranks 8,16,64] --out DIR

Writes into DIR:
- cost.csv / cost.md (cost_short.md: bytes and peak RSS only): per model and client (full fine-tuning, LoRA r = 8, 16, 64) the bytes one copy uploads (the
  files the client writes into its exchange folder: returned.safetensors, or the adapter's two files; the manifest
  adds a few kB) and the client process's peak RSS while it unlearns one copy (NPO: a reference model, one epoch of the
  embedded forget01 set, each in a fresh process); the Llama-3.2-1B shape's LoRA clients of --shape-ranks measured
  the same way (its folder made by scripts/make_llama1b_shape.py when missing, as `make llama1b-shape`; ~11 GB
  each), its other clients by their tensor shapes alone (bytes only; full fine-tuning in fp32 holds the copy, a
  frozen reference, gradients and AdamW's two moments, ~25 GB: no 24 GB machine runs it).
- cancellation.csv / cancellation.md: a linear, T-equivariant rank-8 client on the embedded target's θ: the relative
  error ‖aggregate − F(θ)‖ / ‖F(θ)‖ of the server's LoRA aggregate with the harmonic weights, against the same
  factors averaged uniformly, per κ and m.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = os.environ.get("MPU_CACHE_DIR", str(Path("~/.cache/mpu-cli").expanduser()))
FULL = 0  # rank 0: full fine-tuning
SHAPE = "Llama-3.2-1B shape"
# Llama-3.2-1B's shape (its config.json): bytes follow from the shapes alone.
LLAMA_1B = {"vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "tie_word_embeddings": True}


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from mpu_cli.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(CONF_DIR, version_base=None):
        return compose("config", overrides=[f"prepare.cache_dir={CACHE}", *overrides])


def model_folder(name: str, shape: Path | None = None) -> str:
    """The weights a client would train: the embedded target, SmolLM2-135M's converted GGUF, or the 1B shape's
    folder `shape`."""
    if name == SHAPE:
        return str(shape)
    if name == "tiny":
        from mpu_cli.models.prepare import prepare_models

        cfg = _compose(["data.split=forget01"])
        return prepare_models(cfg.model, cfg.data, cfg.prepare).target
    from mpu_cli.models.io import local_model_path

    return local_model_path(_compose([f"model={name}"]).model.base, cache_dir=CACHE)


def client_label(rank: int) -> str:
    return "full" if rank == FULL else f"LoRA r={rank}"


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def publish(model_name: str, path: Path, shape: Path | None = None) -> None:
    """The copy a client receives (the model's fp32 weights), written once per model as the server publishes it,
    by a process of its own: the workers' peak memory never includes building it."""
    import torch

    from mpu_cli.models.io import load_model, state_dict_fp32
    from mpu_cli.transport import exchange as ex

    ex.write_safetensors(path, state_dict_fp32(load_model(model_folder(model_name, shape), torch.float32)))


def worker(model_name: str, rank: int, published_path: Path, shape: Path | None = None) -> dict:
    """One copy unlearned by one client (this process), as mpu-client does it (the published file read lazily, a
    tensor at a time, into the model); what it uploads and its memory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from mpu_cli.data.formatting import ChatFormat, pad_id
    from mpu_cli.models.io import load_tokenizer
    from mpu_cli.transport import exchange as ex
    from mpu_cli.unlearn.algorithms import build_algorithm
    from mpu_cli.unlearn.client import ClientConfig, encode_client_data, unlearn_copy
    from mpu_cli.unlearn.settings import LoraSettings

    torch.set_num_threads(1)
    folder = model_folder(model_name, shape)
    published = ex.LazyStateDict(published_path)  # what the client receives, read as mpu-client reads it
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=torch.float32)
    tok = load_tokenizer(folder)
    algorithm = build_algorithm("npo", {})
    data = encode_client_data(tok, ChatFormat("You are a helpful assistant.", None, 128), "embedded", "forget01",
                              algorithm)
    cfg = ClientConfig(lr=3e-4, epochs=1, lora=LoraSettings(enabled=rank != FULL, rank=max(rank, 1)))
    loaded = _rss_mib()
    t0 = time.perf_counter()
    returned = unlearn_copy(model, published, algorithm, data, cfg, pad_id(tok), desc="bench")
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as tmp:
        pub = {"run_id": "bench", "round": 1, "copy": 0, "n_copies": 1, "files": {ex.PUBLISHED: {"sha256": ""}}}
        ex.write_returned(Path(tmp), pub, returned, getattr(returned, "config", None))
        uploaded = sum(p.stat().st_size for p in ex.copy_dir(Path(tmp), 1, 0).iterdir()
                       if p.name != ex.RETURNED_MANIFEST)  # the payload; the manifest adds a few kB
    return {"model": model_name, "client": client_label(rank),
            "params": sum(torch.Size(published.shape(n)).numel() for n in published),
            "uploaded_tensors": sum(t.numel() for t in returned.values()), "bytes_uploaded": uploaded,
            "rss_loaded_mib": round(loaded, 1), "peak_rss_mib": round(peak, 1), "seconds": round(seconds, 1)}


def shape_bytes(ranks: list[int]) -> list[dict]:
    """Bytes one copy of the Llama-3.2-1B shape uploads, from the shapes: the fp32 returned copy (what the client
    returns: its state dict, tied embeddings included twice) or the fp32 adapter over every block projection (rank
    FULL: full fine-tuning)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from mpu_cli.files import atomic_write_json
    from mpu_cli.models.family import split_block
    from mpu_cli.models.lora import ADAPTER_CONFIG, config_json, factor_keys, peft_config
    from mpu_cli.transport import exchange as ex
    from mpu_cli.unlearn.settings import BLOCK_PROJECTIONS, LoraSettings

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**LLAMA_1B))
    state = model.state_dict()
    rows = []
    for rank in ranks:
        if rank == FULL:
            spec = {n: (tuple(t.shape), torch.float32) for n, t in state.items()}
            extra = 0
        else:
            spec = {}
            for n, t in state.items():
                if split_block(n) and n.removesuffix(".weight").rsplit(".", 1)[-1] in BLOCK_PROJECTIONS:
                    a, b = factor_keys(n)
                    spec |= {a: ((rank, t.shape[1]), torch.float32), b: ((t.shape[0], rank), torch.float32)}
            with tempfile.TemporaryDirectory() as tmp:  # adapter_config.json as the client writes it
                atomic_write_json(Path(tmp) / ADAPTER_CONFIG, config_json(peft_config(LoraSettings(rank=rank))))
                extra = (Path(tmp) / ADAPTER_CONFIG).stat().st_size
        header = len(ex._header(spec, {"format": ex.FORMAT}))
        data = sum(torch.Size(s).numel() * 4 for s, _ in spec.values())
        rows.append({"model": SHAPE, "client": client_label(rank),
                     "params": sum(t.numel() for t in state.values()),
                     "uploaded_tensors": sum(torch.Size(s).numel() for s, _ in spec.values()),
                     "bytes_uploaded": header + data + extra, "rss_loaded_mib": None, "peak_rss_mib": None,
                     "seconds": None})
    return rows


# ---- first-order cancellation with a linear LoRA client ----------------------------------------------------------


def linear_lora_client(theta: dict, layout, rank: int = 8, lam: float = 0.2, seed: int = 0):
    """A rank-`rank` client whose update is linear in the copy it receives and equivariant under T, on every block
    matrix: where T acts on the rows (q/k/v, gate/up: models/family.py's roles), B = λ·W'·R and A = S
    (Δ' = λ W' R S); on the columns (o, down), A = Rᵀ·W' and B = λ·S (Δ' = λ S Rᵀ W'). Returns (client(published)
    -> adapter under peft's names, the noise-free update F(θ) per weight)."""
    import torch

    from mpu_cli.models.family import COLUMNS, split_block
    from mpu_cli.models.lora import factor_keys

    g = torch.Generator().manual_seed(seed)
    fixed = {}
    for n, w in theta.items():
        split = split_block(n)
        if split is None or w.dim() != 2:
            continue
        columns = layout.family.role(split[1]).axis == COLUMNS
        out, inp = w.shape
        fixed[n] = (columns, torch.randn(out if columns else inp, rank, generator=g),
                    torch.randn(out if columns else rank, rank if columns else inp, generator=g))

    def factors(n, w):
        columns, r, s = fixed[n]
        return (r.T @ w, lam * s) if columns else (s, lam * w @ r)  # (A, B)

    def client(published: dict) -> dict:
        adapter = {}
        for n in fixed:
            adapter |= dict(zip(factor_keys(n), factors(n, published[n].float())))
        return adapter

    exact = {n: factors(n, theta[n].float())[1] @ factors(n, theta[n].float())[0] for n in fixed}
    return client, exact


def relative_error(update: dict, exact: dict) -> float:
    """‖update − F(θ)‖ / ‖F(θ)‖ over the weights F touches (float64)."""
    num = sum((update[n].double() - exact[n].double()).square().sum() for n in exact)
    return float(num.sqrt() / sum(exact[n].double().square().sum() for n in exact).sqrt())


def cancellation(kappas=(0.01, 0.1, 1.0), ms=(2, 4), seeds=(0, 1, 2)) -> list[dict]:
    import torch

    from mpu_cli.models.io import load_model
    from mpu_cli.mpu import ModelLayout, MPUServer, ServerConfig, aggregate_adapters

    torch.set_num_threads(1)
    folder = model_folder("tiny")
    model = load_model(folder, torch.float32)
    theta = {n: t.detach().float().clone() for n, t in model.state_dict().items()}
    layout = ModelLayout.from_hf_config(model.config)
    client, exact = linear_lora_client(theta, layout)
    rows = []
    for kappa in kappas:
        for m in ms:
            errors: dict[str, list[float]] = {"harmonic": [], "uniform": []}
            for seed in seeds:
                for kind, found in errors.items():
                    server = MPUServer(theta, layout, ServerConfig(arm="mpu", kappa=kappa, m=m, seed=seed,
                                                                   noise_reference="raw"))
                    returned = [client(pub) for pub in server.publish()]
                    weights = server.private_state()["weights"]
                    scalings = [1.0] * m if kind == "harmonic" else [1.0 / m / w for w in weights]
                    new = aggregate_adapters(server, returned, scalings)
                    found.append(relative_error({n: new[n] - theta[n] for n in exact}, exact))
            rows.append({"kappa": kappa, "m": m, "seeds": len(seeds),
                         "rel_error_harmonic": max(errors["harmonic"]), "rel_error_uniform": max(errors["uniform"])})
    return rows


# ---- tables -------------------------------------------------------------------------------------------------------


def _mib(x) -> str:
    return "–" if x is None else f"{x:,.0f} MiB"


def _size(n: int) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n} B"


def cost_markdown(rows: list[dict], short: bool = False) -> str:
    """The cost table; short: model, client, bytes, their share of full and the peak RSS only (README's)."""
    from mpu_cli.report.views.fmt import markdown

    full = {r["model"]: r for r in rows if r["client"] == "full"}
    out = []
    for r in rows:
        f = full[r["model"]]
        share = f"{100 * r['bytes_uploaded'] / f['bytes_uploaded']:.1f} %"
        growth = None if r["peak_rss_mib"] is None else r["peak_rss_mib"] - r["rss_loaded_mib"]
        out.append([r["model"], r["client"], f"{r['uploaded_tensors']:,}", _size(r["bytes_uploaded"]), share,
                    _mib(r["peak_rss_mib"]), _mib(growth), "–" if r["seconds"] is None else f"{r['seconds']:.1f} s"])
    header = ["model", "client", "values uploaded", "bytes uploaded per copy", "of full", "client peak RSS",
              "peak over the loaded copy", "one epoch"]
    keep = [0, 1, 3, 4, 5] if short else list(range(len(header)))
    return markdown([header[i] for i in keep], [[row[i] for i in keep] for row in out])


def cancellation_markdown(rows: list[dict]) -> str:
    from mpu_cli.report.views.fmt import markdown

    return markdown(["κ", "m", "seeds", "relative error, harmonic weights", "relative error, uniform weights"],
                    [[f"{r['kappa']:g}", str(r["m"]), str(r["seeds"]), f"{r['rel_error_harmonic']:.1e}",
                      f"{r['rel_error_uniform']:.1e}"] for r in rows])


def _child(cmd: list[str], env: dict, what: str) -> str:
    """Run one step in a process of its own; its stdout, or SystemExit naming the step that failed."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0 or (cmd[2] == "--worker" and "RESULT " not in proc.stdout):
        raise SystemExit(f"{what}: failed: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="tiny,smollm2-135m")
    p.add_argument("--ranks", default="8,16,64")
    p.add_argument("--no-shape", action="store_true", help="leave out the Llama-3.2-1B shape's rows")
    p.add_argument("--shape-models", type=Path, default=REPO / "outputs" / "models",
                   help="where the Llama-3.2-1B shape's folders live (`make llama1b-shape`); made there when missing")
    p.add_argument("--shape-ranks", default="8,16,64",
                   help="the LoRA ranks measured on the 1B shape (~11 GB and minutes each; its other clients by "
                        "their tensor shapes, bytes only; 'none': all of them)")
    p.add_argument("--shape", type=Path, default=None, help=argparse.SUPPRESS)  # a worker's 1B-shape folder
    p.add_argument("--publish", nargs=2, metavar=("MODEL", "PATH"), help=argparse.SUPPRESS)
    p.add_argument("--published", type=Path, default=None, help=argparse.SUPPRESS)  # a worker's received copy
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "lora_bench")
    p.add_argument("--worker", nargs=2, metavar=("MODEL", "RANK"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.publish:
        publish(args.publish[0], Path(args.publish[1]), args.shape)
        return
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker[0], int(args.worker[1]), args.published, args.shape)),
              flush=True)
        return
    import pandas as pd

    args.out.mkdir(parents=True, exist_ok=True)
    ranks = [int(r) for r in args.ranks.split(",")]
    clients = [(name, rank) for name in args.models.split(",") for rank in [FULL, *ranks]]
    measured = [] if args.no_shape or args.shape_ranks == "none" else [int(r) for r in args.shape_ranks.split(",")]
    if measured:
        from scale_1b import shape_folders  # scripts/: the folders `make llama1b-shape` writes, made once

        _, args.shape = shape_folders(args.shape_models, None, [])
        clients += [(SHAPE, rank) for rank in measured]
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    shape = ["--shape", str(args.shape)] if args.shape else []
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:  # the published copies (the 1B shape's: 6 GB)
        for name, rank in clients:  # each client in a fresh process: its own peak RSS
            published = Path(tmp) / f"{name}.safetensors"
            if not published.exists():
                _child([sys.executable, __file__, "--publish", name, str(published), *shape], env, f"{name}: publish")
            cmd = [sys.executable, __file__, "--worker", name, str(rank), "--published", str(published), *shape]
            lines = [ln for ln in _child(cmd, env, f"{name} rank {rank}").splitlines() if ln.startswith("RESULT ")]
            rows.append(json.loads(lines[-1][len("RESULT "):]))
            print(rows[-1], flush=True)
    if not args.no_shape:  # the shape's clients not measured (full fine-tuning at least): bytes from the shapes
        rows += shape_bytes([r for r in [FULL, *ranks] if r not in measured])
        order = [client_label(r) for r in [FULL, *ranks, *measured]]
        rows.sort(key=lambda r: (r["model"] == SHAPE, order.index(r["client"]) if r["model"] == SHAPE else 0))
    pd.DataFrame(rows).to_csv(args.out / "cost.csv", index=False)
    (args.out / "cost.md").write_text(cost_markdown(rows) + "\n")
    (args.out / "cost_short.md").write_text(cost_markdown(rows, short=True) + "\n")
    cancel = cancellation()
    pd.DataFrame(cancel).to_csv(args.out / "cancellation.csv", index=False)
    (args.out / "cancellation.md").write_text(cancellation_markdown(cancel) + "\n")
    print((args.out / "cost.md").read_text() + "\n" + (args.out / "cancellation.md").read_text())


if __name__ == "__main__":
    main()
