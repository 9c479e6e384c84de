"""`make bench-server`: the streaming server's memory and time for one round, next to the read/write floor.

For each shape (SmolLM2-135M's config, Llama-3.2-1B's: random init, tied embeddings) a model folder is written
once (target and public base, sharded safetensors), then each measurement runs in its own process so its peak
RSS (VmHWM) is its own:

- floor: read θ once (tensor by tensor, as the server reads it) and write the m copies and θ_r once;
- server m: Pre-Process (open θ and the base, σ, secrets, the m copies streamed to their files, the noise survival
  record) and Post-Process (the returned copies read lazily, θ_r streamed to its file). The returned copies are
  the published files themselves (the client's update does not change the server's work).

Floor and server are measured --repeat times in turn (default 3): the floor is mostly the kernel copying into the
page cache and the disk taking it, and on this project's machine it varied from 24 to 39 s at the 1B shape within
one hour. The table gives the medians, the median of the pairs' ratios and the range of the ratios; peak RSS is
the largest of the runs.

Peak RSS (VmHWM) is given as a multiple of one fp32 copy of the model (4 bytes per parameter), and so is the peak
after the imports (Python, torch, transformers: the part no streaming can shrink). Times exclude the imports.
Writes DIR/bench_server.json
(keeping the rows of an earlier run into DIR for the shapes and m not measured again) and bench_server.md and
prints the table; the model and copy files go under --work (deleted afterwards).

    python scripts/bench_server.py [--shapes 135m,1b] [--m 2,8] [--repeat 3] [--work /tmp/bench_server] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "outputs" / "bench_server"

# (transformers LlamaConfig fields, the dtype the model is stored and served in)
SHAPES = {
    "135m": ({"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
              "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "tie_word_embeddings": True,
              "rope_theta": 100000.0, "max_position_embeddings": 8192}, "float32"),
    "1b": ({"vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "tie_word_embeddings": True,
            "rope_theta": 500000.0, "max_position_embeddings": 131072}, "bfloat16"),
}
SHARD_BYTES = 1 << 30
SETTINGS = {"arm": "mpu", "kappa": 0.01, "seed": 0}  # m comes from the measurement


def _peak_mb() -> float:
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


# ---- the measurements, each run as `bench_server.py --step NAME ...` in its own process ---------------------------


def make_model(folder: Path, shape: str, seed: int) -> None:
    """A Hugging Face model folder at `shape`: config.json, shards of ≤ 1 GiB and their index; N(0, 0.02²)
    weights, ones for the norms, written tensor by tensor (never a whole model in memory)."""
    import torch
    from transformers import LlamaConfig

    from mpu_cli.models.files import INDEX, state_names
    from mpu_cli.transport.exchange import StreamingSafetensorsWriter

    fields, dtype_name = SHAPES[shape]
    dtype = getattr(torch, dtype_name)
    config = LlamaConfig(**fields, dtype=dtype_name)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(folder))
    shapes, aliases = state_names(config)
    stored = [n for n in shapes if aliases[n] == n]
    shards, current, size = [], [], 0
    for name in stored:
        nbytes = torch.Size(shapes[name]).numel() * dtype.itemsize
        if current and size + nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    shards.append(current)
    g = torch.Generator().manual_seed(seed)
    weight_map = {}
    for i, names in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        writer = StreamingSafetensorsWriter([folder / file], {n: (shapes[n], dtype) for n in names})
        for n in names:
            t = torch.ones(shapes[n]) if n.endswith("norm.weight") else torch.randn(shapes[n], generator=g) * 0.02
            writer.write(n, [t.to(dtype)])
            weight_map[n] = file
        writer.commit()
    (folder / INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))


def _imported(work: Path) -> float:
    """Import what both measurements use (transformers, the model's code) before the clock starts; returns the
    peak RSS so far in MiB: the process's own floor (Python, torch, transformers), before any weight is read."""
    from transformers import AutoConfig

    from mpu_cli.models.files import state_names
    from mpu_cli.mpu import build, server  # noqa: F401

    state_names(AutoConfig.from_pretrained(str(work / "target")))
    return _peak_mb()


def floor(work: Path, shape: str, m: int) -> dict:
    """Read θ once, tensor by tensor as the server does, and write it as the m copies and as θ_r."""
    import torch

    from mpu_cli.models.files import open_model
    from mpu_cli.mpu.server import published_dtype
    from mpu_cli.transport.exchange import StreamingSafetensorsWriter

    imported = _imported(work)
    t0 = time.perf_counter()
    dtype = getattr(torch, SHAPES[shape][1])
    theta = open_model(str(work / "target"), dtype)
    pub = {n: (theta.shape(n), published_dtype(dtype, "model")) for n in theta}
    copies = StreamingSafetensorsWriter([work / f"floor_copy{k}.safetensors" for k in range(m)], pub)
    new = StreamingSafetensorsWriter([work / "floor_theta.safetensors"], {n: (theta.shape(n), torch.float32)
                                                                          for n in theta})
    for n in theta:
        x = theta[n]
        copies.write(n, [x.to(pub[n][1])] * m)
        new.write(n, [x.float()])
    copies.commit()
    new.commit()
    return {"seconds": time.perf_counter() - t0, "peak_mb": _peak_mb(), "imported_mb": imported}


def server(work: Path, shape: str, m: int) -> dict:
    """One round of the streaming server: Pre-Process, then Post-Process on the published files as returned."""
    import torch

    from mpu_cli.mpu.build import load_server
    from mpu_cli.mpu.settings import ServerConfig
    from mpu_cli.transport.exchange import LazyStateDict

    dtype = getattr(torch, SHAPES[shape][1])
    imported = _imported(work)
    t0 = time.perf_counter()
    srv = load_server(str(work / "target"), str(work / "base"), dtype, ServerConfig(**SETTINGS, m=m))
    srv.publish_copies()
    paths = [work / f"copy{k}.safetensors" for k in range(m)]
    srv.write_copies(paths)
    t1 = time.perf_counter()
    srv.aggregate([LazyStateDict(p) for p in paths], out=work / "theta_r1.safetensors")
    t2 = time.perf_counter()
    return {"pre_s": t1 - t0, "post_s": t2 - t1, "seconds": t2 - t0, "peak_mb": _peak_mb(), "imported_mb": imported}


STEPS = {"floor": floor, "server": server}


def _step(name: str, work: Path, shape: str, m: int) -> dict:
    """One measurement in a fresh process (its own peak RSS)."""
    cmd = [sys.executable, __file__, "--step", name, "--work", str(work), "--shapes", shape, "--m", str(m)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} {shape} m={m} failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _clean(work: Path) -> None:
    for f in work.glob("*.safetensors"):
        f.unlink()


def measure(shape: str, ms: list[int], work: Path, repeat: int) -> list[dict]:
    work = work / shape
    shutil.rmtree(work, ignore_errors=True)
    fields, dtype = SHAPES[shape]
    for name, seed in (("target", 0), ("base", 1)):
        subprocess.run([sys.executable, __file__, "--step", "make_model", "--work", str(work / name),
                        "--shapes", shape, "--seed", str(seed)], check=True)
    from transformers import LlamaConfig

    from mpu_cli.models.files import state_names

    shapes, aliases = state_names(LlamaConfig(**fields))
    params = sum(math.prod(s) for n, s in shapes.items() if aliases[n] == n)
    fp32_mb = params * 4 / 2**20
    rows = []
    try:
        for m in ms:
            load = os.getloadavg()[0]  # other work on the machine slows both the floor and the server
            floors, servers = [], []
            for _ in range(repeat):  # floor and server in turn: a slow spell of the disk shows in both of a pair
                floors.append(_step("floor", work, shape, m))
                _clean(work)
                servers.append(_step("server", work, shape, m))
                _clean(work)
            ratios = [sv["seconds"] / fl["seconds"] for fl, sv in zip(floors, servers)]
            rows.append({"shape": shape, "dtype": dtype, "params_m": round(params / 1e6, 1), "m": m,
                         "fp32_copy_mb": round(fp32_mb), "repeats": repeat,
                         "floor_s": round(statistics.median([fl["seconds"] for fl in floors]), 1),
                         "pre_s": round(statistics.median([sv["pre_s"] for sv in servers]), 1),
                         "post_s": round(statistics.median([sv["post_s"] for sv in servers]), 1),
                         "pre_post_vs_floor": round(statistics.median(ratios), 2),
                         "ratio_range": [round(min(ratios), 2), round(max(ratios), 2)],
                         "server_peak_rss_x": round(max(sv["peak_mb"] for sv in servers) / fp32_mb, 2),
                         "floor_peak_rss_x": round(max(fl["peak_mb"] for fl in floors) / fp32_mb, 2),
                         "imported_rss_x": round(servers[0]["imported_mb"] / fp32_mb, 2), "load_1min": round(load, 1)})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def _with_earlier(path: Path, rows: list[dict]) -> list[dict]:
    """The rows of an earlier run into the same --out folder that this one did not measure again (one shape at a
    time into one table), in the order of SHAPES and m."""
    new = {(r["shape"], r["m"]) for r in rows}
    earlier = json.loads(path.read_text()) if path.exists() else []
    merged = [r for r in earlier if (r["shape"], r["m"]) not in new] + rows
    return sorted(merged, key=lambda r: (list(SHAPES).index(r["shape"]), r["m"]))


def markdown(rows: list[dict]) -> str:
    lines = [("| shape | params | dtype | m | runs | floor (s) | Pre (s) | Post (s) | Pre+Post / floor | range "
              "| server peak RSS | floor peak RSS | after imports | load |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        low, high = r.get("ratio_range", [r["pre_post_vs_floor"]] * 2)
        lines.append(f"| {r['shape']} | {r['params_m']} M | {r['dtype']} | {r['m']} | {r.get('repeats', 1)} | "
                     f"{r['floor_s']} | {r['pre_s']} | {r['post_s']} | {r['pre_post_vs_floor']}× | {low}–{high}× | "
                     f"{r['server_peak_rss_x']}× | {r['floor_peak_rss_x']}× | {r['imported_rss_x']}× | "
                     f"{r.get('load_1min', '–')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="135m,1b", help=f"comma-separated: {', '.join(SHAPES)}")
    p.add_argument("--m", default="2,8", help="comma-separated numbers of copies")
    p.add_argument("--repeat", type=int, default=3,
                   help="floor and server measured this many times in turn; the table gives medians (default 3)")
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_server"), help="model and copy files (deleted)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--step", default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    shapes = args.shapes.split(",")
    bad = [s for s in shapes if s not in SHAPES]
    if bad:
        print(f"bench_server: error: --shapes {bad[0]!r} is not one of {', '.join(SHAPES)}", file=sys.stderr)
        return 2
    if args.step == "make_model":
        make_model(args.work, shapes[0], args.seed)
        return 0
    if args.step is not None:
        print(json.dumps(STEPS[args.step](args.work, shapes[0], int(args.m))))
        return 0
    if args.repeat < 1:
        print(f"bench_server: error: --repeat {args.repeat} is not a positive number of runs", file=sys.stderr)
        return 2
    ms = [int(m) for m in args.m.split(",")]
    rows = [row for shape in shapes for row in measure(shape, ms, args.work, args.repeat)]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = _with_earlier(args.out / "bench_server.json", rows)
    (args.out / "bench_server.json").write_text(json.dumps(rows, indent=1) + "\n")
    table = markdown(rows)
    (args.out / "bench_server.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
