"""One audit: build the server from the prepared target/base, publish a round, run the attacks, score them.

The three roles are kept apart in `audit()`:
  1. server   — MPUServer(θ, secrets); publishes copies.
  2. attacks  — client_attacks(ClientView(copies, base, layout)) and, after a real round of unlearning,
                B1 from (θ_{r-1}, θ_r, candidate texts). No secrets are passed to either.
  3. scorer   — Scorer(θ, base, secrets): ground truth, used only to score.
A6 also takes the client's own forget set; B1 takes θ_{r-1}, θ_r and the candidate texts. Each phase is timed
and its peak resident memory measured (meter.py).
"""
from __future__ import annotations

import gc
import json
import logging
import math
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from mpu_cli.files import atomic_write_json, atomic_write_text
from mpu_cli.mpu.arms import arm_of
from mpu_cli.mpu.build import build_server, load_base
from mpu_cli.mpu.server import MPUServer
from mpu_cli.mpu.settings import ServerConfig
from mpu_cli.run import seed_tag
from mpu_cli.run.rounds import InProcessRounds, drive
from mpu_cli.run.settings import chat_format, client_config
from mpu_cli.transport.exchange import LazyStateDict, write_safetensors

from .attacks import (
    ClientView,
    a6_hull_fit,
    b1_rank_forget_items,
    client_attacks,
    forget_loss,
    item_losses,
    unique_names,
)
from .meter import PhaseMeter
from .score import Scorer, estimate_errors, score_client_attacks

log = logging.getLogger(__name__)

DESCRIPTIONS = {
    "base": "take the public base θ_base as θ (reference: 1.0 by definition)",
    "A0": "tensors equal in every copy are published exactly (embeddings, LM head, final norm)",
    "A1": "take one published copy as θ (mean over copies)",
    "A2": "align each copy to θ_base: MLP permutation by assignment, RoPE-plane angles by 2-D Procrustes",
    "A3": "align copies 2..m to the aligned copy 1 (copy-to-copy)",
    "A4": "align (A3), then average the copies",
    "A5": "align (A3), then the point of the copies' affine hull closest to θ_base (α unknown)",
    "A6": "align (A3), then the hull point under which the model best fits the client's own forget set "
          "(Newton steps on the hull coordinates from A5's point)",
    "oracle": "WITH the secrets: Σ w_k T_k⁻¹(copy_k) (harness check: round-off, or the common noise)",
    "B1": "server ranks forget items among retain + holdout items by loss increase θ_{r-1} → θ_r",
}
COPIES_DIR = ".copies"  # the published copies, written under the report folder while the audit runs


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


def audit(cfg, out: Path, b1: bool = True, fit: bool = True) -> dict:
    """One cell. Memory: one model and what one tensor (or block) of the m copies needs: the base, the copies and,
    once published, θ are files that every attack, the scorer and the round read one tensor at a time.
    fit: also mount A6 (it needs the client's forget set and the model)."""
    from mpu_cli.data.formatting import pad_id
    from mpu_cli.data.tofu import load_split, split_names
    from mpu_cli.models.io import load_model, load_tokenizer, resolve_dtype
    from mpu_cli.models.prepare import prepare_models

    gc.collect()  # a sweep's earlier cell must not count in this cell's memory
    t0 = time.perf_counter()
    out = Path(out)
    meter = PhaseMeter()
    with meter.phase("load"):
        model_cfg = OmegaConf.merge(cfg.model, {"retain": None})  # the audit needs no retain model
        prepared = prepare_models(model_cfg, cfg.data, cfg.prepare)
        if not prepared.base:
            raise ValueError("the audit needs a public base model (model.base)")
        dtype = resolve_dtype(cfg.model.dtype)
        target = load_model(prepared.target, dtype)
        names = unique_names(target.state_dict())  # tied tensors once
        base = load_base(prepared.base, dtype)  # read from its files one tensor at a time where it has them
        # 1. server --------------------------------------------------------------------------------------------
        server = build_server(target, ServerConfig.from_config(cfg), base=base)
    layout = server.layout
    with meter.phase("publish"):
        paths = _publish_to_files(server, out / COPIES_DIR)
        server = _theta_in_file(server, out / COPIES_DIR / "theta.safetensors")
    try:
        copies = [LazyStateDict(p, names) for p in paths]

        # 2. client-side attacks: copies, public base, public architecture — nothing else ---------------------
        estimates = client_attacks(ClientView(copies=copies, base=base, layout=layout),
                                   align_copies=arm_of(cfg.arm).reparameterized, phase=meter.phase)

        # 3. scorer: ground truth (θ_{r-1} and the round's secrets) ------------------------------------------
        with meter.phase("scoring"):
            scorer = Scorer(server.theta, base, server.private_state(), layout, names)
            attacks = score_client_attacks(estimates, scorer, copies, server.exposed_fraction())
        n_total, n_protected = scorer.numel(names), scorer.numel(scorer.protected)

        utility, pool, tokenizer = {}, None, None
        if fit or b1:
            tokenizer = load_tokenizer(prepared.tokenizer)
            fmt, pad = chat_format(cfg.model), pad_id(tokenizer)
            groups = split_names(cfg.data.split)
            pool = {g: [_encode(tokenizer, r, fmt) for r in load_split(cfg.data.source, groups[g])]
                    for g in ("forget", "retain", "holdout")[:3 if b1 else 2]}  # holdout: B1's candidates only
            bs = cfg.eval.batch_size
            with meter.phase("losses"):
                utility["theta_prev"] = _losses(target, server.theta, pool, pad, bs)
                utility["copy_1"] = _losses(target, copies[0], pool, pad, bs)
        hull = estimates.aligned.get("A3")
        if fit and hull is not None and len(hull) > 1:
            # 4. A6: the client's own forget set picks the hull point (the model's weights are overwritten)
            with meter.phase("A6"):
                a6, w6, info = a6_hull_fit(hull, estimates.hull_weights, target, forget_loss(pool["forget"], pad))
            with meter.phase("scoring"):
                attacks["A6"] = estimate_errors(scorer, a6) | info | {
                    "hull_weights": w6, "weights_max_abs_err": scorer.weights_error(w6)}
            with meter.phase("losses"):
                utility["A5"] = _losses(target, estimates.estimates["A5"], pool, pad, bs)
                utility["A6"] = _losses(target, a6, pool, pad, bs)
        del scorer, estimates, hull

        if b1:
            # 5. one real round (the server reads θ_{r-1} from its file; θ_r is kept in memory)
            with meter.phase("B1 round"):
                _unlearn_and_aggregate(cfg, prepared, target, server, paths, out / COPIES_DIR)
            with meter.phase("B1 losses"):
                utility["theta_next"] = _losses(target, server.theta, pool, pad, bs)
                attacks["B1"] = b1_rank_forget_items(utility["theta_prev"], utility["theta_next"], positive="forget")
    finally:
        shutil.rmtree(out / COPIES_DIR, ignore_errors=True)

    def probs(ls: dict) -> dict:
        return {f"{g}_prob": float(np.mean(np.exp(-np.asarray(v)))) for g, v in ls.items()}

    report = _clean({
        "config": {"model": cfg.model.name, "data": cfg.data.name, "split": cfg.data.split, "arm": cfg.arm,
                   "kappa": cfg.kappa, "m": server.n_copies,
                   "seed": seed_tag.tag(cfg.seed, cfg.prepare.cache_dir),  # readable: the tag, not the seed
                   "perturb_unprotected": bool(cfg.server.perturb_unprotected),
                   "alpha_schedule": cfg.server.alpha_schedule, "publish_dtype": cfg.server.publish_dtype,
                   "common_noise": cfg.server.common_noise, "model_dtype": cfg.model.dtype,
                   "algorithm": cfg.algorithm.name, "client_epochs": cfg.client.epochs, "client_lr": cfg.client.lr},
        "params": {"total": n_total, "protected": n_protected, "unprotected": n_total - n_protected},
        "attacks": attacks,
        "utility": {name: probs(ls) for name, ls in utility.items()},
        "descriptions": DESCRIPTIONS,
        "cost": meter.phases,
        "peak_rss_mb": meter.peak(),
        "time_s": {"total": time.perf_counter() - t0},
    })
    atomic_write_json(out / "privacy_report.json", report)
    atomic_write_text(out / "privacy_report.md", report_markdown(report))
    log.info("audit written to %s", out)
    return report


def _publish_to_files(server: MPUServer, folder: Path) -> list[Path]:
    """Publish one round straight to m safetensors files, one tensor at a time (as mpu-server does)."""
    paths = [folder / f"copy_{k}.safetensors" for k in range(server.n_copies)]
    server.publish_copies()  # starts the round; its copies are built as they are written
    server.write_copies(paths)
    return paths


def _theta_in_file(server: MPUServer, path: Path) -> MPUServer:
    """The same server, its round pending, with θ written to `path` and read from it one tensor at a time (as
    mpu-server between publish and aggregate), and without the base (the round's σ are in its exported state;
    only publishing needs the base)."""
    from mpu_cli.models.files import open_file

    theta, meta = server.export_state()
    write_safetensors(path, theta)
    return MPUServer.restore(open_file(path), meta, server.layout)


def _set_weights(model, state: Mapping) -> None:
    """Copy `state` (any mapping; tied tensors may be given once) into the model, tensor by tensor."""
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if name in state:
                p.copy_(state[name].to(p.dtype))


def _losses(model, state: Mapping, pool: dict, pad: int, batch_size: int) -> dict:
    """Per-item answer NLL of every candidate group under `state`."""
    _set_weights(model, state)
    model.eval()
    return {g: item_losses(model, ex, pad, batch_size) for g, ex in pool.items()}


def _unlearn_and_aggregate(cfg, prepared, target, server: MPUServer, paths: list[Path], folder: Path) -> None:
    """One real round: the client unlearns every copy (read from its file), each returned copy goes to a file,
    the server aggregates them streaming."""
    from mpu_cli.data.formatting import pad_id
    from mpu_cli.evals import benchmarks
    from mpu_cli.models.io import load_tokenizer
    from mpu_cli.unlearn.algorithms import build_algorithm
    from mpu_cli.unlearn.client import unlearn_copy

    tokenizer = load_tokenizer(prepared.tokenizer)
    fmt, pad = chat_format(cfg.model), pad_id(tokenizer)
    algorithm = build_algorithm(cfg.algorithm.name, OmegaConf.to_container(cfg.algorithm.params, resolve=True))

    # client: its own data, the published copies (the model object's weights are overwritten by each copy)
    client_data = benchmarks.of(cfg.data).client_data(tokenizer, fmt, cfg.data, algorithm)
    def unlearn_fn(r: int, k: int, published) -> LazyStateDict:
        # each returned copy goes to a file at once and is read back lazily: the server aggregates streaming
        updated = unlearn_copy(target, published, algorithm, client_data, client_config(cfg, 1), pad,
                               desc=f"audit copy {k + 1}/{len(paths)}")
        path = folder / f"returned_{k}.safetensors"
        write_safetensors(path, updated)
        return LazyStateDict(path)

    drive(InProcessRounds(server, unlearn_fn, published=[LazyStateDict(p) for p in paths]), server.round)


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
    for key in ("base", "A1", "A2", "A3", "A4", "A5", "A6", "oracle"):
        if key not in a:
            continue
        r = a[key]
        other = []
        if "perm_accuracy" in r:
            other.append(f"perm acc {_f(r['perm_accuracy'])}, angle err mean {_f(r['angle_err_mean_rad'])} rad "
                         f"(max {_f(r['angle_err_max_rad'])})")
        if r.get("loss_fit") is not None:
            other.append(f"forget loss {_f(r['loss_start'])} at A5 → {_f(r['loss_fit'])} "
                         f"({r['evaluations']} evaluations)")
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
    if report.get("cost"):
        lines += ["", f"Cost per phase (peak resident memory of the process during the phase; overall "
                  f"{_f(report.get('peak_rss_mb'))} MiB):", "", "| phase | seconds | peak RSS (MiB) |", "|---|---|---|"]
        lines += [f"| {name} | {_f(c['seconds'], 3)} | {_f(c['peak_rss_mb'], 4)} |" for name, c in report["cost"].items()]
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
    ("A6 err", ("A6", "rel_err_protected")),
    ("A6 err mod T", ("A6", "rel_err_protected_mod_T")),
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
    if "theta_next" in u:
        row["retain prob copy 1"] = u["copy_1"]["retain_prob"]
        row["retain prob θ_r"] = u["theta_next"]["retain_prob"]
        row["forget prob θ_r"] = u["theta_next"]["forget_prob"]
    row["peak RSS (MiB)"] = report.get("peak_rss_mb")
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
