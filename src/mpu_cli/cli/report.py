"""`mpu-report DIR [--out OUT] [--no-plots]`: summary.csv, summary.md and plots for any folder of runs;
`mpu-report DIR --view NAME`: one markdown table of a finished sweep, audit or benchmark folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mpu_cli.report.views import VIEWS  # standard library only: the views' names and what each reads


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="mpu-report",
        description="Collect the runs under DIR (a sweep, or any folder of mpu-run outputs, finished, failed "
        "or not) into summary.csv, paired.csv and summary.md: runs grouped by the settings that differ, "
        "duplicates shown once, each noised/MPU run paired with the clean run of its seed (differences "
        "with 95 % t-intervals over seeds and verdicts), and write the plots (plot_arms.png: clean / noised / "
        "MPU per algorithm; plot_degradation_vs_kappa.png with two or more κ; plot_forget_vs_utility.png).",
        epilog="examples: mpu-report outputs/sweeps/<time>   |   mpu-report outputs/runs --out /tmp/report "
        "--no-plots   |   mpu-report outputs/sweeps/<time> --view seeds. A sweep (mpu-run -m) writes the same "
        "files into its folder when it ends.",
    )
    ap.add_argument("dir", type=Path, help="folder holding run directories (searched recursively)")
    ap.add_argument("--out", type=Path, default=None, help="where to write the summary (default: DIR)")
    ap.add_argument("--no-plots", action="store_true", help="tables only")
    ap.add_argument("--view", choices=list(VIEWS), default=None,
                    help="print one markdown table of DIR instead of writing the summary: "
                    + "; ".join(f"{name}: {view.reads}" for name, view in VIEWS.items()))
    args = ap.parse_args(argv)
    if not args.dir.is_dir():
        print(f"mpu-report: error: DIR={str(args.dir)!r} is not an existing folder", file=sys.stderr)
        return 2
    if args.view:
        try:
            print(VIEWS[args.view].render(args.dir))
        except ValueError as e:
            print(f"mpu-report: error: --view {args.view}: {e}", file=sys.stderr)
            return 2
        return 0

    from mpu_cli.files import write_failure
    from mpu_cli.report.tables import write_summary

    try:
        col = write_summary(args.dir, args.out, plots=not args.no_plots)
    except OSError as e:
        line, code = write_failure(e, "the summary")
        print(f"mpu-report: error: {line}", file=sys.stderr)
        return code
    out = args.out or args.dir
    n_done = len(col.finished)
    if not len(col.table):
        print(
            f"mpu-report: error: no runs under {str(args.dir)!r} (a run folder holds .hydra/config.yaml or "
            "results.csv)",
            file=sys.stderr,
        )
        return 2
    print(
        f"{n_done} finished run(s), {len(col.failed)} failed, {len(col.unfinished)} unfinished; wrote "
        f"{out / 'summary.csv'}, {out / 'paired.csv'} and {out / 'summary.md'}"
    )
    for run, error in col.failed:
        print(f"failed: {run}: {error}")
    for run, missing in col.unfinished:
        print(f"unfinished: {run} ({missing})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
