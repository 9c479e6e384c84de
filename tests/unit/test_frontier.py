"""scripts/frontier.py: each preset's audit composes the run's own configuration (the same copies, the same
client schedule), the sweeps carry the overrides and cuts they are given, and the caption says what was run."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from mpu_cli.cli.audit import compose_config
from mpu_cli.mpu.arms import arm_of

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("frontier", REPO / "scripts" / "frontier.py")
fr = importlib.util.module_from_spec(_spec)
sys.modules["frontier"] = fr  # (its dataclass looks its module up)
_spec.loader.exec_module(fr)

SMOLLM2 = fr.PRESETS["smollm2"]


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=False)


def test_smollm2_audit_composes_the_runs_configuration(tmp_path):
    sets = [f"model.target={tmp_path}"]
    for grid, job, setting in (
            (SMOLLM2.grid, ["variant=mpu_k1_m4"], ("mpu", 1.0, 4, 0.0)),
            (SMOLLM2.common_grid, ["variant=mpu_k0.1", "server.common_noise=10"], ("mpu", 0.1, 2, 10.0)),
            (SMOLLM2.grid, ["variant=noised_k2"], ("noised", 2.0, 1, 0.0))):
        run = compose_config([*sets, *job, "seed=0"], grid)  # one job of the sweep, as Hydra composes it
        audit = fr.audit_config(SMOLLM2, setting, 0, sets)
        for cfg in (run, audit):
            assert cfg.model.name == "smollm2-135m" and cfg.model.target == str(tmp_path)
            assert (cfg.client.epochs, cfg.client.mixed_precision, cfg.client.gradient_checkpointing) == (1, None, True)
            assert (cfg.data.split, cfg.eval.metrics, cfg.eval.max_new_tokens, cfg.algorithm.name) == (
                "forget05", "quick", 32, "npo")
        assert _plain(audit.client) == _plain(run.client)
        assert _plain(audit.server) == _plain(run.server)
        assert (audit.arm, audit.kappa, audit.seed) == (run.arm, run.kappa, run.seed)
        # the m results.csv records: the noised arm's one copy is the same whatever m
        assert [arm_of(c.arm).effective_m(c.m, c.server.noised_alpha) for c in (audit, run)] == [setting[2]] * 2


def test_embedded_audit_publishes_what_it_did_before():
    # the embedded frontier's audits composed mpu-run's default config with NPO and the quick evaluation
    for setting in (("mpu", 0.1, 4, 0.0), ("mpu", 0.1, 2, 20.0), ("noised", 1.0, 1, 0.0)):
        arm, kappa, m, common = setting
        before = compose_config(["algorithm=npo", f"arm={arm}", f"kappa={kappa}", f"m={m}",
                                 f"server.common_noise={common}", "seed=2", "eval.metrics=quick"])
        now = fr.audit_config(fr.PRESETS["embedded"], setting, 2, [])
        assert _plain(now.server) == _plain(before.server) and _plain(now.model) == _plain(before.model)
        assert (now.arm, now.kappa, now.m, now.seed, now.algorithm.name) == (arm, kappa, m, 2, "npo")


def test_sweep_commands_carry_the_overrides_and_the_cuts(tmp_path):
    main, common = fr.sweep_commands(SMOLLM2, tmp_path, ["model.target=/t"], seeds="0", variants="clean,mpu_k1",
                                     common="10")
    assert main[main.index("--config-name") + 1] == "reproduce_frontier_smollm2"
    assert common[common.index("--config-name") + 1] == "reproduce_frontier_smollm2_common"
    for cmd in (main, common):
        assert "model.target=/t" in cmd and "seed=0" in cmd and f"hydra.sweep.dir={tmp_path}" in cmd
    assert "variant=clean,mpu_k1" in main and not any(a.startswith("variant=") for a in common)
    assert "server.common_noise=10" in common and not any(a.startswith("server.common_noise") for a in main)
    plain = fr.sweep_commands(SMOLLM2, tmp_path, [])
    assert not any(a.startswith(("seed=", "variant=", "server.common")) for cmd in plain for a in cmd)


def test_left_out_names_what_the_cuts_drop():
    kept = "clean,noised_k0.1,noised_k1,noised_k2,mpu_k0.1,mpu_k1,mpu_k2,mpu_k0.1_m4,mpu_k1_m4"
    note = fr.left_out(SMOLLM2, kept, "10")
    assert "mpu_k2_m4" in note and "mpu_k0.1 + γ=20" in note and "mpu_k1_m4" not in note and "γ=10" not in note
    assert fr.left_out(SMOLLM2, None, None) == ""


def frontier_table(seeds: int) -> pd.DataFrame:
    """A summary as frontier() writes it: a noised setting and an MPU one."""
    sd = 0.01 if seeds > 1 else float("nan")
    ci = (0.0, 0.2) if seeds > 1 else (float("nan"), float("nan"))
    table = pd.DataFrame([
        {"arm": "noised", "kappa": 1.0, "m": 1, "common_noise": 0.0, "uncancelled": 1.0, "seeds": seeds,
         "client_error": 1.0, "client_error_sd": sd, "attack": "A1", "deg_avg": 0.1, "deg_low": ci[0],
         "deg_high": ci[1], "forget_prob": 0.5, "retain_prob": 0.8},
        {"arm": "mpu", "kappa": 0.1, "m": 2, "common_noise": 10.0, "uncancelled": 1.0, "seeds": seeds,
         "client_error": 0.9, "client_error_sd": sd, "attack": "A5", "deg_avg": -0.02, "deg_low": ci[0],
         "deg_high": ci[1], "forget_prob": 0.45, "retain_prob": 0.75}])
    table.attrs["clean"] = (0.44, 0.7, seeds)
    return table


def test_caption_names_the_model_the_seeds_and_the_schedule():
    one = fr.frontier_markdown(frontier_table(1), SMOLLM2, "Not run (to fit the time on one core): mpu_k2_m4.")
    assert one.startswith("NPO on SmolLM2-135M (data subset, forget05; client: 1 fp32 epoch, gradient checkpointing)"
                          ", 1 seed (seed 0) (`make frontier-smollm2`).")
    assert "±" not in one and "nan" not in one and "(1 run)." in one and "Not run" in one and "mpu_k2_m4" in one
    assert "| MPU m=2 + common noise | 0.1 | 10 | 1 | 0.9 (A5) | -2.0 % | 0.45 | 0.75 |" in one
    three = fr.frontier_markdown(frontier_table(3), fr.PRESETS["embedded"])
    assert three.startswith("NPO on the embedded default, 3 seeds (`make frontier`).")
    assert "mean ± sd over seeds" in three and "paired by seed [95 % CI]" in three
    assert "| noised | 1 | – | 1 | 1 ± 0.01 (A1) | +10.0 % [+0.0, +20.0] | 0.5 | 0.8 |" in three


def test_plot_writes_a_figure_for_one_seed(tmp_path):
    fr.plot(frontier_table(1), tmp_path / "plot.png", SMOLLM2)
    assert (tmp_path / "plot.png").stat().st_size > 10_000


def test_run_seed_reads_a_seed_tag_with_the_cache_key(tmp_path):
    from mpu_cli.run import seed_tag

    tag = seed_tag.tag(2, tmp_path)
    assert fr.run_seed(tag, tmp_path, range(5)) == 2 and fr.run_seed(1, tmp_path, range(5)) == 1
    with pytest.raises(ValueError, match="none of the seeds 0..1"):
        fr.run_seed(tag, tmp_path, range(2))
