"""LoRA clients against full fine-tuning (`make reproduce-lora`): per algorithm, arm and κ, each quick metric's mean
over seeds with the full client and with the LoRA client, the LoRA − full difference paired by seed with its 95 %
t-interval, and each client's deg_avg against its own clean run of the same seed."""

from __future__ import annotations

import math
from pathlib import Path

from mpu_cli.mpu.arms import arm_of, order
from mpu_cli.report.stats import t_interval
from mpu_cli.report.tables import collect
from mpu_cli.report.views.fmt import g, markdown

METRICS = ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "retain_Q_A_Prob", "retain_Q_A_ROUGE")
ENABLED, RANK = "client.lora.enabled", "client.lora.rank"


def _on(value) -> bool:
    return str(value).lower() == "true"


def _difference(values) -> str:
    iv = t_interval(values)
    if iv.n == 0:
        return "–"
    return f"{iv.mean:+.3f}" if iv.n < 2 else f"{iv.mean:+.3f} [{iv.low:+.3f}, {iv.high:+.3f}]"


def lora_markdown(root: Path) -> str:
    """The table of the finished runs under `root`; ValueError unless it holds runs with and without LoRA."""
    used = collect(root).used
    if not len(used) or ENABLED not in used or used[ENABLED].map(_on).nunique() < 2:
        raise ValueError(f"{root}: no finished runs both with and without client.lora.enabled (make reproduce-lora)")
    lora = used[ENABLED].map(_on)
    rank = used.loc[lora, RANK].iloc[0] if RANK in used else "?"
    rows = []
    for (algorithm, arm, kappa), group in used.groupby(["algorithm", "arm", "kappa"], sort=False, dropna=False):
        full, adapter = group[~lora[group.index]], group[lora[group.index]]
        pairs = full.merge(adapter, on="seed", suffixes=("_full", "_lora"))
        row = [algorithm, arm, g(float(kappa)) if arm_of(arm).noisy else "–", str(len(pairs))]
        for m in METRICS:
            row.append(f"{g(full[m].mean())} → {g(adapter[m].mean())}; "
                       f"{_difference(pairs[f'{m}_lora'] - pairs[f'{m}_full'])}")
        if "deg_avg" in group and arm_of(arm).noisy:
            row.append(" → ".join(f"{100 * d.mean():+.1f} %" if not math.isnan(d.mean()) else "–"
                                  for d in (full["deg_avg"], adapter["deg_avg"])))
        else:
            row.append("–")
        rows.append(row)
    rows.sort(key=lambda r: (r[0], float(r[2]) if r[2] != "–" else -1.0, order(r[1])))
    header = ["algorithm", "arm", "κ", "seed pairs", *(f"{m}: full → LoRA; paired Δ [95 % CI]" for m in METRICS),
              "deg_avg vs own clean: full → LoRA"]
    return (f"{len(used)} runs; LoRA r = {rank}; per metric the mean over seeds with the full client → with the LoRA "
            "client, then the LoRA − full difference paired by seed [95 % t-interval]; deg_avg over forget Prob and "
            "ROUGE (quick evaluation) against the clean run of the same seed and client, worse > 0.\n\n"
            + markdown(header, rows))
