"""The Llama-3.2-1B shape end to end through `mpu-run` (the user's path), with the peak RSS of every process and
the wall time of every stage recorded into the run folder (scale.json); `mpu-report RUN --view scale` (and
`make readme-tables TABLES=scale_1b`) renders them as a table.

    python scripts/scale_1b.py                      # CPU: the 1B shape in fp32, transport=files (~1 h on 2 cores)
    python scripts/scale_1b.py --layers 2           # the same at full width with 2 blocks (to try the path)
    python scripts/scale_1b.py --cache RUN/cache    # reuse an earlier attempt's cache (its target evaluation)
    python scripts/scale_1b.py --device cuda        # GPU: the 1B shape, published and trained in bf16
    python scripts/scale_1b.py --device cuda --hub  # GPU: the real meta-llama/Llama-3.2-1B-Instruct (the Hub)

The run: one round, m = 2, forget01 of the embedded TOFU-shaped data (4 questions; --hub: TOFU's forget01 with
open-unlearning's target and retain99 models), 1 epoch of RMU (it trains three down_proj matrices and stops the
forward pass after block 7, so the client holds the copy, its frozen reference and small AdamW states: ~3 fp32
copies of the model instead of AdamW's ~5 on every weight), quick evaluation with 16-token answers. The shape's
base and target are two random inits (seeds 0 and 1) written by scripts/make_llama1b_shape.py into --models:
the target stands for a fine-tuned model (nothing is fine-tuned: 1B on this CPU would take hours), and σ has its
usual reference θ − θ_base. On the CPU everything runs in fp32 (model.dtype=float32; the bf16 folder is upcast
exactly on load): this CPU has no native bf16 and is ~20x slower in it. On a GPU: model.dtype=bfloat16 and the
copies published in bf16. Extra arguments after `--` are more mpu-run overrides.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCALE_FILE = "scale.json"  # read by mpu_cli.report.views.scale
ENTRY_POINTS = ("mpu-run", "mpu-server", "mpu-client")
HUB_TARGET = "open-unlearning/tofu_Llama-3.2-1B-Instruct_full"
HUB_RETAIN = "open-unlearning/tofu_Llama-3.2-1B-Instruct_retain99"

COMMON = ["model=llama-3.2-1b-instruct", "data.split=forget01", "algorithm=rmu", "client.epochs=1",
          "eval.metrics=quick", "eval.max_new_tokens=16", "m=2", "rounds=1", "seed=0", "transport=files"]
ON_DEVICE = {"cpu": ["device=cpu", "model.dtype=float32", "server.publish_dtype=float32"],
             "cuda": ["device=cuda", "model.dtype=bfloat16", "server.publish_dtype=model"]}


def shape_folders(models: Path, layers: int | None, extra: list[str]) -> tuple[Path, Path]:
    """The shape's base (seed 0) and target (seed 1), written once by make_llama1b_shape.py."""
    tag = "-".join(["llama1b-shape", *([f"L{layers}"] if layers else []), *(a.lstrip("-") for a in extra)])
    folders = []
    for role, seed in (("base", 0), ("target", 1)):
        out = models / f"{tag}-{role}"
        if not (out / "model.safetensors.index.json").is_file():
            if out.exists():
                shutil.rmtree(out)  # a half-written folder from an interrupted build
            cmd = [sys.executable, str(REPO / "scripts" / "make_llama1b_shape.py"), str(out), "--seed", str(seed),
                   *(["--layers", str(layers)] if layers else []), *extra]
            subprocess.run(cmd, check=True)
        folders.append(out)
    return folders[0], folders[1]


def overrides(args) -> list[str]:
    # A cache of its own by default: the target's evaluation is measured, not read from an earlier run's cache.
    cache = args.cache or args.out / "cache"
    out = [*COMMON, *ON_DEVICE[args.device], f"hydra.run.dir={args.out}", f"prepare.cache_dir={cache}"]
    if args.hub:
        out += ["data=tofu", f"model.target={HUB_TARGET}", f"model.retain={HUB_RETAIN}"]
    else:
        base, target = shape_folders(args.models, args.layers, args.shape_args.split())
        out += [f"model.base={base}", f"model.target={target}", "model.retain=null", "model.tokenizer=null"]
    return out + args.extra


def label(cmdline: list[str]) -> str | None:
    """'mpu-server publish', 'mpu-client unlearn', 'mpu-run', ... for the project's processes; None otherwise."""
    for i, arg in enumerate(cmdline):
        name = Path(arg).name
        if name in ENTRY_POINTS:
            sub = next((a for a in cmdline[i + 1:i + 2] if not a.startswith("-") and "=" not in a), "")
            return f"{name} {sub}".strip()
    return None


def _hwm_bytes(pid: int) -> int | None:
    """The kernel's peak resident set of a process (VmHWM): the true peak, however short, between two samples."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _gpu_mib() -> dict[int, int]:
    """GPU memory per process (nvidia-smi), {} without a GPU."""
    if not shutil.which("nvidia-smi"):
        return {}
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=False).stdout
    found = {}
    for line in out.splitlines():
        try:
            pid, mib = (int(x) for x in line.split(","))
        except ValueError:
            continue
        found[pid] = mib
    return found


class Sampler(threading.Thread):
    """Every `period` seconds: each process of the tree under `root`, its label, lifetime and peak RSS/GPU memory."""

    def __init__(self, root: int, t0: float, period: float = 0.2):
        super().__init__(daemon=True)
        self.root, self.t0, self.period = root, t0, period
        self.procs: dict[int, dict] = {}
        self.done = threading.Event()

    def table(self) -> list[dict]:
        return sorted((dict(r) for r in list(self.procs.values())), key=lambda r: r["start_s"])

    def run(self) -> None:
        import psutil

        gpu_every, n = max(1, int(2.0 / self.period)), 0
        while not self.done.is_set():
            now = time.perf_counter() - self.t0
            try:
                tree = [psutil.Process(self.root), *psutil.Process(self.root).children(recursive=True)]
            except psutil.NoSuchProcess:
                tree = []
            gpu = _gpu_mib() if n % gpu_every == 0 else {}
            n += 1
            for p in tree:
                rec = self.procs.get(p.pid)
                if rec is None:
                    try:
                        name = label(p.cmdline())
                    except psutil.Error:
                        continue
                    if name is None:
                        continue
                    rec = self.procs[p.pid] = {"process": name, "pid": p.pid, "start_s": round(now, 1),
                                               "peak_rss_bytes": 0, "peak_gpu_mib": None}
                hwm = _hwm_bytes(p.pid)
                if hwm is not None:
                    rec["peak_rss_bytes"] = max(rec["peak_rss_bytes"], hwm)
                    rec["end_s"] = round(now, 1)
                if p.pid in gpu:
                    rec["peak_gpu_mib"] = max(rec["peak_gpu_mib"] or 0, gpu[p.pid])
            self.done.wait(self.period)


def _write(path: Path, record: dict) -> None:
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def param_count(where: Path) -> int:
    """Parameters of the run's public model (its config, built on the meta device: no weights read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(where)))
    return sum(p.numel() for p in model.parameters())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=sorted(ON_DEVICE), default="cpu")
    p.add_argument("--hub", action="store_true", help="the real Llama-3.2-1B-Instruct and TOFU (needs the Hub)")
    p.add_argument("--layers", type=int, default=None, help="a reduced shape: this many blocks at full width")
    p.add_argument("--shape-args", default="",
                   help="more make_llama1b_shape.py flags for the shape, one string (e.g. '--hidden 64 --heads 4')")
    p.add_argument("--models", type=Path, default=REPO / "outputs" / "models", help="where the shape folders live")
    p.add_argument("--out", type=Path, default=None, help="the run folder (default: outputs/scale/<time>_<device>)")
    p.add_argument("--cache", type=Path, default=None,
                   help="the prepare cache (default: the run folder's own, so the target's evaluation is measured); "
                        "an earlier attempt's cache skips that evaluation")
    p.add_argument("extra", nargs="*", help="more mpu-run overrides (after --)")
    args = p.parse_args(argv)
    args.out = (args.out or REPO / "outputs" / "scale" /
                f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{args.device}{'_hub' if args.hub else ''}").resolve()
    cmd = [str(BIN / "mpu-run"), *overrides(args)]
    env = dict(os.environ)
    if args.hub:
        env.update(HF_HUB_OFFLINE="0", HF_DATASETS_OFFLINE="0")
    print("$ " + " ".join(cmd), flush=True)
    # Beside the run folder while mpu-run owns it (its manifest lists the folder's files when it finishes).
    partial = args.out.with_name(args.out.name + ".partial-" + SCALE_FILE)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    sampler = Sampler(proc.pid, t0)
    sampler.start()
    record = {"command": cmd, "returncode": None, "device": args.device, "hub": args.hub,
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    while True:  # what has been measured so far stays readable while a long run goes on
        try:
            rc = proc.wait(timeout=30)
            break
        except subprocess.TimeoutExpired:
            partial.parent.mkdir(parents=True, exist_ok=True)
            _write(partial, record | {"wall_s": round(time.perf_counter() - t0, 1), "processes": sampler.table()})
    sampler.done.set()
    sampler.join()
    record |= {"returncode": rc, "wall_s": round(time.perf_counter() - t0, 1), "processes": sampler.table()}
    public = args.out / "exchange" / "public"
    if public.is_dir():
        record["params"] = param_count(public)
    args.out.mkdir(parents=True, exist_ok=True)
    _write(args.out / SCALE_FILE, record)
    partial.unlink(missing_ok=True)
    if rc == 0:
        from mpu_cli.report.views import VIEWS

        print(VIEWS["scale"].render(args.out))
    print(f"scale_1b: {'done' if rc == 0 else f'mpu-run exited {rc}'}; {args.out / SCALE_FILE}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
