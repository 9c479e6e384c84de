"""The privacy audit's sweep (`mpu-audit sweep=true`) as tables: the attacks per κ and m; the same sweep with and
without the perturbation of the unprotected parameters; and, for any list of cells (e.g. `make audit-smollm2`),
the attacks per cell, what the recovered models do, and what each phase costs."""

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


def _caption(r: dict, command: str | None = None) -> str:
    c, p = r["config"], r["params"]
    model = "the embedded default" if c.get("model", "tiny") == "tiny" else c["model"]
    # a sweep records its seed's tag (older ones the seed): the command then names the seed by its place
    tagged = seed_tag.is_tag(c["seed"])
    command = command or f"mpu-audit sweep=true seed={'<its seed>' if tagged else c['seed']}"
    seed = f"seed tag {c['seed']}" if tagged else f"seed {c['seed']}"
    return (f"Measured on {model} ({p['total'] / 1e6:.2f} M parameters, {p['protected'] / 1e6:.2f} M "
            f"in blocks;\n{c['algorithm'].upper()}, {c['client_epochs']} epochs, lr {c['client_lr']:g}, "
            f"{c['split']}, {seed}; `{command}`):")


def cell_label(c: dict) -> str:
    """A cell by what sets it apart: κ, m, and the α schedule, published dtype and common noise when not plain."""
    parts = [f"κ={g(c['kappa'])}", f"m={c['m']}"]
    if c.get("alpha_schedule", "linear") != "linear":
        parts.append(f"α {c['alpha_schedule']}")
    if c.get("publish_dtype", "model") != "model":
        parts.append(f"{c['publish_dtype']} copies")
    if c.get("common_noise"):
        parts.append(f"common γ={g(c['common_noise'])}")
    return " ".join(parts)


def _err(a: dict, attack: str) -> str:
    r = a.get(attack)
    if not r:
        return "–"
    return f"{g(r['rel_err_protected'])} ({g(r.get('rel_err_protected_mod_T'))})"


def cells_markdown(folder: Path) -> str:
    """One row per cell: every client attack's error (mod T in brackets) and B1's AUC."""
    reports = read_sweep(folder)
    rows = []
    for r in reports:
        a, c = r["attacks"], r["config"]
        b1 = a.get("B1", {})
        a2 = a.get("A2", {})
        rows.append([
            cell_label(c), g(a["A0"]["exposed_fraction"]), g(a["A1"]["rel_err_protected"]),
            f"{a2.get('perm_accuracy', float('nan')):.3f} / {g(a2.get('angle_err_mean_rad'), 2)} rad",
            _err(a, "A2"), _err(a, "A4"), _err(a, "A5"), _err(a, "A6"),
            f"{g(b1.get('auc'))} ({g(b1.get('auc_vs_retain'))} / {g(b1.get('auc_vs_holdout'))})",
        ])
    header = ["cell", "A0 exposed", "A1 err", "A2 perm acc / angle err", "A2 err (mod T)", "A4 err (mod T)",
              "A5 err (mod T)", "A6 err (mod T)", "B1 AUC (vs retain / holdout)"]
    return _caption(reports[0], "make audit-smollm2") + "\n\n" + markdown(header, rows)


RECOVERED = (("theta_prev", "θ"), ("copy_1", "copy 1"), ("A5", "A5's θ̂"), ("A6", "A6's θ̂"), ("theta_next", "θ_r"))


def recovered_markdown(folder: Path) -> str:
    """Per cell: forget / retain Prob of θ, a published copy, the client's recovered models and the unlearned θ_r."""
    rows = []
    for r in read_sweep(folder):
        u = r.get("utility") or {}
        cells = [f"{g(u[k]['forget_prob'], 3)} / {g(u[k]['retain_prob'], 3)}" if k in u else "–" for k, _ in RECOVERED]
        rows.append([cell_label(r["config"]), *cells])
    return ("Mean answer probability on the forget / retain items (forget Prob / retain Prob) of each model:\n\n"
            + markdown(["cell", *(label for _, label in RECOVERED)], rows))


def cost_markdown(folder: Path) -> str:
    """Per cell and phase: wall time and peak resident memory of the audit process."""
    reports = read_sweep(folder)
    phases = list(dict.fromkeys(p for r in reports for p in r.get("cost", {})))
    rows = []
    for r in reports:
        cost = r.get("cost", {})
        rows.append([cell_label(r["config"]), *(
            f"{cost[p]['seconds']:.0f} s / {g(cost[p]['peak_rss_mb'] / 1024, 2)} GB" if p in cost
            and cost[p]["peak_rss_mb"] is not None else "–" for p in phases),
            f"{g(r.get('peak_rss_mb', 0) / 1024, 3)} GB"])
    return ("Each phase's wall time / the process's peak resident memory during it (each cell runs "
            "in a process of its own):\n\n"
            + markdown(["cell", *phases, "peak"], rows))


def audit_markdown(folder: Path) -> str:
    """Per κ and m (unprotected parameters left as they are): every attack's error, with its caption."""
    reports = [r for r in read_sweep(folder) if not r["config"]["perturb_unprotected"]]
    rows = []
    for r in reports:
        a, c = r["attacks"], r["config"]
        b1 = a.get("B1", {})
        rows.append([
            g(c["kappa"]), str(c["m"]), g(a["A0"]["exposed_fraction"]), g(a["A1"]["rel_err_protected"]),
            f"{a['A2']['perm_accuracy']:.3f} / {g(a['A2']['angle_err_mean_rad'], 2)} rad",
            _err(a, "A2"), g(a["A4"]["rel_err_protected"]), g(a["A5"]["rel_err_protected"]),
            g(a["A5"]["rel_err_protected_mod_T"]), g(a["A5"].get("weights_max_abs_err"), 2), _err(a, "A6"),
            f"{g(b1.get('auc'))} ({g(b1.get('auc_vs_retain'))} / {g(b1.get('auc_vs_holdout'))})",
        ])
    header = ["κ", "m", "A0 exposed", "A1 err", "A2 perm acc / angle err", "A2 err (mod T)", "A4 err", "A5 err",
              "A5 err mod T", "A5 weights max err", "A6 err (mod T)", "B1 AUC (vs retain / holdout)"]
    return _caption(reports[0]) + "\n\n" + markdown(header, rows)


def audit_all_params_markdown(folder: Path) -> str:
    """Every cell, with and without perturbing the unprotected parameters: the attacks on all parameters (one
    aligned copy, A2, mod T: what A1 is mod T; and A5) and the retain Prob of θ_{r−1}, copy 1 and θ_r."""
    rows = []
    for r in read_sweep(folder):
        a, c, u = r["attacks"], r["config"], r.get("utility") or {}
        rows.append([
            g(c["kappa"]), str(c["m"]), str(c["perturb_unprotected"]).lower(), g(a["A0"]["exposed_fraction"]),
            g(a["A2"].get("rel_err_all_mod_T")), g(a["A5"].get("rel_err_all_mod_T")),
            *(g(u.get(model, {}).get("retain_prob"), 4) for model in ("theta_prev", "copy_1", "theta_next")),
        ])
    header = ["κ", "m", "perturb_unprotected", "A0 exposed", "A2 err all params mod T",
              "A5 err all params mod T", "retain prob: θ_{r−1}", "copy 1", "θ_r"]
    return markdown(header, rows)
