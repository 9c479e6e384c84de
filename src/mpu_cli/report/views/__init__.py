"""Markdown views of a finished folder, each one table with its caption: `mpu-report DIR --view NAME`.

`VIEWS` maps a view's name to what it reads and the function that renders it; scripts/readme_tables.py runs the
measuring command, then asks for the view of the folder it wrote. A view raises ValueError with one line when
the folder is not what it reads. Standard library only here (the CLI lists the views before importing pandas):
each view's module is imported when it renders.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path


@dataclass(frozen=True)
class View:
    reads: str  # the folder it reads and what it shows, for --help
    module: str  # under mpu_cli.report.views
    function: str  # function(folder) -> markdown

    def render(self, folder: Path) -> str:
        return getattr(import_module(f"{__name__}.{self.module}"), self.function)(Path(folder))


VIEWS: dict[str, View] = {
    "seeds": View("a sweep of runs: per algorithm, arm and κ the quick metrics over seeds and deg_avg vs clean",
                  "seeds", "seeds_markdown"),
    "break_map": View("a `make reproduce-break` folder: forget Prob per arm and κ, and how far each arm holds",
                      "breakmap", "break_markdown"),
    "audit": View("an `mpu-audit sweep=true` folder: each attack per κ and m", "audit", "audit_markdown"),
    "audit_all_params": View("an `mpu-audit sweep=true` folder: the attacks on all parameters, with and without "
                             "perturbing the unprotected ones", "audit", "audit_all_params_markdown"),
    "lora": View("a `make reproduce-lora` sweep: LoRA against full fine-tuning, paired by seed", "lora",
                 "lora_markdown"),
    "lora_short": View("a `make reproduce-lora` sweep: forget and retain Prob, LoRA against full, paired by seed, "
                       "with the full client's spread over seeds", "lora", "lora_short_markdown"),
    "lora_pilot": View("a folder of full and LoRA runs at several client.lora.lr_scale: each client's quick metrics "
                       "and how far its forget Prob lies from the full client's", "lora", "pilot_markdown"),
    "audit_cells": View("an `mpu-audit sweep=true` folder of any cells: each attack's error per cell", "audit",
                        "cells_markdown"),
    "audit_recovered": View("an `mpu-audit sweep=true` folder: forget / retain Prob of θ, a copy, the recovered "
                            "models and θ_r", "audit", "recovered_markdown"),
    "audit_cost": View("an `mpu-audit sweep=true` folder: each phase's time and peak memory per cell", "audit",
                       "cost_markdown"),
    "bench": View("a `python scripts/bench.py --out DIR` folder: its bench.csv", "bench", "bench_markdown"),
    "demo": View("a folder of `make demo`'s run at several thread counts (threads<N>/): forget Prob, utility, "
                 "privleak and the target's hash per count", "demo", "demo_markdown"),
    "muse": View("a `make reproduce-muse-tiny` folder: the MUSE metrics of the target, the retrained model and "
                 "GradDiff / NPO per arm", "muse", "muse_markdown"),
    "scale": View("a `python scripts/scale_1b.py --out DIR` run: the wall time of every stage and the peak memory "
                  "of every process", "scale", "scale_markdown"),
    "scale_processes": View("a `python scripts/scale_1b.py --out DIR` run: the peak memory of every process",
                            "scale", "processes_markdown"),
}
