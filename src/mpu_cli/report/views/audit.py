"""The privacy audit's sweep (`mpu-audit sweep=true`) as two tables: the attacks per κ and m, and the same sweep
with and without the perturbation of the unprotected parameters."""

from __future__ import annotations

import json
from pathlib import Path

from mpu_cli.report.views.fmt import g, markdown
from mpu_cli.run import seed_tag

SWEEP_FILE = "privacy_sweep.json"
CELL_FILE = "privacy_report.json"


def read_sweep(folder: Path) -> list[dict]:
    """The cells' privacy_report.json of a finished `mpu-audit sweep=true` folder, in sweep order."""
    folder = Path(folder)
    if not (folder / SWEEP_FILE).is_file():
        raise ValueError(f"{folder} holds no {SWEEP_FILE} (an `mpu-audit sweep=true` folder)")
    cells = sorted((p for p in folder.iterdir() if (p / CELL_FILE).is_file()),
                   key=lambda p: int(p.name.split("_", 1)[0]))
    return [json.loads((p / CELL_FILE).read_text()) for p in cells]


def _caption(r: dict) -> str:
    c, p = r["config"], r["params"]
    # a sweep records its seed's tag (older ones the seed): the command then names the seed by its place
    seed = f"seed tag {c['seed']}; `mpu-audit sweep=true seed=<its seed>`" if seed_tag.is_tag(c["seed"]) else \
        f"seed {c['seed']}; `mpu-audit sweep=true seed={c['seed']}`"
    return (f"Measured on the embedded default ({p['total'] / 1e6:.2f} M parameters, {p['protected'] / 1e6:.2f} M "
            f"in blocks;\n{c['algorithm'].upper()}, {c['client_epochs']} epochs, lr {c['client_lr']:g}, "
            f"{c['split']}, {seed}):")


def audit_markdown(folder: Path) -> str:
    """Per κ and m (unprotected parameters left as they are): every attack's error, with its caption."""
    reports = [r for r in read_sweep(folder) if not r["config"]["perturb_unprotected"]]
    rows = []
    for r in reports:
        a, c = r["attacks"], r["config"]
        b1 = a.get("B1", {})
        rows.append([
            g(c["kappa"]), str(c["m"]), g(a["A0"]["exposed_fraction"]),
            f"{g(a['A1']['rel_err_protected'])} ({g(a['A1']['rel_err_protected_mod_T'])})",
            f"{a['A2']['perm_accuracy']:.3f} / {g(a['A2']['angle_err_mean_rad'], 2)} rad",
            g(a["A2"]["rel_err_protected"]), g(a["A4"]["rel_err_protected"]), g(a["A5"]["rel_err_protected"]),
            g(a["A5"]["rel_err_protected_mod_T"]), g(a["A5"].get("weights_max_abs_err"), 2),
            f"{g(b1.get('auc'))} ({g(b1.get('auc_vs_retain'))} / {g(b1.get('auc_vs_holdout'))})",
        ])
    header = ["κ", "m", "A0 exposed", "A1 err (mod T)", "A2 perm acc / angle err", "A2 err", "A4 err", "A5 err",
              "A5 err mod T", "A5 weights max err", "B1 AUC (vs retain / holdout)"]
    return _caption(reports[0]) + "\n\n" + markdown(header, rows)


def audit_all_params_markdown(folder: Path) -> str:
    """Every cell, with and without perturbing the unprotected parameters: the attacks on all parameters and
    the retain Prob of θ_{r−1}, copy 1 and θ_r."""
    rows = []
    for r in read_sweep(folder):
        a, c, u = r["attacks"], r["config"], r.get("utility") or {}
        rows.append([
            g(c["kappa"]), str(c["m"]), str(c["perturb_unprotected"]).lower(), g(a["A0"]["exposed_fraction"]),
            g(a["A1"].get("rel_err_all_mod_T")), g(a["A5"].get("rel_err_all_mod_T")),
            *(g(u.get(model, {}).get("retain_prob"), 4) for model in ("theta_prev", "copy_1", "theta_next")),
        ])
    header = ["κ", "m", "perturb_unprotected", "A0 exposed", "A1 err all params mod T",
              "A5 err all params mod T", "retain prob: θ_{r−1}", "copy 1", "θ_r"]
    return markdown(header, rows)
