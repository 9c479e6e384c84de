"""`make readme-tables [TABLES=a,b]`: rebuild the docs' tables of measured numbers by measuring them again.

Each table sits in README.md or a page of docs/ between a line `<!-- table: NAME -->` and a line
`<!-- /table -->`. `TABLES` maps NAME to the function that measures and returns that markdown (register one with
`@table(NAME, cost)`); only the text between a table's two markers is rewritten, everything else stays as it is.

    python scripts/readme_tables.py [--tables a,b] [--readme FILE] [--print] [--list]

A table whose command fails leaves its old text in place; the others are still written; the exit code is 1.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from functools import cache
from pathlib import Path

from mpu_cli.report.views import VIEWS
from mpu_cli.report.views import demo as demo_view
from mpu_cli.report.views.breakmap import break_markdown
from mpu_cli.report.views.fmt import duration, machine, markdown
from mpu_cli.report.views.muse import muse_markdown

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def doc_files() -> list[Path]:
    """The files whose tables this script rebuilds: README.md and every page of docs/."""
    return [README, *sorted((REPO / "docs").glob("*.md"))]


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


def _sweep(config_name: str, given: Path | None, subset: bool = False, parts: dict[str, list[str]] | None = None,
           stem: str | None = None) -> Path:
    """The folder of a finished `mpu-run -m --config-name <config_name>` sweep: `given`, else one run now into
    outputs/readme_tables/<stem>_<time> (after writing the data subset its config reads, when `subset`). `parts`:
    sub-folder -> extra overrides, one sweep each into the folder (default: the config's own grid, into it)."""
    if given is not None:
        return given
    root = OUT / f"{stem or config_name}_{_stamp()}"
    if subset:
        _run([sys.executable, str(REPO / "scripts" / "make_tofu_subset.py"), "outputs/data/embedded-subset"],
             root.with_suffix(".subset.log"))
    for part, overrides in (parts or {"": []}).items():
        out = root / part
        _run([str(Path(sys.executable).parent / "mpu-run"), "-m", "--config-name", config_name, *overrides,
              f"hydra.sweep.dir={out}"], out.with_suffix(".log"))
    return root


# ---- the privacy audit: the views `mpu-report DIR --view audit / audit_all_params` -------------------------------

AUDIT_ARGS = ["sweep=true", "seed=0"]
AUDIT_DIR: Path | None = None  # --audit-dir: format an existing sweep folder instead of running one


@cache
def audit_sweep() -> Path:
    """The folder of one `mpu-audit sweep=true seed=0` (κ ∈ {0.01, 0.1} × m ∈ {2, 4} × perturb_unprotected):
    both audit tables read the same sweep."""
    out = AUDIT_DIR or OUT / f"audit_{_stamp()}"
    if AUDIT_DIR is None:
        _run([sys.executable, "-m", "mpu_cli.cli.audit", *AUDIT_ARGS, f"out={out}"], out.with_suffix(".log"))
    return out


@table("audit", cost="~6 min on 2 cores (mpu-audit sweep=true seed=0, one thread; shared with audit_all_params)")
def audit_table() -> str:
    return VIEWS["audit"].render(audit_sweep())


@table("audit_all_params", cost="the audit table's sweep (run once for both)")
def audit_all_params_table() -> str:
    return VIEWS["audit_all_params"].render(audit_sweep())


# ---- the privacy audit of SmolLM2-135M: make audit-smollm2; the views audit_cells / _recovered / _cost -------------

AUDIT_SMOLLM2_DIR: Path | None = None  # --audit-smollm2-dir: format a finished `make audit-smollm2` folder


@cache
def audit_smollm2_sweep() -> Path:
    """The folder of one `make audit-smollm2` (its three tables read the same sweep)."""
    out = AUDIT_SMOLLM2_DIR or OUT / f"audit_smollm2_{_stamp()}"
    if AUDIT_SMOLLM2_DIR is None:
        _run(["make", "audit-smollm2", f"AUDIT_DIR={out}"], out.with_suffix(".log"))
    return out


@table("audit_smollm2", cost="~25 min on 2 cores with the SmolLM2 target cached (make audit-smollm2; shared with "
                             "audit_smollm2_recovered and audit_smollm2_cost)")
def audit_smollm2_table() -> str:
    return VIEWS["audit_cells"].render(audit_smollm2_sweep())


@table("audit_smollm2_recovered", cost="the audit_smollm2 table's sweep")
def audit_smollm2_recovered_table() -> str:
    return VIEWS["audit_recovered"].render(audit_smollm2_sweep())


@table("audit_smollm2_cost", cost="the audit_smollm2 table's sweep")
def audit_smollm2_cost_table() -> str:
    return (f"On {machine()}. " + VIEWS["audit_cost"].render(audit_smollm2_sweep()))


# ---- the privacy–utility frontier: make frontier (scripts/frontier.py) ----------------------------------------------

FRONTIER_DIR: Path | None = None  # --frontier-dir: format a finished `make frontier` folder
FRONTIER_SMOLLM2_DIR: Path | None = None  # --frontier-smollm2-dir: format a finished `make frontier-smollm2` folder


def _frontier(given: Path | None, stem: str, command: Callable[[Path], list[str]]) -> str:
    """frontier.md of a finished frontier folder: `given`, else the one `command(out)` writes now."""
    out = given
    if out is None:
        out = OUT / f"{stem}_{_stamp()}"
        _run(command(out), out.with_suffix(".log"))
    return (Path(out) / "frontier.md").read_text().strip()


@table("frontier", cost="~25 min of one core (make frontier: 48 runs, then an audit of each setting and seed)")
def frontier_table() -> str:
    return _frontier(FRONTIER_DIR, "frontier",
                     lambda out: [sys.executable, str(REPO / "scripts" / "frontier.py"), "--out", str(out)])


@table("frontier_smollm2", cost="~70 min of one core with the SmolLM2 target cached (make frontier-smollm2: 12 runs, "
                              "then an audit of each setting)")
def frontier_smollm2_table() -> str:
    return _frontier(FRONTIER_SMOLLM2_DIR, "frontier_smollm2",
                     lambda out: ["make", "frontier-smollm2", f"FRONTIER_SMOLLM2_DIR={out}"])


# ---- where MPU breaks: make reproduce-break; the view `mpu-report DIR --view break_map` -------------------------

BREAK_CONFIGS = ("reproduce_break", "reproduce_break_alpha")  # what `make reproduce-break` runs, in this order
BREAK_DIR: Path | None = None  # --break-dir: format a finished `make reproduce-break` folder instead of running one


@table("break_map", cost="~25 min of one core, ~40 min on a shared 2-core machine (make reproduce-break, 195 runs)")
def break_map_table() -> str:
    out, seconds = BREAK_DIR or OUT / f"break_{_stamp()}", None
    if BREAK_DIR is None:
        mpu_run = str(Path(sys.executable).parent / "mpu-run")
        seconds = sum(_run([mpu_run, "-m", "--config-name", name, f"hydra.sweep.dir={out}"],
                           out.parent / f"{out.name}_{name}.log") for name in BREAK_CONFIGS)
    return break_markdown(out, seconds)


# ---- make demo's run on this machine, at two thread counts --------------------------------------------------------

DEMO_THREADS = (1, 2)
DEMO_DIR: Path | None = None  # --demo-dir: format finished runs (threads1/, threads2/) instead of running them


@table("demo", cost="~4 min on an idle 2-core machine (make demo's run at OMP_NUM_THREADS=1 and 2; the first "
                    "prepares the target and retain model into an empty cache)")
def demo_table() -> str:
    root = DEMO_DIR
    if root is None:
        root = OUT / f"demo_{_stamp()}"
        mpu_run = str(Path(sys.executable).parent / "mpu-run")
        for t in DEMO_THREADS:  # one empty cache: the models are prepared once, by the first (one-thread) run
            out = root / demo_view.FOLDER.format(t)
            _run([mpu_run, *demo_view.DEMO_ARGS, f"prepare.cache_dir={root / 'cache'}", f"hydra.run.dir={out}"],
                 out.with_suffix(".log"), env={**_env(), "OMP_NUM_THREADS": str(t)})
    return VIEWS["demo"].render(root)


# ---- MUSE on the embedded corpus: make reproduce-muse-tiny ---------------------------------------------------------

MUSE_DIR: Path | None = None  # --muse-dir: format a finished `make reproduce-muse-tiny` sweep instead of running one


@table("muse", cost="~16 min of one core (make reproduce-muse-tiny, 28 runs; --muse-dir formats a finished one)")
def muse_table() -> str:
    root, seconds = MUSE_DIR, None
    if root is None:
        root = OUT / f"muse_tiny_{_stamp()}"
        seconds = _run([str(Path(sys.executable).parent / "mpu-run"), "-m", "--config-name", "reproduce_muse_tiny",
                        f"hydra.sweep.dir={root}"], root.with_suffix(".log"))
    return muse_markdown(root, seconds)


# ---- the test suite ----------------------------------------------------------------------------------------------

_PYTEST_SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)")


def _pytest_row(label: str, args: list[str], log_name: str) -> list[str]:
    log = OUT / f"{log_name}_{_stamp()}.log"
    load = os.getloadavg()[0]  # a shared machine: how busy it was when the tests started
    seconds = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], log)
    last = [ln for ln in log.read_text().splitlines() if " in " in ln and "passed" in ln][-1:]
    counts = {kind.rstrip("s"): int(n) for n, kind in _PYTEST_SUMMARY.findall(last[0] if last else "")}
    ran = sum(v for k, v in counts.items() if k != "deselected")
    return [label, str(ran), str(counts.get("passed", 0)), str(counts.get("skipped", 0)), duration(seconds),
            f"{load:.1f}"]


def _tests_table(rows: list[list[str]]) -> str:
    return (f"Measured on {machine()} with the embedded models already in `MPU_CACHE_DIR`:\n\n"
            + markdown(["command", "tests", "passed", "skipped", "wall time", "load average at start"], rows))


@table("tests_unit", cost="~1 min on 2 cores (plain `pytest`: the unit layer, tests/unit)")
def tests_unit_table() -> str:
    return _tests_table([_pytest_row("`pytest` (the unit layer)", [], "tests_unit")])


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
    return (f"A clean clone of {head} on {machine()}, empty model cache (what CI runs):\n\n"
            + markdown(["step", "tests", "passed", "skipped", "wall time", "load average at start"],
                       [["`make install`", "", "", "", duration(install), f"{load:.1f}"],
                        ["`.ci/run` (`make test`)", str(ran), str(counts.get("passed", 0)),
                         str(counts.get("skipped", 0)), duration(tests), ""],
                        ["together", "", "", "", duration(install + tests), ""]]))


# ---- cost: make bench --------------------------------------------------------------------------------------------


@table("bench", cost="~5 min on an idle 2-core machine (scripts/bench.py on the embedded model)")
def bench_table() -> str:
    out = OUT / f"bench_{_stamp()}"
    _run([sys.executable, str(REPO / "scripts" / "bench.py"), *BENCH_ARGS, "--out", str(out)], out.with_suffix(".log"))
    return f"`python scripts/bench.py {' '.join(BENCH_ARGS)}` on {machine()}:\n\n" + \
        VIEWS["bench"].render(out)


BENCH_ARGS = ["--models", "tiny", "--no-goal-run"]


# ---- the streaming server: make bench-server --------------------------------------------------------------------


BENCH_SERVER_DIR: Path | None = None  # --bench-server-dir: format a finished `make bench-server` folder


@table("bench_server", cost="~45 min on 2 cores, ~50 GB of disk at the peak (scripts/bench_server.py: 135M and 1B "
                            "shapes, floor and server three times each; --bench-server-dir formats a finished run)")
def bench_server_table() -> str:
    out = BENCH_SERVER_DIR or OUT / f"bench_server_{_stamp()}"
    if BENCH_SERVER_DIR is None:
        _run([sys.executable, str(REPO / "scripts" / "bench_server.py"), "--out", str(out)], out.with_suffix(".log"))
    return f"`python scripts/bench_server.py` on {machine()}:\n\n" + (out / "bench_server.md").read_text().strip()


# ---- the noise that survives publication: scripts/noise_survival.py ------------------------------------------------


@table("noise_survival", cost="~2 min on 2 cores with the SmolLM2 target cached (~10 min more to build it)")
def noise_survival_table() -> str:
    out = OUT / f"noise_survival_{_stamp()}"
    _run([sys.executable, str(REPO / "scripts" / "noise_survival.py"), "--out", str(out)], out.with_suffix(".log"))
    return ("`python scripts/noise_survival.py` (one round, seed 0, m = 2; changed: the fraction of published block "
            "elements that differ from the noise-free published copy; effective κ: RMS(published − T(θ)) / "
            "RMS(θ − θ_base), each copy divided by its α_k, against the noise-free copy cast to the published dtype "
            "and, in brackets, against the exact one):\n\n" + (out / "noise_survival.md").read_text().strip())


# ---- a real pretrained model on a CPU: make reproduce-smollm2; the view `mpu-report DIR --view seeds` ------------

SMOLLM2_DIR: Path | None = None  # --smollm2-dir: format a finished sweep instead of running one


@table("smollm2", cost="~1 h on 2 cores (the sweep of make reproduce-smollm2; --smollm2-dir formats a finished one)")
def smollm2_table() -> str:
    return VIEWS["seeds"].render(_sweep("reproduce_smollm2", SMOLLM2_DIR, subset=True))


# ---- LoRA clients: scripts/lora_bench.py and make reproduce-lora; the view `mpu-report DIR --view lora` ----------

LORA_BENCH_DIR: Path | None = None  # --lora-bench-dir: format a finished `scripts/lora_bench.py --out DIR` instead
LORA_DIR: Path | None = None  # --lora-dir: format a finished `make reproduce-lora` sweep instead of running one
LORA_SMOLLM2_DIR: Path | None = None  # --lora-smollm2-dir: the same for `make reproduce-lora-smollm2`


@cache
def lora_bench() -> Path:
    """The folder of one `scripts/lora_bench.py` run: both of its tables read it."""
    out = LORA_BENCH_DIR or OUT / f"lora_bench_{_stamp()}"
    if LORA_BENCH_DIR is None:
        _run([sys.executable, str(REPO / "scripts" / "lora_bench.py"), "--out", str(out)], out.with_suffix(".log"))
    return out


@table("lora_cost", cost="~30 min on a shared 2-core machine and ~11 GB of memory (scripts/lora_bench.py: 12 client "
                         "processes, SmolLM2's GGUF converted once, the 1B shape's folders made once)")
def lora_cost_table() -> str:
    return (f"`python scripts/lora_bench.py` on {machine(1)}: one copy unlearned by NPO (a reference model), one "
            "epoch of the embedded forget01 set, each client in a fresh process (values: the client's state dict, "
            "tied embeddings counted twice; the epoch times are from a shared, loaded machine); the Llama-3.2-1B "
            "shape (`make llama1b-shape`, random init): its LoRA clients measured like the others, its full "
            "fine-tuning by its tensor shapes (bytes only: in fp32 it holds the copy, a frozen reference, gradients "
            "and AdamW's two moments, ~25 GB, more than this machine's 24 GB):\n\n"
            + (lora_bench() / "cost.md").read_text().strip())


@table("lora_cost_short", cost="the lora_cost table's run (shared)")
def lora_cost_short_table() -> str:
    return (f"`python scripts/lora_bench.py` on {machine(1)} (NPO, one epoch of forget01, one client process each; "
            "the 1B shape's full fine-tuning by its tensor shapes: bytes only, in fp32 it needs ~25 GB; "
            "[docs/lora.md](docs/lora.md) has the full table):\n\n"
            + (lora_bench() / "cost_short.md").read_text().strip())


@table("lora_cancellation", cost="the lora_cost table's run (shared)")
def lora_cancellation_table() -> str:
    return ("A linear, T-equivariant rank-8 LoRA client on the embedded target's θ (`scripts/lora_bench.py`; "
            "largest relative error ‖aggregate − F(θ)‖ / ‖F(θ)‖ over the seeds):\n\n"
            + (lora_bench() / "cancellation.md").read_text().strip())


@table("lora_quality", cost="~20 min on 2 cores (make reproduce-lora, 18 runs; --lora-dir formats a finished one)")
def lora_quality_table() -> str:
    return f"`make reproduce-lora` on {machine()}:\n\n" + VIEWS["lora"].render(_sweep("reproduce_lora", LORA_DIR))


# The pilot that chose reproduce_lora_smollm2's client.lora.lr_scale: seed 0, clean, the full client and the adapter
# at each of these scales; the scale whose forget Prob lies closest to the full client's is the one the sweep uses.
LORA_SMOLLM2_PILOT_SCALES = "10,30,100"
LORA_SMOLLM2_PILOT_DIR: Path | None = None  # --lora-smollm2-pilot-dir: format a finished pilot instead of running one


@table("lora_smollm2_pilot", cost="~15 min on 2 cores (4 SmolLM2 runs; --lora-smollm2-pilot-dir formats finished ones)")
def lora_smollm2_pilot_table() -> str:
    one = ["variant=clean", "seed=0"]
    root = _sweep("reproduce_lora_smollm2", LORA_SMOLLM2_PILOT_DIR, subset=True, stem="lora_smollm2_pilot",
                  parts={"full": [*one, "client.lora.enabled=false"],
                         "lora": [*one, "client.lora.enabled=true", f"client.lora.lr_scale={LORA_SMOLLM2_PILOT_SCALES}"]})
    return (f"`make reproduce-lora-smollm2`'s runs at seed 0, clean, the adapter at lr_scale "
            f"{LORA_SMOLLM2_PILOT_SCALES.replace(',', ', ')} "
            f"(`make readme-tables TABLES=lora_smollm2_pilot`), on {machine()}:\n\n" + VIEWS["lora_pilot"].render(root))


@cache
def lora_smollm2_sweep() -> Path:
    """The folder of one `make reproduce-lora-smollm2` sweep: both of its tables read it."""
    return _sweep("reproduce_lora_smollm2", LORA_SMOLLM2_DIR, subset=True)


@table("lora_quality_smollm2", cost="~1 h on 2 cores (make reproduce-lora-smollm2, 18 runs; --lora-smollm2-dir "
                                    "formats a finished one)")
def lora_quality_smollm2_table() -> str:
    return f"`make reproduce-lora-smollm2` on {machine()}:\n\n" + VIEWS["lora"].render(lora_smollm2_sweep())


@table("lora_quality_smollm2_short", cost="the lora_quality_smollm2 table's sweep (shared)")
def lora_quality_smollm2_short_table() -> str:
    return (f"`make reproduce-lora-smollm2` on {machine()} ([docs/lora.md](docs/lora.md) has every metric):\n\n"
            + VIEWS["lora_short"].render(lora_smollm2_sweep()))
# ---- the Llama-3.2-1B shape end to end: scripts/scale_1b.py; the views `scale` / `scale_processes` ------------------

SCALE_DIR: Path | None = None  # --scale-dir: format a finished `python scripts/scale_1b.py` run instead of running one


@cache
def scale_run() -> Path:
    """The folder of one `python scripts/scale_1b.py` run (CPU, the full 1B shape): both scale tables read it."""
    out = SCALE_DIR or OUT / f"scale_1b_{_stamp()}"
    if SCALE_DIR is None:
        _run([sys.executable, str(REPO / "scripts" / "scale_1b.py"), "--out", str(out)], out.with_suffix(".log"))
    return out


@table("scale_1b", cost="~1 h on 2 cores and ~15 GB of memory (scripts/scale_1b.py; --scale-dir formats a finished run)")
def scale_1b_table() -> str:
    return "`python scripts/scale_1b.py`. " + VIEWS["scale"].render(scale_run())


@table("scale_1b_processes", cost="the scale_1b table's run (run once for both)")
def scale_1b_processes_table() -> str:
    return "`python scripts/scale_1b.py`: " + VIEWS["scale_processes"].render(scale_run())


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


@table("options", cost="instant (generated from the config schema, as `mpu-run --help` is)")
def options_table() -> str:
    from mpu_cli.cli.help import entries, group_options
    from mpu_cli.config import CONF_DIR

    groups, keys = entries("config")
    rows = [[f"`{g.name}=`", f"{g.meaning}; options: {', '.join(group_options(CONF_DIR, g.name))}", "",
             f"`{g.default}`" if g.default else "none"] for g in groups]
    rows += [[f"`{k.name}`", k.meaning, k.accepted, "see meaning" if k.default is None else f"`{k.default}`"]
             for k in keys]
    return markdown(["key", "meaning", "accepted", "default"], [[c.replace("|", "\\|") for c in r] for r in rows])


# ---- the command -------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", default="", help="comma-separated names (default: every registered table)")
    ap.add_argument("--smollm2-dir", type=Path, default=None,
                    help="the smollm2 table from this finished `make reproduce-smollm2` sweep folder (no new sweep)")
    ap.add_argument("--readme", type=Path, default=None,
                    help="rewrite the tables of this one file (default: README.md and docs/*.md)")
    ap.add_argument("--print", action="store_true", help="print the tables instead of writing the README")
    ap.add_argument("--list", action="store_true", help="list the registered tables and what each costs")
    ap.add_argument("--break-dir", type=Path, default=None,
                    help="the break_map table from this finished `make reproduce-break` folder (no new sweep)")
    ap.add_argument("--demo-dir", type=Path, default=None,
                    help="the demo table from these finished runs (threads1/, threads2/; no new runs)")
    ap.add_argument("--muse-dir", type=Path, default=None,
                    help="the muse table from this finished `make reproduce-muse-tiny` sweep folder (no new sweep)")
    ap.add_argument("--audit-dir", type=Path, default=None,
                    help="the audit tables from this finished `mpu-audit sweep=true seed=0` folder (no new sweep)")
    ap.add_argument("--lora-bench-dir", type=Path, default=None,
                    help="the lora_cost / lora_cancellation tables from this `scripts/lora_bench.py --out` folder")
    ap.add_argument("--lora-dir", type=Path, default=None,
                    help="the lora_quality table from this finished `make reproduce-lora` sweep folder (no new sweep)")
    ap.add_argument("--lora-smollm2-pilot-dir", type=Path, default=None,
                    help="the lora_smollm2_pilot table from these finished runs (no new runs)")
    ap.add_argument("--lora-smollm2-dir", type=Path, default=None,
                    help="the lora_quality_smollm2 tables from this finished `make reproduce-lora-smollm2` sweep "
                         "folder (no new sweep)")
    ap.add_argument("--scale-dir", type=Path, default=None,
                    help="the scale tables from this finished `python scripts/scale_1b.py` run (no new run)")
    ap.add_argument("--bench-server-dir", type=Path, default=None,
                    help="the bench_server table from this finished `scripts/bench_server.py --out` folder (no new run)")
    ap.add_argument("--audit-smollm2-dir", type=Path, default=None,
                    help="the audit_smollm2* tables from this finished `make audit-smollm2` folder (no new sweep)")
    ap.add_argument("--frontier-dir", type=Path, default=None,
                    help="the frontier table from this finished `make frontier` folder (no new runs)")
    ap.add_argument("--frontier-smollm2-dir", type=Path, default=None,
                    help="the frontier_smollm2 table from this finished `make frontier-smollm2` folder (no new runs)")
    args = ap.parse_args(argv)
    global AUDIT_SMOLLM2_DIR, FRONTIER_DIR, FRONTIER_SMOLLM2_DIR, BENCH_SERVER_DIR
    AUDIT_SMOLLM2_DIR, FRONTIER_DIR = args.audit_smollm2_dir, args.frontier_dir
    FRONTIER_SMOLLM2_DIR = args.frontier_smollm2_dir
    BENCH_SERVER_DIR = args.bench_server_dir
    global AUDIT_DIR, BREAK_DIR, DEMO_DIR, MUSE_DIR, LORA_BENCH_DIR, LORA_DIR, SCALE_DIR
    AUDIT_DIR, BREAK_DIR, DEMO_DIR, MUSE_DIR = args.audit_dir, args.break_dir, args.demo_dir, args.muse_dir
    LORA_BENCH_DIR, LORA_DIR, SCALE_DIR = args.lora_bench_dir, args.lora_dir, args.scale_dir
    if args.list:
        for t in TABLES.values():
            print(f"{t.name:<18} {t.cost}")
        return 0
    global SMOLLM2_DIR, LORA_SMOLLM2_DIR, LORA_SMOLLM2_PILOT_DIR
    SMOLLM2_DIR, LORA_SMOLLM2_DIR, LORA_SMOLLM2_PILOT_DIR = (args.smollm2_dir, args.lora_smollm2_dir,
                                                             args.lora_smollm2_pilot_dir)
    names = [n.strip() for n in args.tables.split(",") if n.strip()] or list(TABLES)
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        print(f"readme_tables: error: TABLES={unknown[0]!r} is not one of {sorted(TABLES)}", file=sys.stderr)
        return 2
    files = [args.readme] if args.readme else doc_files()
    marked = {name: f for f in files for name in marked_names(f.read_text())}
    if not args.print:
        unmarked = [n for n in names if n not in marked]
        if unmarked:
            print(f"readme_tables: error: no markers for {unmarked} in {[str(f) for f in files]}", file=sys.stderr)
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
        print(f"readme_tables: {name} done in {duration(time.perf_counter() - t0)}", flush=True)
        if args.print:
            print(built[name] + "\n")
    if built and not args.print:
        from mpu_cli.files import atomic_write_text

        for f in files:
            mine = {n: t for n, t in built.items() if marked.get(n) == f}
            if mine:
                atomic_write_text(f, replace_tables(f.read_text(), mine))
                print(f"readme_tables: rewrote {sorted(mine)} in {f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
