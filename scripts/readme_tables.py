"""`make readme-tables [TABLES=a,b]`: rebuild README.md's tables of measured numbers by measuring them again.

Each table sits in README.md between a line `<!-- table: NAME -->` and a line `<!-- /table -->`. `TABLES` maps
NAME to the function that measures and returns that markdown (register one with `@table(NAME, cost)`); only the
text between a table's two markers is rewritten, everything else in README.md stays as it is.

    python scripts/readme_tables.py [--tables a,b] [--readme README.md] [--print] [--list]

A table whose command fails leaves its old text in place; the others are still written; the exit code is 1.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
OUT = REPO / "outputs" / "readme_tables"  # what the measuring commands wrote, kept for inspection


class Table:
    def __init__(self, name: str, cost: str, build: Callable[[], str]):
        self.name, self.cost, self.build = name, cost, build


TABLES: dict[str, Table] = {}


def table(name: str, cost: str):
    """Register `fn() -> markdown` as the command that measures README's table NAME; cost: how long it runs."""
    def register(fn):
        TABLES[name] = Table(name, cost, fn)
        return fn
    return register


# ---- the marker rewriter ---------------------------------------------------------------------------------------

START = re.compile(r"^<!-- table: ([A-Za-z0-9_.-]+) -->[ \t]*$", re.MULTILINE)
END = "<!-- /table -->"


class MarkerError(ValueError):
    pass


def marked_names(text: str) -> list[str]:
    """The table names marked in a README text, in order."""
    return START.findall(text)


def replace_tables(text: str, tables: dict[str, str]) -> str:
    """`text` with the body between `<!-- table: NAME -->` and the next `<!-- /table -->` replaced by
    tables[NAME] for each given NAME; MarkerError when a NAME has no markers or a start has no end."""
    missing = sorted(set(tables) - set(marked_names(text)))
    if missing:
        raise MarkerError(f"no '<!-- table: {missing[0]} -->' ... '{END}' markers in the README")
    out, pos = [], 0
    for m in START.finditer(text):
        end = text.find("\n" + END, m.end())
        if end < 0:
            raise MarkerError(f"'<!-- table: {m.group(1)} -->' has no '{END}' line after it")
        nxt = START.search(text, m.end())
        if nxt and nxt.start() < end:
            raise MarkerError(f"'<!-- table: {m.group(1)} -->' is not closed before the next table starts")
        name = m.group(1)
        if name in tables:
            out.append(text[pos:m.end()])
            out.append("\n" + tables[name].strip("\n"))
            pos = end
    out.append(text[pos:])
    return "".join(out)


# ---- helpers ---------------------------------------------------------------------------------------------------


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1"}


def _run(cmd: list[str], log: Path, cwd: Path = REPO, env: dict | None = None) -> float:
    """Run a command (its output into `log`); its wall time in seconds; RuntimeError when it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=cwd, env=env or _env(), stdout=f, stderr=subprocess.STDOUT,
                            check=False).returncode
    seconds = time.perf_counter() - t0
    if rc != 0:
        tail = log.read_text().strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"{' '.join(cmd)} exited {rc} ({tail[0]}); log: {log}")
    return seconds


def _stamp() -> str:
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def _g(x, digits: int = 3) -> str:
    """A number to `digits` significant digits ("–" for a missing one)."""
    if x is None:
        return "–"
    if isinstance(x, bool) or not isinstance(x, float):
        return str(x)
    return f"{x:.{digits}g}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


# ---- the privacy audit -----------------------------------------------------------------------------------------

AUDIT_ARGS = ["sweep=true", "seed=0"]
AUDIT_DIR: Path | None = None  # --audit-dir: format an existing sweep folder instead of running one


@cache
def audit_sweep() -> list[dict]:
    """One `mpu-audit sweep=true seed=0` (κ ∈ {0.01, 0.1} × m ∈ {2, 4} × perturb_unprotected): its cells'
    privacy_report.json, in sweep order. Both audit tables read the same sweep."""
    out = AUDIT_DIR or OUT / f"audit_{_stamp()}"
    if AUDIT_DIR is None:
        _run([sys.executable, "-m", "mpu_cli.cli.audit", *AUDIT_ARGS, f"out={out}"], out.with_suffix(".log"))
    elif not (out / "privacy_sweep.json").is_file():
        raise RuntimeError(f"--audit-dir {out} holds no privacy_sweep.json (an `mpu-audit sweep=true` folder)")
    cells = sorted((p for p in out.iterdir() if (p / "privacy_report.json").is_file()),
                   key=lambda p: int(p.name.split("_", 1)[0]))
    return [json.loads((p / "privacy_report.json").read_text()) for p in cells]


def _audit_caption(r: dict) -> str:
    c, p = r["config"], r["params"]
    return (f"Measured on the embedded default ({p['total'] / 1e6:.2f} M parameters, {p['protected'] / 1e6:.2f} M "
            f"in blocks;\n{c['algorithm'].upper()}, {c['client_epochs']} epochs, lr {c['client_lr']:g}, "
            f"{c['split']}, seed {c['seed']}; `mpu-audit {' '.join(AUDIT_ARGS)}`):")


@table("audit", cost="~6 min on 2 cores (mpu-audit sweep=true seed=0, one thread; shared with audit_all_params)")
def audit_table() -> str:
    reports = [r for r in audit_sweep() if not r["config"]["perturb_unprotected"]]
    rows = []
    for r in reports:
        a, c = r["attacks"], r["config"]
        b1 = a.get("B1", {})
        rows.append([
            _g(c["kappa"]), str(c["m"]), _g(a["A0"]["exposed_fraction"]),
            f"{_g(a['A1']['rel_err_protected'])} ({_g(a['A1']['rel_err_protected_mod_T'])})",
            f"{a['A2']['perm_accuracy']:.3f} / {_g(a['A2']['angle_err_mean_rad'], 2)} rad",
            _g(a["A2"]["rel_err_protected"]), _g(a["A4"]["rel_err_protected"]), _g(a["A5"]["rel_err_protected"]),
            _g(a["A5"]["rel_err_protected_mod_T"]), _g(a["A5"].get("weights_max_abs_err"), 2),
            f"{_g(b1.get('auc'))} ({_g(b1.get('auc_vs_retain'))} / {_g(b1.get('auc_vs_holdout'))})",
        ])
    header = ["κ", "m", "A0 exposed", "A1 err (mod T)", "A2 perm acc / angle err", "A2 err", "A4 err", "A5 err",
              "A5 err mod T", "A5 weights max err", "B1 AUC (vs retain / holdout)"]
    return _audit_caption(reports[0]) + "\n\n" + markdown(header, rows)


@table("audit_all_params", cost="the audit table's sweep (run once for both)")
def audit_all_params_table() -> str:
    rows = []
    for r in audit_sweep():
        a, c, u = r["attacks"], r["config"], r.get("utility") or {}
        rows.append([
            _g(c["kappa"]), str(c["m"]), str(c["perturb_unprotected"]).lower(), _g(a["A0"]["exposed_fraction"]),
            _g(a["A1"].get("rel_err_all_mod_T")), _g(a["A5"].get("rel_err_all_mod_T")),
            *(_g(u.get(model, {}).get("retain_prob"), 4) for model in ("theta_prev", "copy_1", "theta_next")),
        ])
    header = ["κ", "m", "perturb_unprotected", "A0 exposed", "A1 err all params mod T",
              "A5 err all params mod T", "retain prob: θ_{r−1}", "copy 1", "θ_r"]
    return markdown(header, rows)


# ---- where MPU breaks: make reproduce-break -------------------------------------------------------------------

BREAK_CONFIGS = ("reproduce_break", "reproduce_break_alpha")  # what `make reproduce-break` runs, in this order
BREAK_DIR: Path | None = None  # --break-dir: format a finished `make reproduce-break` folder instead of running one


@table("break_map", cost="~25 min of one core, ~40 min on a shared 2-core machine (make reproduce-break, 195 runs)")
def break_map_table() -> str:
    out, seconds = BREAK_DIR or OUT / f"break_{_stamp()}", None
    if BREAK_DIR is None:
        mpu_run = str(Path(sys.executable).parent / "mpu-run")
        seconds = sum(_run([mpu_run, "-m", "--config-name", name, f"hydra.sweep.dir={out}"],
                           out.parent / f"{out.name}_{name}.log") for name in BREAK_CONFIGS)
    elif not (out / "break_map.csv").is_file():
        raise RuntimeError(f"--break-dir {out} holds no break_map.csv (a `make reproduce-break` folder)")
    return break_markdown(out, seconds)


def break_markdown(folder: Path, seconds: float | None = None) -> str:
    """A break-map sweep folder (break_map_points.csv, break_map.csv) as one table: per algorithm and arm the
    forget_Q_A_Prob mean ± 95 % half-interval over seeds at each κ, bold where the paired interval against clean
    excludes 0, and `holds to` for forget Prob / deg_avg."""
    import math

    import pandas as pd

    points, table = pd.read_csv(folder / "break_map_points.csv"), pd.read_csv(folder / "break_map.csv")
    forget = points[points.metric == "forget_Q_A_Prob"]
    kappas = sorted(forget.kappa.dropna().unique())

    def cell(r) -> str:
        half = r["high"] - r["mean"] if not math.isnan(r["high"]) else None
        text = f"{r['mean']:.3f}" + (f" ± {half:.2g}" if half is not None else "")
        differs = r.get("verdict") in ("better", "worse")
        return f"**{text}**" if differs else text

    def held(r) -> str:
        if isinstance(r.note, str) and r.note:
            return "no interval"
        return f"<{str(r.kappas).split()[0]}" if math.isnan(r.holds_to) else f"{r.holds_to:g}"

    holds = {(r.panel, r.arm, r.metric): held(r) for r in table.itertuples()}
    rows = []
    for panel in sorted(forget.panel.unique()):
        clean = forget[(forget.panel == panel) & (forget.arm == "clean")]
        clean_text = cell(clean.iloc[0]) if len(clean) else "–"
        arms = [a for a in dict.fromkeys(table[table.panel == panel].arm)]
        for i, arm in enumerate(arms):
            at = {r.kappa: cell(r._asdict()) for r in forget[(forget.panel == panel) & (forget.arm == arm)].itertuples()}
            to = [holds.get((panel, arm, m)) for m in ("forget_Q_A_Prob", "deg_avg")]
            rows.append([panel if i == 0 else "", clean_text if i == 0 else "", arm,
                         *(at.get(k, "") for k in kappas),
                         " / ".join(v or "–" for v in to)])
    n = int(points.n.max())
    where = f"`make reproduce-break` on {os.cpu_count()} CPU cores" + (f", {_duration(seconds)}" if seconds else "")
    caption = (f"{where} (quick eval, {n} seed{'s' if n != 1 else ''}; the sweep folder's summary.md has every metric): forget_Q_A_Prob, "
               "mean ± 95 % half-interval over seeds; **bold**: the paired interval against the clean run of the "
               "same seed excludes 0; `holds to`: the largest κ up to which every κ measured still matches clean, "
               "for forget Prob / deg_avg (<κ: not even the smallest κ measured).")
    header = ["algorithm", "clean", "arm", *(f"κ={k:g}" for k in kappas), "holds to"]
    return caption + "\n\n" + markdown(header, rows)


# ---- the test suite ----------------------------------------------------------------------------------------------

_PYTEST_SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)")


def _pytest_row(label: str, args: list[str], log_name: str) -> list[str]:
    log = OUT / f"{log_name}_{_stamp()}.log"
    load = os.getloadavg()[0]  # a shared machine: how busy it was when the tests started
    seconds = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], log)
    last = [ln for ln in log.read_text().splitlines() if " in " in ln and "passed" in ln][-1:]
    counts = {kind.rstrip("s"): int(n) for n, kind in _PYTEST_SUMMARY.findall(last[0] if last else "")}
    ran = sum(v for k, v in counts.items() if k != "deselected")
    return [label, str(ran), str(counts.get("passed", 0)), str(counts.get("skipped", 0)), _duration(seconds),
            f"{load:.1f}"]


def _tests_table(rows: list[list[str]]) -> str:
    cores = os.cpu_count()
    return (f"Measured on {cores} CPU cores with the embedded models already in `MPU_CACHE_DIR`:\n\n"
            + markdown(["command", "tests", "passed", "skipped", "wall time", "load average at start"], rows))


@table("tests_unit", cost="~40 s (the unit layer)")
def tests_unit_table() -> str:
    return _tests_table([_pytest_row("`make test-unit`", ["-m", "not slow and not integration"], "tests_unit")])


@table("tests_all", cost="~6 min on 2 cores (a clean clone of HEAD: the install, then both layers as CI runs them)")
def tests_all_table() -> str:
    """What CI does: a clean clone of the committed HEAD, `make install`, then `.ci/run` with an empty cache
    (its MPU_CACHE_DIR is inside the clone), each timed."""
    import shutil
    import tempfile

    load = os.getloadavg()[0]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()
    root = Path(tempfile.mkdtemp(prefix="mpu-ci-"))
    try:
        clone = root / "mpu-cli"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        env = {k: v for k, v in _env().items() if k not in ("MPU_CACHE_DIR", "VIRTUAL_ENV")}
        log = OUT / f"tests_all_{_stamp()}.log"
        install = _run(["make", "install"], log.with_name(log.stem + "_install.log"), cwd=clone, env=env)
        tests = _run([str(clone / ".ci" / "run")], log, cwd=clone, env=env)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    last = [ln for ln in log.read_text().splitlines() if " in " in ln and "passed" in ln][-1:]
    counts = {kind.rstrip("s"): int(n) for n, kind in _PYTEST_SUMMARY.findall(last[0] if last else "")}
    ran = sum(v for k, v in counts.items() if k != "deselected")
    return (f"A clean clone of {head} on {os.cpu_count()} CPU cores, empty model cache (what CI runs):\n\n"
            + markdown(["step", "tests", "passed", "skipped", "wall time", "load average at start"],
                       [["`make install`", "", "", "", _duration(install), f"{load:.1f}"],
                        ["`.ci/run` (`make test`)", str(ran), str(counts.get("passed", 0)),
                         str(counts.get("skipped", 0)), _duration(tests), ""],
                        ["together", "", "", "", _duration(install + tests), ""]]))


# ---- cost: make bench --------------------------------------------------------------------------------------------


@table("bench", cost="~5 min on an idle 2-core machine (scripts/bench.py on the embedded model)")
def bench_table() -> str:
    out = OUT / f"bench_{_stamp()}"
    _run([sys.executable, str(REPO / "scripts" / "bench.py"), *BENCH_ARGS, "--out", str(out)], out.with_suffix(".log"))
    return f"`python scripts/bench.py {' '.join(BENCH_ARGS)}` on {os.cpu_count()} CPU cores:\n\n" + \
        bench_markdown(out / "bench.csv")


BENCH_ARGS = ["--models", "tiny", "--no-goal-run"]


def bench_markdown(csv: Path) -> str:
    """bench.csv as a table: one row per run, the columns that hold a value."""
    import pandas as pd

    df = pd.read_csv(csv).dropna(axis=1, how="all")
    rows = [[_g(v) if isinstance(v, float) else str(v) for v in r] for r in df.itertuples(index=False)]
    return markdown(list(df.columns), rows)


# ---- the noise that survives publication: scripts/noise_survival.py ------------------------------------------------


@table("noise_survival", cost="~2 min on 2 cores with the SmolLM2 target cached (~10 min more to build it)")
def noise_survival_table() -> str:
    out = OUT / f"noise_survival_{_stamp()}"
    _run([sys.executable, str(REPO / "scripts" / "noise_survival.py"), "--out", str(out)], out.with_suffix(".log"))
    return ("`python scripts/noise_survival.py` (one round, seed 0, m = 2; changed: the fraction of published block "
            "elements that differ from the noise-free published copy; effective κ: RMS(published − T(θ)) / "
            "RMS(θ − θ_base), each copy divided by its α_k, against the noise-free copy cast to the published dtype "
            "and, in brackets, against the exact one):\n\n" + (out / "noise_survival.md").read_text().strip())


# ---- a real pretrained model on a CPU: make reproduce-smollm2 -----------------------------------------------------

SMOLLM2_DIR: Path | None = None  # --smollm2-dir: format a finished sweep instead of running one
SMOLLM2_METRICS = ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "retain_Q_A_Prob", "retain_Q_A_ROUGE")


@table("smollm2", cost="~1 h on 2 cores (the sweep of make reproduce-smollm2; --smollm2-dir formats a finished one)")
def smollm2_table() -> str:
    root = SMOLLM2_DIR
    if root is None:
        root = OUT / f"smollm2_{_stamp()}"
        _run([sys.executable, str(REPO / "scripts" / "make_tofu_subset.py"), "outputs/data/embedded-subset"],
             root.with_suffix(".subset.log"))
        _run([sys.executable, "-c", "from mpu_cli.cli.run import run_main; run_main()", "-m", "--config-name",
              "reproduce_smollm2", f"hydra.sweep.dir={root}"], root.with_suffix(".log"))
    return smollm2_markdown(root)


def smollm2_markdown(root: Path) -> str:
    """Per algorithm and arm: each quick metric's mean over seeds with its 95 % t-interval, and deg_avg against
    the clean run of the same seed (paired) with its interval and verdict."""
    from mpu_cli.report.stats import t_interval
    from mpu_cli.report.tables import collect

    col = collect(root)
    used = col.used
    if not len(used):
        raise RuntimeError(f"{root}: no finished runs")

    def cell(values) -> str:
        iv = t_interval(values)
        return _g(iv.mean) if iv.n < 2 else f"{_g(iv.mean)} [{_g(iv.low)}, {_g(iv.high)}]"

    deg = col.paired[col.paired.metric == "deg_avg"] if len(col.paired) else col.paired
    rows = []
    for (algorithm, arm, kappa), g in used.groupby(["algorithm", "arm", "kappa"], sort=False):
        d = deg
        for key, value in (("algorithm", algorithm), ("arm", arm), ("kappa", kappa)):
            d = d[d[key] == value] if key in d else d  # paired carries the keys that vary in the sweep
        degradation = "–"
        if len(d) and math.isnan(d.iloc[0].diff_mean):
            degradation = d.iloc[0].verdict
        elif len(d):
            r = d.iloc[0]
            ci = "" if math.isnan(r.ci_low) else f" [{100 * r.ci_low:+.1f}, {100 * r.ci_high:+.1f}]"
            degradation = f"{100 * r.diff_mean:+.1f} %{ci} ({r.verdict})"
        rows.append([algorithm, arm, "–" if arm == "clean" else _g(float(kappa)), str(len(g)),
                     *(cell(g[m]) for m in SMOLLM2_METRICS), degradation])
    order = {"clean": 0, "noised": 1, "mpu": 2}
    rows.sort(key=lambda r: (r[0], float(r[2]) if r[2] != "–" else -1.0, order.get(r[1], 9)))
    done = col.finished
    target = {m: done[f"target_{m}"].iloc[0] for m in SMOLLM2_METRICS if f"target_{m}" in done}
    retain = {m: done[f"retainmodel_{m}"].iloc[0] for m in SMOLLM2_METRICS if f"retainmodel_{m}" in done}
    ref = "; ".join(f"{name}: " + " / ".join(_g(v.get(m)) for m in SMOLLM2_METRICS)
                    for name, v in (("target", target), ("retain model", retain)) if v)
    header = ["algorithm", "arm", "κ", "seeds", "forget Prob", "forget ROUGE", "retain Prob", "retain ROUGE",
              "deg_avg vs clean [95 % CI]"]
    ref = f" Reference points (forget Prob / ROUGE, retain Prob / ROUGE) — {ref}." if ref else ""
    return (f"{len(done)} runs ({len(col.failed)} failed); mean over seeds [95 % t-interval]; deg_avg over "
            f"forget Prob and ROUGE (quick evaluation: no model_utility), worse than clean > 0.{ref}\n\n"
            + markdown(header, rows))


# ---- not measured, but generated so that it cannot drift: open-unlearning's names (cli/aliases.py) --------------


@table("aliases", cost="instant (read from mpu_cli.cli.aliases)")
def aliases_table() -> str:
    from mpu_cli.cli.aliases import DERIVED, KEYS, MODEL_DIR, OPEN_UNLEARNING_ALGORITHMS

    rows = [[f"`{theirs}=…`", f"`{ours}=…`"] for theirs, ours in KEYS.items()]
    rows.append([", ".join(f"`{k}=…`" for k in DERIVED), "follows from `data.split` (accepted when it agrees)"])
    by_ours: dict[str, list[str]] = {}
    for theirs, ours in OPEN_UNLEARNING_ALGORITHMS.items():
        by_ours.setdefault(ours, []).append(theirs)
    rows.append(["`trainer=` or `algorithm=` " + " · ".join(" / ".join(t) for t in by_ours.values()),
                 "`algorithm=` " + " · ".join(by_ours)])
    rows.append(["`model=` their config name (e.g. `Llama-3.2-1B-Instruct`)",
                 "`model=` " + " · ".join(p.stem for p in sorted(MODEL_DIR.glob("*.yaml")))])
    return markdown(["open-unlearning", "read as"], rows)


@table("options", cost="instant (read from conf/config.yaml's comments, as `mpu-run --help` is)")
def options_table() -> str:
    from mpu_cli.cli.help import group_options, parse
    from mpu_cli.config import CONF_DIR

    groups, keys = parse((Path(CONF_DIR) / "config.yaml").read_text())
    rows = [[f"`{g.name}=`", f"{g.meaning}; options: {', '.join(group_options(Path(CONF_DIR), g.name))}",
             "none" if g.default == "null" else f"`{g.default}`"] for g in groups]
    rows += [[f"`{k.name}`", k.meaning, "see meaning" if k.default.startswith("${") else f"`{k.default}`"]
             for k in keys]
    return markdown(["key", "meaning", "default"], [[c.replace("|", "\\|") for c in r] for r in rows])


# ---- the command -------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", default="", help="comma-separated names (default: every registered table)")
    ap.add_argument("--smollm2-dir", type=Path, default=None,
                    help="the smollm2 table from this finished `make reproduce-smollm2` sweep folder (no new sweep)")
    ap.add_argument("--readme", type=Path, default=README)
    ap.add_argument("--print", action="store_true", help="print the tables instead of writing the README")
    ap.add_argument("--list", action="store_true", help="list the registered tables and what each costs")
    ap.add_argument("--break-dir", type=Path, default=None,
                    help="the break_map table from this finished `make reproduce-break` folder (no new sweep)")
    ap.add_argument("--audit-dir", type=Path, default=None,
                    help="the audit tables from this finished `mpu-audit sweep=true seed=0` folder (no new sweep)")
    args = ap.parse_args(argv)
    global AUDIT_DIR, BREAK_DIR
    AUDIT_DIR, BREAK_DIR = args.audit_dir, args.break_dir
    if args.list:
        for t in TABLES.values():
            print(f"{t.name:<18} {t.cost}")
        return 0
    global SMOLLM2_DIR
    SMOLLM2_DIR = args.smollm2_dir
    names = [n.strip() for n in args.tables.split(",") if n.strip()] or list(TABLES)
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        print(f"readme_tables: error: TABLES={unknown[0]!r} is not one of {sorted(TABLES)}", file=sys.stderr)
        return 2
    text = args.readme.read_text()
    if not args.print:
        unmarked = [n for n in names if n not in marked_names(text)]
        if unmarked:
            print(f"readme_tables: error: {args.readme} has no markers for {unmarked}", file=sys.stderr)
            return 2
    built, failed = {}, []
    for name in names:
        print(f"readme_tables: {name} ({TABLES[name].cost}) ...", flush=True)
        t0 = time.perf_counter()
        try:
            built[name] = TABLES[name].build()
        except Exception as e:  # noqa: BLE001 (one failing command does not lose the other tables)
            failed.append(name)
            print(f"readme_tables: {name} failed: {e}", file=sys.stderr)
            continue
        print(f"readme_tables: {name} done in {_duration(time.perf_counter() - t0)}", flush=True)
        if args.print:
            print(built[name] + "\n")
    if built and not args.print:
        from mpu_cli.files import atomic_write_text

        atomic_write_text(args.readme, replace_tables(args.readme.read_text(), built))
        print(f"readme_tables: rewrote {sorted(built)} in {args.readme}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
