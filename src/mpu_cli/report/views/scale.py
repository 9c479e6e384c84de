"""A run made by scripts/scale_1b.py as two tables: the wall time of every stage (results.csv, the server's command
log, the client's per-copy lines) and the peak memory of every process (scale.json, sampled while it ran)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from mpu_cli.report.views.fmt import duration, machine, markdown

SCALE_FILE = "scale.json"
_COPY_LINE = re.compile(r"round (\d+) copy (\d+) returned \(([\d.]+)s\)")


def _results(folder: Path) -> dict:
    with open(folder / "results.csv", newline="", encoding="utf-8") as f:
        return next(csv.DictReader(f))


def _server_log(folder: Path) -> list[dict]:
    log = folder / "server_private" / "log.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []


def _copies(folder: Path) -> list[tuple[int, int, float]]:
    """(round, copy, seconds) of every copy the client processes returned, from their logs."""
    found = []
    for log in sorted((folder / "logs").glob("client_*.log")):
        found += [(int(r), int(k), float(s)) for r, k, s in _COPY_LINE.findall(log.read_text())]
    return sorted(found)


def _override(record: dict, key: str) -> str | None:
    """The value of one `key=value` override of the recorded mpu-run command (None: not given)."""
    return next((a.split("=", 1)[1] for a in record.get("command", []) if a.startswith(key + "=")), None)


def _reused_cache(record: dict) -> bool:
    """The run read its prepare cache from outside its own folder (scale_1b.py --cache): the target's evaluation
    was then an earlier run's."""
    cache, run_dir = _override(record, "prepare.cache_dir"), _override(record, "hydra.run.dir")
    return bool(cache and run_dir) and not Path(cache).is_relative_to(run_dir)


def stage_rows(folder: Path, record: dict | None = None) -> list[list[str]]:
    res = {k: float(v) for k, v in _results(folder).items() if k.startswith("time_") and v}
    target_eval = res["time_total_s"] - res["time_prepare_s"] - res["time_unlearn_s"] - res["time_eval_s"]
    reused = record is not None and _reused_cache(record)
    rows = [["input checks, model identities (prepare)", duration(res["time_prepare_s"])],
            ["evaluation of the target" + (" (read from an earlier run's cache)" if reused else ""),
             duration(target_eval)]]
    rows += [[f"mpu-server {e['command']} (round {e['round']})", duration(e["seconds"])] for e in _server_log(folder)]
    rows += [[f"mpu-client round {r} copy {k + 1}", duration(s)] for r, k, s in _copies(folder)]
    rows += [["rounds together (server + client + process starts)", duration(res["time_unlearn_s"])],
             ["evaluation of the unlearned model", duration(res["time_eval_s"])],
             ["**mpu-run in all**", f"**{duration(res['time_total_s'])}**"]]
    return rows


def process_rows(record: dict) -> list[list[str]]:
    fp32 = 4 * record["params"] if record.get("params") else None
    rows = []
    for p in record["processes"]:
        rss = p["peak_rss_bytes"]
        rows.append([f"`{p['process']}`", f"{p['start_s']:.0f}–{p.get('end_s', p['start_s']):.0f} s",
                     f"{rss / 2**30:.2f} GiB", f"{rss / fp32:.2f}×" if fp32 else "–",
                     "–" if p.get("peak_gpu_mib") is None else f"{p['peak_gpu_mib'] / 1024:.2f} GiB"])
    return rows


def _read(folder: Path) -> tuple[dict, str]:
    """scale.json and a caption naming the model, device, dtypes, algorithm, m and transport of the run."""
    f = folder / SCALE_FILE
    if not f.is_file() or not (folder / "results.csv").is_file():
        raise ValueError(f"{folder} holds no {SCALE_FILE} and results.csv (a finished `python scripts/scale_1b.py "
                         "--out DIR` run)")
    record = json.loads(f.read_text())
    cfg = json.loads((folder / "run.json").read_text())["config"] if (folder / "run.json").is_file() else {}
    params = f"{record['params'] / 1e9:.3f} B parameters" if record.get("params") else "the model"
    what = (f"{params}, device={record['device']}, model.dtype={cfg.get('model', {}).get('dtype', '?')}, "
            f"publish {cfg.get('server', {}).get('publish_dtype', '?')}, {cfg.get('algorithm', {}).get('name', '?')}, "
            f"m = {cfg.get('m', '?')}, transport={cfg.get('transport', '?')}, on "
            f"{machine(record.get('omp_num_threads') or '(unset)')}")
    return record, what


_PROCESS_HEADER = ["process", "alive (from the start)", "peak RSS", "× fp32 copy", "peak GPU memory"]
_PROCESS_NOTE = ("peak RSS: the kernel's high-water mark VmHWM, sampled every 0.2 s; × one fp32 copy of the model; "
                 "GPU: nvidia-smi every 2 s")


def scale_markdown(folder: Path) -> str:
    """Both tables: every stage's wall time, then every process's peak memory."""
    folder = Path(folder)
    record, what = _read(folder)
    return (f"Stages ({what}):\n\n" + markdown(["stage", "wall time"], stage_rows(folder, record))
            + f"\n\nProcesses ({_PROCESS_NOTE}):\n\n" + markdown(_PROCESS_HEADER, process_rows(record)))


def processes_markdown(folder: Path) -> str:
    """The processes' table alone, with mpu-run's total wall time in its caption."""
    folder = Path(folder)
    record, what = _read(folder)
    total = duration(float(_results(folder)["time_total_s"]))
    return (f"{what}; mpu-run in all {total} ({_PROCESS_NOTE}):\n\n"
            + markdown(_PROCESS_HEADER, process_rows(record)))
