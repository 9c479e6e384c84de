"""LoRA clients against full fine-tuning (`make reproduce-lora`): per algorithm, arm and κ, each quick metric's mean
over seeds with the full client and with the LoRA client, the LoRA − full difference paired by seed with its 95 %
t-interval, and each client's deg_avg against its own clean run of the same seed. The short view keeps forget and
retain Prob and adds the full client's spread over seeds; the pilot view compares the adapter at several
client.lora.lr_scale with the full client (which scale forgets about as much)."""

from __future__ import annotations

import math
from pathlib import Path

from mpu_cli.mpu.arms import arm_of, order
from mpu_cli.report.stats import t_interval
from mpu_cli.report.tables import collect
from mpu_cli.report.views.fmt import g, markdown

METRICS = ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "retain_Q_A_Prob", "retain_Q_A_ROUGE")
SHORT_METRICS = ("forget_Q_A_Prob", "retain_Q_A_Prob")
ENABLED, RANK, LR_SCALE = "client.lora.enabled", "client.lora.rank", "client.lora.lr_scale"


def _on(value) -> bool:
    return str(value).lower() == "true"


def _difference(values) -> str:
    iv = t_interval(values)
    if iv.n == 0:
        return "–"
    return f"{iv.mean:+.3f}" if iv.n < 2 else f"{iv.mean:+.3f} [{iv.low:+.3f}, {iv.high:+.3f}]"


def _finished(root: Path):
    """The finished runs under `root` and which of them ran LoRA; ValueError unless there are both kinds."""
    used = collect(root).used
    if not len(used) or ENABLED not in used or used[ENABLED].map(_on).nunique() < 2:
        raise ValueError(f"{root}: no finished runs both with and without client.lora.enabled (make reproduce-lora)")
    return used, used[ENABLED].map(_on)


def _table(root: Path, metrics: tuple[str, ...], spread: bool) -> tuple[int, object, list[str], list[list[str]]]:
    """(runs, rank, header, rows) of the finished runs under `root`; with `spread` each metric's cell also gives the
    full client's standard deviation over seeds (its noise floor). ValueError unless it holds runs with and without
    LoRA."""
    used, lora = _finished(root)
    rank = used.loc[lora, RANK].iloc[0] if RANK in used else "?"
    rows = []
    for (algorithm, arm, kappa), group in used.groupby(["algorithm", "arm", "kappa"], sort=False, dropna=False):
        full, adapter = group[~lora[group.index]], group[lora[group.index]]
        pairs = full.merge(adapter, on="seed", suffixes=("_full", "_lora"))
        row = [algorithm, arm, g(float(kappa)) if arm_of(arm).noisy else "–", str(len(pairs))]
        for m in metrics:
            sd = f"; full sd {full[m].std():.3f}" if spread and len(full) > 1 else ""
            row.append(f"{g(full[m].mean())} → {g(adapter[m].mean())}; "
                       f"{_difference(pairs[f'{m}_lora'] - pairs[f'{m}_full'])}{sd}")
        if "deg_avg" in group and arm_of(arm).noisy:
            row.append(" → ".join(f"{100 * d.mean():+.1f} %" if not math.isnan(d.mean()) else "–"
                                  for d in (full["deg_avg"], adapter["deg_avg"])))
        else:
            row.append("–")
        rows.append(row)
    rows.sort(key=lambda r: (r[0], float(r[2]) if r[2] != "–" else -1.0, order(r[1])))
    cell = "full → LoRA; paired Δ [95 % CI]" + ("; full client's sd over seeds" if spread else "")
    header = ["algorithm", "arm", "κ", "seed pairs", *(f"{m}: {cell}" for m in metrics),
              "deg_avg vs own clean: full → LoRA"]
    return len(used), rank, header, rows


def lora_markdown(root: Path) -> str:
    """The table of the finished runs under `root`; ValueError unless it holds runs with and without LoRA."""
    n, rank, header, rows = _table(root, METRICS, spread=False)
    return (f"{n} runs; LoRA r = {rank}; per metric the mean over seeds with the full client → with the LoRA "
            "client, then the LoRA − full difference paired by seed [95 % t-interval]; deg_avg over forget Prob and "
            "ROUGE (quick evaluation) against the clean run of the same seed and client, worse > 0.\n\n"
            + markdown(header, rows))


def lora_short_markdown(root: Path) -> str:
    """Forget and retain Prob only, each with the full client's spread over seeds; ValueError as lora_markdown."""
    n, rank, header, rows = _table(root, SHORT_METRICS, spread=True)
    return (f"{n} runs; LoRA r = {rank}; the mean over seeds with the full client → with the LoRA client, the "
            "LoRA − full difference paired by seed [95 % t-interval] and the full client's standard deviation "
            "over seeds (a difference smaller than it is no difference).\n\n" + markdown(header, rows))


def pilot_markdown(root: Path) -> str:
    """The adapter's learning rate against full fine-tuning (one arm): each quick metric's mean over the runs of the
    full client and of the LoRA client at each client.lora.lr_scale, and how far the LoRA client's forget Prob lies
    from the full client's; the closest is marked (matched forgetting). ValueError as lora_markdown."""
    used, lora = _finished(root)
    full = used[~lora]
    target = full["forget_Q_A_Prob"].mean()
    rows, gaps = [["full", "–", str(len(full)), *(g(full[m].mean()) for m in METRICS), "–"]], []
    for scale, group in used[lora].groupby(LR_SCALE, sort=True):
        gaps.append(group["forget_Q_A_Prob"].mean() - target)
        rows.append([f"LoRA r = {group[RANK].iloc[0] if RANK in group else '?'}", g(float(scale)), str(len(group)),
                     *(g(group[m].mean()) for m in METRICS), f"{gaps[-1]:+.3f}"])
    closest = 1 + min(range(len(gaps)), key=lambda i: abs(gaps[i]))
    rows[closest][-1] += " (closest)"
    header = ["client", "lr_scale", "runs", *METRICS, "forget Prob − full's"]
    return (f"{len(used)} runs; per client the mean over its runs; lr_scale: the adapter trains at client.lr × this; "
            "the last column: its forget Prob minus the full client's (the closest to 0 marked).\n\n" + markdown(header, rows))
