"""`make frontier`: the privacy–utility frontier — how far from θ a client holding the public base is left, against
what the unlearning pays — on the embedded default, over 3 seeds.

    python scripts/frontier.py [--out DIR] [--runs DIR]

1. The runs (unless --runs names a finished folder): `mpu-run -m --config-name reproduce_frontier`, then
   `reproduce_frontier_common`, into DIR/runs: NPO x {clean, noised, MPU m=2, MPU m=4} x κ, and MPU with a noise
   component common to all copies (server.common_noise), x 3 seeds. deg_avg: each run against the clean run of
   its seed (the sweep report's pairing), mean over seeds with its 95 % t-interval.
2. The client's error, per setting and seed: `mpu-audit` of the same round (same seed: the same copies), b1 and
   A6 off; the client's best estimate among A1 (one copy), A2 (an aligned copy), A4 and A5 (hull point closest to
   θ_base): ‖θ̂ − θ‖ / ‖θ − θ_base‖ over the transformer blocks (1: no better than the public base).
3. DIR/frontier.{csv,md} and DIR/plot_frontier.png.
"""
from __future__ import annotations

import argparse
import logging
import math
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd

from mpu_cli.mpu.arms import arm_of
from mpu_cli.report.stats import t_interval
from mpu_cli.report.tables import collect
from mpu_cli.report.views.fmt import g, markdown

REPO = Path(__file__).resolve().parents[1]
SWEEPS = ("reproduce_frontier", "reproduce_frontier_common")
ATTACKS = ("A1", "A2", "A4", "A5")  # what a client can use as θ̂ (scored without the secrets' help)
COMMON = "server.common_noise"


def run_sweeps(runs: Path) -> None:
    mpu_run = str(Path(sys.executable).parent / "mpu-run")
    for name in SWEEPS:
        subprocess.run([mpu_run, "-m", "--config-name", name, f"hydra.sweep.dir={runs}"], check=True, cwd=REPO)


def _setting(row) -> tuple:
    common = row.get(COMMON)
    common = 0.0 if common is None or (isinstance(common, float) and math.isnan(common)) else float(common)
    return row["arm"], float(row["kappa"]), int(row["m"]), common


def client_error(setting: tuple, seed: int, out: Path) -> tuple[float, str]:
    """(the client's smallest error, the attack that reached it) for one setting and seed."""
    from mpu_cli.audit.run import audit
    from mpu_cli.cli.audit import compose_config

    arm, kappa, m, common = setting
    cfg = compose_config(["algorithm=npo", f"arm={arm}", f"kappa={kappa}", f"m={m}", f"{COMMON}={common}",
                          f"seed={seed}", "eval.metrics=quick"])
    folder = out / f"{arm}_k{kappa:g}_m{m}_c{common:g}_s{seed}"
    report = audit(cfg, folder, b1=False, fit=False)
    errors = {a: report["attacks"][a]["rel_err_protected"] for a in ATTACKS if a in report["attacks"]}
    best = min(errors, key=errors.get)
    return errors[best], best


def frontier(runs: Path, out: Path) -> pd.DataFrame:
    col = collect(runs)
    used = col.used
    rows = []
    for _, r in used[used.arm.map(lambda a: arm_of(a).noisy)].iterrows():
        setting = _setting(r)
        err, attack = client_error(setting, int(r["seed"]), out / "audit")
        rows.append({"arm": setting[0], "kappa": setting[1], "m": setting[2], "common_noise": setting[3],
                     "seed": int(r["seed"]), "client_error": err, "attack": attack,
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


def frontier_markdown(table: pd.DataFrame) -> str:
    rows = []
    for _, r in table.sort_values(["arm", "common_noise", "m", "kappa"]).iterrows():
        ci = "" if math.isnan(r.deg_low) else f" [{100 * r.deg_low:+.1f}, {100 * r.deg_high:+.1f}]"
        rows.append([series(r), g(r.kappa), g(r.common_noise) if r.common_noise else "–", g(r.uncancelled, 2),
                     f"{g(r.client_error, 3)} ± {g(r.client_error_sd, 2)} ({r.attack})",
                     f"{100 * r.deg_avg:+.1f} %{ci}", g(r.forget_prob, 3), g(r.retain_prob, 3)])
    f, rt, n = table.attrs.get("clean", (math.nan, math.nan, 0))
    return (f"NPO on the embedded default, {int(table.seeds.max())} seeds (`make frontier`). Client error = "
            "‖θ̂ − θ‖ / ‖θ − θ_base‖ over the transformer blocks of the best of A1/A2/A4/A5 (1 = no better than the "
            "public base; mean ± sd over seeds); uncancelled noise = the noise the aggregate keeps, in units of "
            "RMS(θ − θ_base) (noised: κ; MPU: γκ with server.common_noise = γ; plain MPU cancels all of it); deg_avg "
            f"against clean, paired by seed [95 % CI]. Clean: forget Prob {g(f, 3)}, retain Prob {g(rt, 3)} "
            f"({n} runs).\n\n"
            + markdown(["arm", "κ", "common γ", "uncancelled noise", "client error (attack)", "deg_avg vs clean",
                        "forget Prob", "retain Prob"], rows))


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    markers = {"noised": "s", "MPU m=2": "o", "MPU m=4": "^", "MPU m=2 + common noise": "D"}
    for name, grp in table.assign(series=table.apply(series, axis=1)).groupby("series", sort=False):
        grp = grp.sort_values("client_error")
        ax.errorbar(grp.client_error, 100 * grp.deg_avg, xerr=grp.client_error_sd,
                    yerr=[100 * (grp.deg_avg - grp.deg_low).fillna(0), 100 * (grp.deg_high - grp.deg_avg).fillna(0)],
                    marker=markers.get(name, "o"), capsize=2, label=name)
        for _, r in grp.iterrows():
            label = f"κ={g(r.kappa)}" + (f",γ={g(r.common_noise)}" if r.common_noise else "")
            ax.annotate(label, (r.client_error, 100 * r.deg_avg), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.axvline(1.0, color="grey", ls="--", lw=0.8)
    ax.text(1.02, ax.get_ylim()[1] * 0.9, "no better than\nthe public base", fontsize=7, color="grey")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("client's error ‖θ̂ − θ‖ / ‖θ − θ_base‖ (log; higher = θ better hidden)")
    ax.set_ylabel("deg_avg vs clean (%; higher = unlearning worse)")
    ax.set_title("Privacy–utility frontier: NPO, embedded default, mean over seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv: list[str] | None = None) -> Path:
    logging.basicConfig(level=logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="output folder (default outputs/frontier/<time>)")
    ap.add_argument("--runs", type=Path, default=None, help="a finished folder of the two sweeps (else run them)")
    args = ap.parse_args(argv)
    out = args.out or REPO / "outputs" / "frontier" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    runs = args.runs or out / "runs"
    if args.runs is None:
        run_sweeps(runs)
    table = frontier(runs, out)
    (out / "frontier.md").write_text(frontier_markdown(table) + "\n")
    plot(table, out / "plot_frontier.png")
    print(f"frontier: wrote {out / 'frontier.md'} and {out / 'plot_frontier.png'}")
    return out


if __name__ == "__main__":
    main()
