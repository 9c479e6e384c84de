"""One audit: build the server from the prepared target/base, publish a round, run the attacks, score them.

The three roles are kept apart in `audit()`:
  1. server   — MPUServer(θ, secrets); publishes copies.
  2. attacks  — client_attacks(ClientView(copies, base, layout)) and, after a real round of unlearning,
                B1 from (θ_{r-1}, θ_r, candidate texts). No secrets are passed to either.
  3. scorer   — Scorer(θ, base, secrets): ground truth, used only to score.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from mpu_cli.files import atomic_write_json, atomic_write_text
from mpu_cli.mpu.arms import arm_of
from mpu_cli.mpu.build import build_server, load_base
from mpu_cli.mpu.server import MPUServer
from mpu_cli.mpu.settings import ServerConfig
from mpu_cli.run import seed_tag
from mpu_cli.run.rounds import InProcessRounds, drive
from mpu_cli.run.settings import chat_format, client_config

from .attacks import ClientView, b1_rank_forget_items, client_attacks, item_losses, unique_names
from .score import Scorer, score_client_attacks

log = logging.getLogger(__name__)

DESCRIPTIONS = {
    "base": "take the public base θ_base as θ (reference: 1.0 by definition)",
    "A0": "tensors equal in every copy are published exactly (embeddings, LM head, final norm)",
    "A1": "take one published copy as θ (mean over copies)",
    "A2": "align each copy to θ_base: MLP permutation by assignment, RoPE-plane angles by 2-D Procrustes",
    "A3": "align copies 2..m to the aligned copy 1 (copy-to-copy)",
    "A4": "align (A3), then average the copies",
    "A5": "align (A3), then the point of the copies' affine hull closest to θ_base (α unknown)",
    "oracle": "WITH the secrets: Σ w_k T_k⁻¹(copy_k) (harness check; must be round-off)",
    "B1": "server ranks forget items among retain + holdout items by loss increase θ_{r-1} → θ_r",
}


def _clean(obj):
    """JSON-safe: floats rounded to 6 significant digits, NaN -> None."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return None if not math.isfinite(f) else float(f"{f:.6g}")
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def audit(cfg, out: Path, b1: bool = True) -> dict:
    from mpu_cli.models.io import load_model, resolve_dtype
    from mpu_cli.models.prepare import prepare_models

    t0 = time.perf_counter()
    out = Path(out)
    model_cfg = OmegaConf.merge(cfg.model, {"retain": None})  # the audit needs no retain model
    prepared = prepare_models(model_cfg, cfg.data, cfg.prepare)
    if not prepared.base:
        raise ValueError("the audit needs a public base model (model.base)")
    dtype = resolve_dtype(cfg.model.dtype)
    target = load_model(prepared.target, dtype)
    base = dict(load_base(prepared.base, dtype))  # the attacks work on whole models in memory

    # 1. server ------------------------------------------------------------------------------------------------
    server = build_server(target, ServerConfig.from_config(cfg), base=base)
    layout = server.layout
    copies = server.publish()

    # 2. client-side attacks: copies, public base, public architecture — nothing else -------------------------
    t1 = time.perf_counter()
    estimates = client_attacks(ClientView(copies=copies, base=base, layout=layout),
                               align_copies=arm_of(cfg.arm).reparameterized)
    t_attacks = time.perf_counter() - t1

    # 3. scorer: ground truth (θ_{r-1} and the round's secrets) ----------------------------------------------
    scorer = Scorer(server.theta, base, server.private_state(), layout)
    attacks = score_client_attacks(estimates, scorer, copies, server.exposed_fraction())
    del estimates

    utility = {}
    if b1:
        b1_result, utility = _server_side_round(cfg, prepared, target, server, copies)
        attacks["B1"] = b1_result
    names = unique_names(server.theta)
    n_protected = scorer.numel(scorer.protected)
    report = _clean({
        "config": {"model": cfg.model.name, "data": cfg.data.name, "split": cfg.data.split, "arm": cfg.arm,
                   "kappa": cfg.kappa, "m": server.n_copies,
                   "seed": seed_tag.tag(cfg.seed, cfg.prepare.cache_dir),  # readable: the tag, not the seed
                   "perturb_unprotected": bool(cfg.server.perturb_unprotected),
                   "alpha_schedule": cfg.server.alpha_schedule, "algorithm": cfg.algorithm.name,
                   "client_epochs": cfg.client.epochs, "client_lr": cfg.client.lr},
        "params": {"total": scorer.numel(names), "protected": n_protected,
                   "unprotected": scorer.numel(names) - n_protected},
        "attacks": attacks,
        "utility": utility,
        "descriptions": DESCRIPTIONS,
        "time_s": {"attacks": t_attacks, "total": time.perf_counter() - t0},
    })
    atomic_write_json(out / "privacy_report.json", report)
    atomic_write_text(out / "privacy_report.md", report_markdown(report))
    log.info("audit written to %s", out)
    return report


def _server_side_round(cfg, prepared, target, server: MPUServer, copies: list[dict]) -> tuple[dict, dict]:
    """One real round: the client unlearns every copy; the server aggregates, then mounts B1."""
    from mpu_cli.data.formatting import pad_id
    from mpu_cli.data.tofu import load_split, split_names
    from mpu_cli.evals import benchmarks
    from mpu_cli.models.io import load_state_into, load_tokenizer
    from mpu_cli.unlearn.algorithms import build_algorithm
    from mpu_cli.unlearn.client import unlearn_copy

    tokenizer = load_tokenizer(prepared.tokenizer)
    fmt, pad = chat_format(cfg.model), pad_id(tokenizer)
    algorithm = build_algorithm(cfg.algorithm.name, OmegaConf.to_container(cfg.algorithm.params, resolve=True))

    # client: its own data, the published copies (the model object's weights are overwritten by each copy)
    client_data = benchmarks.of(cfg.data).client_data(tokenizer, fmt, cfg.data, algorithm)

    def unlearn_fn(r: int, k: int, published: dict) -> dict:
        return unlearn_copy(target, published, algorithm, client_data, client_config(cfg, r), pad,
                            desc=f"audit copy {k + 1}/{len(copies)}")

    # server: θ_{r-1} (snapshot: aggregate updates θ in place), then the published round, unlearned and aggregated
    theta_prev = {n: t.clone() for n, t in server.theta.items()}
    theta_next, _ = drive(InProcessRounds(server, unlearn_fn), server.round)
    names = split_names(cfg.data.split)
    encode = lambda rows: [_encode(tokenizer, r, fmt) for r in rows]
    pool = {"forget": encode(load_split(cfg.data.source, names["forget"])),
            "retain": encode(load_split(cfg.data.source, names["retain"])),
            "holdout": encode(load_split(cfg.data.source, names["holdout"]))}
    bs = cfg.eval.batch_size

    def losses(state) -> dict:
        load_state_into(target, state)
        target.eval()
        return {g: item_losses(target, ex, pad, bs) for g, ex in pool.items()}

    before, after, copy1 = losses(theta_prev), losses(theta_next), losses(copies[0])
    b1 = b1_rank_forget_items(before, after, positive="forget")

    def probs(ls: dict) -> dict:
        return {f"{g}_prob": float(np.mean(np.exp(-np.asarray(v)))) for g, v in ls.items()}

    utility = {"theta_prev": probs(before), "copy_1": probs(copy1), "theta_next": probs(after)}
    return b1, utility


def _encode(tokenizer, row: dict, fmt) -> dict:
    from mpu_cli.data.formatting import encode_qa

    return encode_qa(tokenizer, row["question"], row["answer"], fmt)


# ---- markdown / sweep tables ---------------------------------------------------------------------------------

def _f(x, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"
    return str(x)


def report_markdown(report: dict) -> str:
    c, a = report["config"], report["attacks"]
    lines = [
        (f"# Privacy audit — model={c['model']} arm={c['arm']} κ={c['kappa']} m={c['m']} seed={c['seed']} "
        f"perturb_unprotected={c['perturb_unprotected']}"),
        "",
        (f"Parameters: {report['params']['total']:,} ({report['params']['protected']:,} in transformer blocks "
        "= protected)."),
        ("Relative error = ‖θ̂ − θ‖ / ‖θ − θ_base‖ (1.0 = no better than the public base; 0 = θ exactly). "
        "'mod T' = after the best function-preserving reparameterization (the attacker's residual gauge "
        "offset does not change the model's function)."),
        "",
        "| attack | what it does | rel. err protected | rel. err all | mod T protected | mod T all | other |",
        "|---|---|---|---|---|---|---|",
    ]
    a0 = a["A0"]
    lines.append(f"| A0 | {DESCRIPTIONS['A0']} | – | – | – | – | exposed fraction {_f(a0['exposed_fraction'])} "
                 f"(true exact fraction {_f(a0['exact_fraction_true'])}) |")
    for key in ("base", "A1", "A2", "A3", "A4", "A5", "oracle"):
        if key not in a:
            continue
        r = a[key]
        other = []
        if "perm_accuracy" in r:
            other.append(f"perm acc {_f(r['perm_accuracy'])}, angle err mean {_f(r['angle_err_mean_rad'])} rad "
                         f"(max {_f(r['angle_err_max_rad'])})")
        if r.get("weights_max_abs_err") is not None:
            other.append(f"hull weights {[_f(w, 3) for w in r['hull_weights']]} "
                         f"(max err vs harmonic {_f(r['weights_max_abs_err'])})")
        lines.append(f"| {key} | {DESCRIPTIONS[key]} | {_f(r['rel_err_protected'])} | {_f(r['rel_err_all'])} | "
                     f"{_f(r.get('rel_err_protected_mod_T'))} | {_f(r.get('rel_err_all_mod_T'))} | "
                     f"{'; '.join(other)} |")
    if "B1" in a:
        b = a["B1"]
        extra = ", ".join(f"{k} {_f(v)}" for k, v in b.items() if k.startswith("auc_vs"))
        lines.append(f"| B1 | {DESCRIPTIONS['B1']} | – | – | – | – | AUC {_f(b['auc'])} ({extra}; n={b['n']}) |")
    if report.get("utility"):
        lines += ["", ("Utility (mean answer probability on the candidate items; algorithm "
                  f"{c['algorithm']}, {c['client_epochs']} epochs, lr {c['client_lr']}):"), "",
                  "| model | " + " | ".join(report["utility"]["theta_prev"]) + " |",
                  "|---|" + "---|" * len(report["utility"]["theta_prev"])]
        for name, u in report["utility"].items():
            lines.append(f"| {name} | " + " | ".join(_f(v) for v in u.values()) + " |")
    return "\n".join(lines) + "\n"


SWEEP_COLUMNS = [
    ("A0 exposed", ("A0", "exposed_fraction")),
    ("A1 err", ("A1", "rel_err_protected")),
    ("A1 err mod T", ("A1", "rel_err_protected_mod_T")),
    ("A2 err", ("A2", "rel_err_protected")),
    ("A2 perm acc", ("A2", "perm_accuracy")),
    ("A2 angle err (rad)", ("A2", "angle_err_mean_rad")),
    ("A4 err", ("A4", "rel_err_protected")),
    ("A5 err", ("A5", "rel_err_protected")),
    ("A5 err mod T", ("A5", "rel_err_protected_mod_T")),
    ("A1 err all mod T", ("A1", "rel_err_all_mod_T")),
    ("A5 err all mod T", ("A5", "rel_err_all_mod_T")),
    ("B1 AUC", ("B1", "auc")),
]


def sweep_row(report: dict) -> dict:
    c = report["config"]
    row = {"kappa": c["kappa"], "m": c["m"], "perturb_unprotected": c["perturb_unprotected"]}
    for label, (attack, key) in SWEEP_COLUMNS:
        row[label] = report["attacks"].get(attack, {}).get(key)
    u = report.get("utility") or {}
    if u:
        row["retain prob copy 1"] = u["copy_1"]["retain_prob"]
        row["retain prob θ_r"] = u["theta_next"]["retain_prob"]
        row["forget prob θ_r"] = u["theta_next"]["forget_prob"]
    return row


def write_sweep(reports: list[dict], out: Path) -> pd.DataFrame:
    df = pd.DataFrame([sweep_row(r) for r in reports])
    c = reports[0]["config"]
    atomic_write_text(out / "privacy_sweep.csv", df.to_csv(index=False))
    atomic_write_json(out / "privacy_sweep.json", {"config": c, "rows": json.loads(df.to_json(orient="records"))})
    header = (f"# Privacy audit sweep — model={c['model']} seed={c['seed']} algorithm={c['algorithm']}\n\n"
              "Errors are ‖θ̂ − θ‖ / ‖θ − θ_base‖ over the protected (transformer-block) parameters unless the "
              "column says 'all'.\n\n")
    md = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    for _, r in df.iterrows():
        md += "| " + " | ".join(_f(v) if isinstance(v, float) else str(v) for v in r.tolist()) + " |\n"
    atomic_write_text(out / "privacy_sweep.md", header + md)
    return df
