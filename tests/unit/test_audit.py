"""The privacy-audit harness checked against known answers."""

import ast
import math
from pathlib import Path

import pytest
import torch
from helpers import publish, target_and_base

from mpu_cli.audit import ClientView, Scorer, auc, b1_rank_forget_items, client_attacks, score_client_attacks
from mpu_cli.audit.align import align_copy, estimate_transform
from mpu_cli.audit.run import report_markdown, write_sweep
from mpu_cli.cli.audit import main as audit_main
from mpu_cli.mpu import block_of, invert_transform

torch.set_num_threads(1)

AUDIT_DIR = Path(__file__).resolve().parents[2] / "src" / "mpu_cli" / "audit"


# ---- the separation between attacks and ground truth ------------------------------------------------------

def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_attacks_never_import_the_server_or_the_scorer():
    for module in ("attacks.py", "align.py"):
        imports = _imports(AUDIT_DIR / module)
        assert not any(i.endswith(("server", "score", ".noise")) for i in imports), (module, imports)
    # the client view holds exactly what a client receives
    assert set(ClientView.__dataclass_fields__) == {"copies", "base", "layout"}


# ---- known answers -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("m", [2, 3])
def test_scorer_with_secrets_recovers_theta_exactly(m):
    theta, base, layout = target_and_base()
    server, copies = publish(theta, base, layout, kappa=0.1, m=m)
    secrets = server.private_state()
    exact = server.theta
    # every copy on its own: T_k⁻¹(copy_k) − α_k ε⁰_k = θ
    for k, copy in enumerate(copies):
        back = invert_transform({n: t.double() for n, t in copy.items()}, layout, secrets["transforms"][k])
        for name, x in exact.items():
            noise = server._noise(name)
            clean = back[name] - (0 if noise is None else secrets["alphas"][k] * noise[k].double())
            torch.testing.assert_close(clean.float(), x, rtol=0, atol=2e-6)
    # the scorer's oracle (harmonic combination, the noise cancels): θ to round-off
    scorer = Scorer(exact, base, secrets, layout)
    err = scorer.rel_error(scorer.oracle(copies))
    assert err["protected"] < 1e-5 and err["all"] < 1e-5
    # the copies themselves are far from θ (the transform scrambles coordinates)
    assert scorer.rel_error({n: t.float() for n, t in copies[0].items()})["protected"] > 1.0


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_alignment_recovers_known_permutation_and_angles_without_noise(kind):
    theta, base, layout = target_and_base(kind, finetune=0.005)
    server, copies = publish(theta, base, layout, kappa=0.0, m=2)
    scorer = Scorer(server.theta, base, server.private_state(), layout)
    estimated = [estimate_transform(c, base, layout) for c in copies]
    acc = scorer.transform_accuracy(estimated)
    assert acc["perm_accuracy"] == 1.0
    assert acc["angle_err_max_rad"] < 0.02  # base ≠ θ: the angles are found up to the fine-tuning difference
    aligned, _ = align_copy(copies[0], base, layout)
    assert scorer.rel_error(aligned)["protected"] < 0.1


def test_alignment_against_theta_itself_is_exact():
    theta, _, layout = target_and_base()
    server, copies = publish(theta, theta, layout, kappa=0.0, m=2)  # reference = θ: no fine-tuning gap
    scorer = Scorer(server.theta, theta, server.private_state(), layout)
    estimated = [estimate_transform(c, theta, layout) for c in copies]
    acc = scorer.transform_accuracy(estimated)
    assert acc["perm_accuracy"] == 1.0 and acc["angle_err_max_rad"] < 1e-6
    aligned, _ = align_copy(copies[1], theta, layout)
    for name, x in server.theta.items():
        torch.testing.assert_close(aligned[name], x, rtol=0, atol=1e-5)


@pytest.mark.parametrize("m", [2, 4])
def test_client_attacks_on_noised_copies(m):
    """With noise: alignment still exact, averaging helps, the affine-hull point nearly recovers θ."""
    theta, base, layout = target_and_base()
    server, copies = publish(theta, base, layout, kappa=0.1, m=m)
    est = client_attacks(ClientView(copies=copies, base=base, layout=layout))
    scorer = Scorer(server.theta, base, server.private_state(), layout)
    report = score_client_attacks(est, scorer, copies, server.exposed_fraction())
    assert report["A0"]["exposed_fraction"] == pytest.approx(server.exposed_fraction())
    assert report["A0"]["exact_fraction_true"] == pytest.approx(server.exposed_fraction())
    assert report["A2"]["perm_accuracy"] == 1.0
    assert report["A1"]["rel_err_protected"] > 1.0  # unaligned copies are useless coordinate-wise
    a2 = report["A2"]["rel_err_protected_mod_T"]
    assert 0.05 < a2 < 0.4  # ≈ κ·mean(α_k)
    assert report["A4"]["rel_err_protected"] < report["A2"]["rel_err_protected"]
    assert report["A5"]["rel_err_protected_mod_T"] < 0.03  # θ lies on the hull; the base picks it out
    assert sum(est.hull_weights) == pytest.approx(1.0)
    assert report["A5"]["weights_max_abs_err"] < 0.1  # the client learns the harmonic weights (α ratios)
    assert report["oracle"]["rel_err_protected"] < 1e-5
    md = report_markdown({"config": {"model": "small", "arm": "mpu", "kappa": 0.1, "m": m, "seed": 0,
                                     "perturb_unprotected": False}, "params": {"total": 1, "protected": 1},
                          "attacks": report, "utility": {}})
    assert "| A5 |" in md and "| oracle |" in md


def test_perturb_unprotected_leaves_nothing_exact():
    theta, base, layout = target_and_base()
    server, copies = publish(theta, base, layout, kappa=0.1, m=2, perturb_unprotected=True)
    est = client_attacks(ClientView(copies=copies, base=base, layout=layout))
    assert est.exact_names == []
    scorer = Scorer(server.theta, base, server.private_state(), layout)
    assert scorer.exact_fraction(copies[0]) < 0.01
    unprotected = [n for n in scorer.names if block_of(n) is None]
    err = math.sqrt(sum(float((est.estimates["A1"][n] - server.theta[n]).square().sum()) for n in unprotected))
    assert err > 0


# ---- B1 ------------------------------------------------------------------------------------------------------

def test_auc_known_values():
    assert auc([3, 4], [1, 2]) == 1.0
    assert auc([1, 2], [3, 4]) == 0.0
    assert auc([1, 1], [1, 1]) == 0.5
    assert auc([0.5, 2.0], [1.0, 3.0]) == 0.25  # one of four pairs ranked right
    with pytest.raises(ValueError):
        auc([], [1.0])


def test_b1_ranks_items_whose_loss_rose():
    g = torch.Generator().manual_seed(0)
    before = {"forget": torch.rand(10, generator=g).tolist(), "retain": torch.rand(30, generator=g).tolist(),
              "holdout": torch.rand(10, generator=g).tolist()}
    # forget items rise by 1 + small; retain and holdout move by less than 0.5: a perfect ranking
    after = {"forget": [x + 1 + 0.1 * i for i, x in enumerate(before["forget"])],
             "retain": [x + 0.4 * ((i % 3) - 1) for i, x in enumerate(before["retain"])],
             "holdout": [x + 0.45 for x in before["holdout"]]}
    out = b1_rank_forget_items(before, after)
    assert out["auc"] == 1.0 and out["auc_vs_retain"] == 1.0 and out["auc_vs_holdout"] == 1.0
    # unchanged losses: every candidate ties, AUC 0.5 (the server learns nothing)
    assert b1_rank_forget_items(before, before)["auc"] == 0.5
    # half of the forget items rise above all others, half fall below: AUC 0.5 exactly
    after["forget"] = [x + (5 if i % 2 else -5) for i, x in enumerate(before["forget"])]
    assert b1_rank_forget_items(before, after)["auc"] == 0.5


# ---- CLI -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["b1=maybe"], ["kappa=-1"], ["no_such_key=1"], ["sweep_m=two"], ["kappa"],
                                  ["sweep=true", "cells=kappa=0.1;kappa=1", "only=2"], ["only=0"]])
def test_cli_bad_input_exits_2(args, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        audit_main([*args, f"out={tmp_path / 'x'}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("mpu-audit: error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_write_sweep_table(tmp_path):
    attacks = {"A0": {"exposed_fraction": 0.2}, "A1": {"rel_err_protected": 3.0}, "A5": {"rel_err_protected": 0.01},
               "B1": {"auc": 0.9}}
    reports = [{"config": {"model": "tiny", "seed": 0, "algorithm": "npo", "kappa": k, "m": m,
                           "perturb_unprotected": False}, "attacks": attacks, "utility": {}}
               for k in (0.01, 0.1) for m in (2, 4)]
    df = write_sweep(reports, tmp_path)
    assert len(df) == 4
    assert (tmp_path / "privacy_sweep.csv").exists() and (tmp_path / "privacy_sweep.json").exists()
    assert "| 0.1 | 4 |" in (tmp_path / "privacy_sweep.md").read_text()


