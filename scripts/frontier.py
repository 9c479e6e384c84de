"""`make frontier` / `make frontier-smollm2`: the privacy–utility frontier — how far from θ a client holding the
public base is left, against what the unlearning pays — on the embedded default (3 seeds) or SmolLM2-135M (1 seed).

    python scripts/frontier.py [--model embedded|smollm2] [--out DIR] [--runs DIR] [--seeds 0,1]
                               [--variants clean,mpu_k0.1,...] [--common-noise 10,20] [--set KEY=VALUE ...]

1. The runs (unless --runs names a finished folder): `mpu-run -m --config-name <preset's grid>`, then its
   common-noise grid, into DIR/runs: NPO x {clean, noised, MPU m=2, MPU m=4} x κ, and MPU with a noise component
   common to all copies (server.common_noise), x the seeds. deg_avg: each run against the clean run of its seed
   (the sweep report's pairing), mean over seeds with its 95 % t-interval.
2. The client's error, per setting and seed: `mpu-audit` of the same round (the run's own configuration and
   seed: the same copies), b1 and A6 off, each in a process of its own (an audit already in DIR/audit is
   reused); the client's best estimate among A1 (one copy), A2 (an aligned copy), A4 and A5 (hull point closest
   to θ_base): ‖θ̂ − θ‖ / ‖θ − θ_base‖ over the transformer blocks (1: no better than the public base).
3. DIR/frontier.{csv,md} and DIR/plot_frontier.png.

--set KEY=VALUE overrides every run and every audit alike (e.g. model.target=DIR, a fine-tuned target to use
instead of preparing one); --variants / --common-noise / --seeds cut the grids.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from mpu_cli.mpu.arms import arm_of
from mpu_cli.report.stats import t_interval
from mpu_cli.report.tables import collect
from mpu_cli.report.views.fmt import g, markdown

REPO = Path(__file__).resolve().parents[1]
ATTACKS = ("A1", "A2", "A4", "A5")  # what a client can use as θ̂ (scored without the secrets' help)
COMMON = "server.common_noise"


@dataclass(frozen=True)
class Preset:
    """One model's frontier: its two grids (conf/<name>.yaml; the first is also what every audit composes, so the
    audit's copies and client are the run's) and how the caption names it."""

    grid: str          # the main grid: clean, noised, MPU m=2 / m=4 x κ
    common_grid: str   # MPU with common noise, into the same folder
    title: str         # the model and schedule, for the caption and the plot
    make: str          # the make target that runs it


PRESETS = {
    "embedded": Preset("reproduce_frontier", "reproduce_frontier_common", "NPO on the embedded default",
                       "make frontier"),
    "smollm2": Preset("reproduce_frontier_smollm2", "reproduce_frontier_smollm2_common",
                      "NPO on SmolLM2-135M (data subset, forget05; client: 1 fp32 epoch, gradient checkpointing)",
                      "make frontier-smollm2"),
}


def sweep_commands(preset: Preset, runs: Path, sets: list[str], seeds: str | None = None,
                   variants: str | None = None, common: str | None = None) -> list[list[str]]:
    """The two mpu-run sweeps: the preset's grids, cut by the given seeds / variants / common-noise scales."""
    mpu_run = str(Path(sys.executable).parent / "mpu-run")
    cut = [f"seed={seeds}"] if seeds else []
    return [[mpu_run, "-m", "--config-name", name, *sets, *cut, *extra, f"hydra.sweep.dir={runs}"]
            for name, extra in ((preset.grid, [f"variant={variants}"] if variants else []),
                                (preset.common_grid, [f"{COMMON}={common}"] if common else []))]


def run_sweeps(commands: list[list[str]]) -> None:
    for cmd in commands:
        subprocess.run(cmd, check=True, cwd=REPO)


def _setting(row) -> tuple:
    common = row.get(COMMON)
    common = 0.0 if common is None or (isinstance(common, float) and math.isnan(common)) else float(common)
    return row["arm"], float(row["kappa"]), int(row["m"]), common


def audit_config(preset: Preset, setting: tuple, seed: int, sets: list[str]):
    """The configuration the audit of one setting and seed composes: the preset's grid (the run's configuration,
    its client schedule included) with the setting, the seed and the --set overrides."""
    from mpu_cli.cli.audit import compose_config

    arm, kappa, m, common = setting
    return compose_config([*sets, f"arm={arm}", f"kappa={kappa}", f"m={m}", f"{COMMON}={common}", f"seed={seed}"],
                          preset.grid)


def client_error(preset: Preset, setting: tuple, seed: int, out: Path, sets: list[str]) -> tuple[float, str]:
    """(the client's smallest error, the attack that reached it) for one setting and seed."""
    from mpu_cli.cli.audit import audit_cell

    arm, kappa, m, common = setting
    folder = out / f"{arm}_k{kappa:g}_m{m}_c{common:g}_s{seed}"
    done = folder / "privacy_report.json"
    report = (json.loads(done.read_text()) if done.is_file()
              else audit_cell(audit_config(preset, setting, seed, sets), folder, {"b1": False, "fit": False}))
    errors = {a: report["attacks"][a]["rel_err_protected"] for a in ATTACKS if a in report["attacks"]}
    best = min(errors, key=errors.get)
    return errors[best], best


def run_seed(recorded, cache_dir, candidates) -> int:
    """The seed of a run: recorded plainly, or as the tag of one of `candidates` (tags are keyed under the cache
    folder, which the operator holds)."""
    from mpu_cli.run import seed_tag

    if not seed_tag.is_tag(recorded):
        return int(recorded)
    found = [s for s in candidates if seed_tag.tag(s, cache_dir) == recorded]
    if not found:
        raise ValueError(f"the runs' seed tag {recorded} is the tag of none of the seeds {min(candidates)}.."
                         f"{max(candidates)} under {cache_dir}; accepted: runs of those seeds (--seeds)")
    return found[0]


def frontier(preset: Preset, runs: Path, out: Path, sets: list[str], seeds: list[int] | None = None) -> pd.DataFrame:
    """seeds: the seeds the runs may have (default 0..99), to read their tags."""
    from mpu_cli.cli.audit import compose_config

    cache_dir = compose_config(sets, preset.grid).prepare.cache_dir
    col = collect(runs)
    used = col.used
    rows = []
    for _, r in used[used.arm.map(lambda a: arm_of(a).noisy)].iterrows():
        setting, seed = _setting(r), run_seed(r["seed"], cache_dir, seeds or range(100))
        err, attack = client_error(preset, setting, seed, out / "audit", sets)
        rows.append({"arm": setting[0], "kappa": setting[1], "m": setting[2], "common_noise": setting[3],
                     "seed": seed, "client_error": err, "attack": attack,
                     "deg_avg": float(r["deg_avg"]), "forget_prob": float(r["forget_Q_A_Prob"]),
                     "retain_prob": float(r["retain_Q_A_Prob"])})
    per_seed = pd.DataFrame(rows)
    per_seed.to_csv(out / "frontier_seeds.csv", index=False)
    clean = used[~used.arm.map(lambda a: arm_of(a).noisy)]
    summary = []
    for key, grp in per_seed.groupby(["arm", "kappa", "m", "common_noise"], sort=False):
        deg, err = t_interval(grp.deg_avg.tolist()), t_interval(grp.client_error.tolist())
        summary.append({"arm": key[0], "kappa": key[1], "m": key[2], "common_noise": key[3],
                        "uncancelled": key[1] * (key[3] if arm_of(key[0]).zero_sum else 1.0),
                        "seeds": len(grp), "client_error": err.mean, "client_error_sd": err.sd,
                        "attack": grp.attack.mode().iloc[0], "deg_avg": deg.mean, "deg_low": deg.low,
                        "deg_high": deg.high, "forget_prob": grp.forget_prob.mean(),
                        "retain_prob": grp.retain_prob.mean()})
    table = pd.DataFrame(summary)
    table.attrs["clean"] = (clean.forget_Q_A_Prob.mean(), clean.retain_Q_A_Prob.mean(), len(clean))
    table.to_csv(out / "frontier.csv", index=False)
    return table


def series(r) -> str:
    if not arm_of(r["arm"]).zero_sum:
        return "noised"
    return f"MPU m={int(r['m'])}" + (" + common noise" if r["common_noise"] else "")


def frontier_markdown(table: pd.DataFrame, preset: Preset, note: str = "") -> str:
    """The frontier table with its caption; `note`: what of the preset's grid was left out, and why."""
    several = int(table.seeds.max()) > 1
    rows = []
    for _, r in table.sort_values(["arm", "common_noise", "m", "kappa"]).iterrows():
        ci = "" if math.isnan(r.deg_low) else f" [{100 * r.deg_low:+.1f}, {100 * r.deg_high:+.1f}]"
        rows.append([series(r), g(r.kappa), g(r.common_noise) if r.common_noise else "–", g(r.uncancelled, 2),
                     f"{g(r.client_error, 3)}{f' ± {g(r.client_error_sd, 2)}' if several else ''} ({r.attack})",
                     f"{100 * r.deg_avg:+.1f} %{ci}", g(r.forget_prob, 3), g(r.retain_prob, 3)])
    f, rt, n = table.attrs.get("clean", (math.nan, math.nan, 0))
    seeds = f"{int(table.seeds.max())} seeds" if several else "1 seed (seed 0)"
    return (f"{preset.title}, {seeds} (`{preset.make}`). Client error = "
            "‖θ̂ − θ‖ / ‖θ − θ_base‖ over the transformer blocks of the best of A1/A2/A4/A5 (1 = no better than the "
            f"public base{'; mean ± sd over seeds' if several else ''}); uncancelled noise = the noise the aggregate "
            "keeps, in units of RMS(θ − θ_base) (noised: κ; MPU: γκ with server.common_noise = γ; plain MPU cancels "
            "all of it); deg_avg against clean, "
            f"{'paired by seed [95 % CI]' if several else 'the same seed'}. Clean: forget Prob {g(f, 3)}, retain "
            f"Prob {g(rt, 3)} ({n} run{'s' if n != 1 else ''}).{f' {note}' if note else ''}\n\n"
            + markdown(["arm", "κ", "common γ", "uncancelled noise", "client error (attack)", "deg_avg vs clean",
                        "forget Prob", "retain Prob"], rows))


def plot(table: pd.DataFrame, path: Path, preset: Preset) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    markers = {"noised": "s", "MPU m=2": "o", "MPU m=4": "^", "MPU m=2 + common noise": "D"}
    for name, grp in table.assign(series=table.apply(series, axis=1)).groupby("series", sort=False):
        grp = grp.sort_values("client_error")
        ax.errorbar(grp.client_error, 100 * grp.deg_avg, xerr=grp.client_error_sd.fillna(0),
                    yerr=[100 * (grp.deg_avg - grp.deg_low).fillna(0), 100 * (grp.deg_high - grp.deg_avg).fillna(0)],
                    marker=markers.get(name, "o"), capsize=2, label=name)
        for _, r in grp.iterrows():
            label = f"κ={g(r.kappa)}" + (f",γ={g(r.common_noise)}" if r.common_noise else "")
            ax.annotate(label, (r.client_error, 100 * r.deg_avg), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.axvline(1.0, color="grey", ls="--", lw=0.8)
    ax.text(1.02, 0.97, "no better than\nthe public base", fontsize=7, color="grey", va="top",
            transform=ax.get_xaxis_transform())  # x in data, y in axes units: inside the plot whatever the range
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("client's error ‖θ̂ − θ‖ / ‖θ − θ_base‖ (log; higher = θ better hidden)")
    ax.set_ylabel("deg_avg vs clean (%; higher = unlearning worse)")
    seeds = int(table.seeds.max())
    ax.set_title(f"Privacy–utility frontier: {preset.title.split(' (')[0]}, "
                 + ("mean over seeds" if seeds > 1 else "one seed"), fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def left_out(preset: Preset, variants: str | None, common: str | None) -> str:
    """The caption's note on the settings of the preset's grids that --variants / --common-noise cut away."""
    from omegaconf import OmegaConf

    def grid(name: str, key: str) -> list[str]:
        params = OmegaConf.load(REPO / "conf" / f"{name}.yaml").hydra.sweeper.params
        return [v.strip() for v in str(params[key]).split(",") if v.strip()]

    dropped = [v for v in grid(preset.grid, "variant") if variants and v not in variants.split(",")]
    with_common = ",".join(grid(preset.common_grid, "variant"))
    dropped += [f"{with_common} + γ={v}" for v in grid(preset.common_grid, COMMON)
                if common and v not in common.split(",")]
    return f"Not run (to fit the time on one core): {', '.join(dropped)}." if dropped else ""


def main(argv: list[str] | None = None) -> Path:
    logging.basicConfig(level=logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(PRESETS), default="embedded", help="which frontier (default embedded)")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default outputs/frontier/<time>)")
    ap.add_argument("--runs", type=Path, default=None, help="a finished folder of the two sweeps (else run them)")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds instead of the grids' own")
    ap.add_argument("--variants", default=None, help="comma-separated variants instead of the main grid's")
    ap.add_argument("--common-noise", default=None, help="comma-separated server.common_noise scales instead of "
                    "the common-noise grid's")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an override for every run and audit (repeatable), e.g. model.target=DIR")
    args = ap.parse_args(argv)
    bad = [s for s in args.set if "=" not in s]
    if bad:
        ap.error(f"--set {bad[0]!r} is not KEY=VALUE")
    preset = PRESETS[args.model]
    out = args.out or REPO / "outputs" / "frontier" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    runs = args.runs or out / "runs"
    if args.runs is None:
        run_sweeps(sweep_commands(preset, runs, args.set, args.seeds, args.variants, args.common_noise))
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else None
    table = frontier(preset, runs, out, args.set, seeds)
    note = left_out(preset, args.variants, args.common_noise)
    (out / "frontier.md").write_text(frontier_markdown(table, preset, note) + "\n")
    plot(table, out / "plot_frontier.png", preset)
    print(f"frontier: wrote {out / 'frontier.md'} and {out / 'plot_frontier.png'}")
    return out


if __name__ == "__main__":
    main()
