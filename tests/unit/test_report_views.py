"""report/views: the markdown tables of a finished sweep, break map, audit sweep or benchmark folder, and
`mpu-report DIR --view NAME` printing them."""
from __future__ import annotations

import json

import pytest

from helpers import BREAK_KEYS, break_map_table, write_run
from mpu_cli.cli.report import main as report_main
from mpu_cli.report.breakmap import write_break_map
from mpu_cli.report.views import VIEWS
from mpu_cli.report.views.breakmap import break_markdown


def _quick(fp, fr):
    return {"forget_Q_A_Prob": fp, "forget_Q_A_ROUGE": fr, "retain_Q_A_Prob": 0.5, "retain_Q_A_ROUGE": 0.6}


def test_seeds_view_gives_means_intervals_and_the_paired_degradation(tmp_path):
    for seed, (clean, mpu) in enumerate([((0.10, 0.40), (0.12, 0.44)), ((0.20, 0.40), (0.22, 0.48))]):
        write_run(tmp_path, f"clean_s{seed}", _quick(*clean), arm="clean", seed=seed, algorithm__name="npo")
        write_run(tmp_path, f"mpu_s{seed}", _quick(*mpu), arm="mpu", kappa=0.1, seed=seed, algorithm__name="npo")
    text = VIEWS["seeds"].render(tmp_path)
    rows = {tuple(r.split(" | ")[1:3]): r for r in text.splitlines() if r.startswith("| npo")}
    assert set(rows) == {("clean", "–"), ("mpu", "0.1")}
    assert list(rows) == [("clean", "–"), ("mpu", "0.1")]  # the baseline first
    # forget Prob of the clean arm: mean 0.15 over 2 seeds, t-interval 0.15 ± 12.71·0.0707/√2
    assert "| 2 | 0.15 [-0.485, 0.785] |" in rows[("clean", "–")]
    # deg_avg per seed: mean of (0.12−0.10)/0.10 and (0.44−0.40)/0.40 = 15 %; of 0.1 and 0.2 = 15 %: no spread
    assert "+15.0 % [+15.0, +15.0] (worse)" in rows[("mpu", "0.1")]


def test_bench_view_is_a_table_of_the_columns_that_hold_values(tmp_path):
    (tmp_path / "bench.csv").write_text("run,m,wall_s,server_pct,empty\nm-sweep,2,52.34,1.5812,\n"
                                        "m-sweep,4,80.0,2.25,\n")
    assert VIEWS["bench"].render(tmp_path) == ("| run | m | wall_s | server_pct |\n|---|---|---|---|\n"
                                               "| m-sweep | 2 | 52.3 | 1.58 |\n| m-sweep | 4 | 80 | 2.25 |")


def test_a_break_map_folder_becomes_one_table(tmp_path):
    """The break map of a hand-made sweep (tests/test_breakmap.py's table): forget Prob per arm and κ, bold
    where the paired interval excludes clean, and how far each arm holds."""
    write_break_map(break_map_table(), tmp_path, BREAK_KEYS, plots=False)
    text = break_markdown(tmp_path, seconds=125.0)
    assert text.startswith("`make reproduce-break` on ") and "2 min 5 s" in text and "3 seeds" in text
    lines = text.splitlines()
    assert lines[2] == "| algorithm | clean | arm | κ=0.1 | κ=1 | holds to |"
    assert lines[4].startswith("| npo | 0.460 ± 0.025 | noised | 0.460 ± 0.05 | **0.670 ± 0.05** | 0.1 / 0.1 |")
    assert "| mpu m=2 | **0.670 ± 0.05** | **0.670 ± 0.05** | <0.1 / <0.1 |" in text
    assert "| noised α=mean(m=2) | 0.460 ± 0.05 | 0.460 ± 0.05 | 1 / 1 |" in text
    assert VIEWS["break_map"].render(tmp_path) == break_markdown(tmp_path)  # no duration in the caption


def _audit_cell(kappa, m, perturb, a1):
    return {
        "config": {"algorithm": "npo", "client_epochs": 5, "client_lr": 1e-4, "split": "forget10", "seed": 0,
                   "kappa": kappa, "m": m, "perturb_unprotected": perturb},
        "params": {"total": 2_500_000, "protected": 2_000_000},
        "attacks": {"A0": {"exposed_fraction": 0.0},
                    "A1": {"rel_err_protected": a1},
                    "A2": {"perm_accuracy": 0.5, "angle_err_mean_rad": 1.234, "rel_err_protected": 1.0,
                           "rel_err_protected_mod_T": a1 / 2, "rel_err_all_mod_T": a1 / 4},
                    "A4": {"rel_err_protected": 2.0},
                    "A5": {"rel_err_protected": 3.0, "rel_err_protected_mod_T": 0.25, "rel_err_all_mod_T": 0.125}},
        "utility": {"theta_prev": {"retain_prob": 0.91234}, "copy_1": {"retain_prob": 0.5}},
    }


def _audit_sweep(folder):
    cells = [(0.01, 2, False, 1.5), (0.1, 4, False, 15.0), (0.01, 2, True, 1.5)]
    for i, cell in enumerate(cells):
        (folder / f"{i}_cell").mkdir()
        report = _audit_cell(*cell)
        if i == 1:  # A6 mounted in this cell only
            report["attacks"]["A6"] = {"rel_err_protected": 4.0, "rel_err_protected_mod_T": 0.5}
        (folder / f"{i}_cell" / "privacy_report.json").write_text(json.dumps(report))
    (folder / "privacy_sweep.json").write_text("{}")


def test_audit_views_read_each_cell_of_the_sweep(tmp_path):
    _audit_sweep(tmp_path)
    text = VIEWS["audit"].render(tmp_path)
    assert text.startswith("Measured on the embedded default (2.50 M parameters, 2.00 M in blocks;\nNPO, 5 epochs, "
                           "lr 0.0001, forget10, seed 0; `mpu-audit sweep=true seed=0`):")
    rows = [r for r in text.splitlines() if r.startswith("| 0.")]
    assert rows == ["| 0.01 | 2 | 0 | 1.5 | 0.500 / 1.2 rad | 1 (0.75) | 2 | 3 | 0.25 | – | – | – (– / –) |",
                    "| 0.1 | 4 | 0 | 15 | 0.500 / 1.2 rad | 1 (7.5) | 2 | 3 | 0.25 | – | 4 (0.5) | – (– / –) |"]
    rows = [r for r in VIEWS["audit_all_params"].render(tmp_path).splitlines() if r.startswith("| 0.")]
    assert rows[2] == "| 0.01 | 2 | true | 0 | 0.375 | 0.125 | 0.9123 | 0.5 | – |"
    assert len(rows) == 3


def test_an_audit_recorded_with_the_seeds_tag_shows_the_tag_and_no_seed(tmp_path):
    _audit_sweep(tmp_path)
    for cell in tmp_path.glob("*_cell/privacy_report.json"):
        cell.write_text(cell.read_text().replace('"seed": 0', '"seed": "seed-0123456789ab"'))
    assert "forget10, seed tag seed-0123456789ab; `mpu-audit sweep=true seed=<its seed>`):" in \
        VIEWS["audit"].render(tmp_path)


def test_mpu_report_prints_a_view_and_refuses_a_folder_it_does_not_read(tmp_path, capsys):
    (tmp_path / "bench.csv").write_text("run,m\nm-sweep,2\n")
    assert report_main([str(tmp_path), "--view", "bench"]) == 0
    assert capsys.readouterr().out == "| run | m |\n|---|---|\n| m-sweep | 2 |\n"
    assert report_main([str(tmp_path), "--view", "audit"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--view audit" in err[0] and "privacy_sweep.json" in err[0]
    with pytest.raises(SystemExit) as e:
        report_main([str(tmp_path), "--view", "nosuch"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert not (tmp_path / "summary.md").exists()  # a view writes nothing


def test_demo_view_gives_one_row_per_thread_count(tmp_path):
    """`make demo`'s run at 1 and 2 threads (threads<N>/): forget Prob and utility target → unlearned, the retain
    model's privleak and the target's hash, each read from the run's own summaries."""
    target = {"forget_Q_A_Prob": 0.9421, "model_utility": 0.3291, "privleak": 1.0}
    for t in (2, 1):
        run = write_run(tmp_path, f"threads{t}", {"forget_Q_A_Prob": 0.4761, "model_utility": 0.3122 + t / 1000},
                        target="6ce68eb94be7abcdef")
        for sub, privleak in (("target", 1.0), ("retain", 73.24)):
            (run / sub).mkdir()
            (run / sub / "TOFU_SUMMARY.json").write_text(json.dumps(target | {"privleak": privleak}))
    text = VIEWS["demo"].render(tmp_path)
    assert text.startswith("`mpu-run algorithm=npo kappa=0.01 m=2 seed=0` (`make demo`'s run) on ")
    assert "OMP_NUM_THREADS=1 and 2)" in text.splitlines()[0]
    assert text.splitlines()[2:] == [
        "| OMP_NUM_THREADS | forget_Q_A_Prob target → unlearned | model_utility target → unlearned | retain model "
        "privleak | target hash |", "|---|---|---|---|---|",
        "| 1 | 0.942 → 0.476 | 0.329 → 0.313 | 73.2 | `6ce68eb94be7` |",
        "| 2 | 0.942 → 0.476 | 0.329 → 0.314 | 73.2 | `6ce68eb94be7` |"]
    with pytest.raises(ValueError, match="holds no threads<N>/ run"):
        VIEWS["demo"].render(tmp_path / "threads1")


def test_muse_view_gives_the_target_the_retrained_model_and_each_arm(tmp_path):
    """A MUSE sweep: the target's and retrained model's summaries, then GradDiff and NPO per arm (κ told apart
    for MPU) from results.csv; other algorithms only in the caption."""
    import pandas as pd

    metrics = ("forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE", "extraction_strength",
               "privleak")
    for i, (algorithm, arm, kappa) in enumerate([("npo", "mpu", 0.1), ("npo", "mpu", 0.01), ("npo", "clean", 0.1),
                                                 ("ga", "noised", 0.1), ("graddiff", "noised", 0.1)]):
        values = dict(zip(metrics, (0.5 + i / 10, 0.4, 0.3, 0.01234, -12.34 - i), strict=True))
        run = write_run(tmp_path, f"run{i}", values, summary_file="MUSE_SUMMARY.json", arm=arm, kappa=kappa,
                        algorithm__name=algorithm, data__benchmark="muse", data__split="forget")
        pd.read_csv(run / "results.csv").assign(**values).to_csv(run / "results.csv", index=False)
        for sub, scale in (("target", 2), ("retain", 3)):
            (run / sub).mkdir()
            (run / sub / "MUSE_SUMMARY.json").write_text(json.dumps({m: 0.25 * scale for m in metrics}))
    lines = VIEWS["muse"].render(tmp_path).splitlines()
    assert lines[0].startswith("`make reproduce-muse-tiny` on ") and "5 runs of ga, graddiff, npo (seed 0" in lines[0]
    assert lines[2:] == [
        "| algorithm | arm | " + " | ".join(metrics) + " |", "|---|---|---|---|---|---|---|",
        "| (target) |  | 0.500 | 0.500 | 0.500 | 0.5 | 0.5 |", "| (retrained) |  | 0.750 | 0.750 | 0.750 | 0.75 | 0.8 |",
        "| graddiff | noised κ 0.1 | 0.900 | 0.400 | 0.300 | 0.0123 | −16.3 |",
        "| npo | clean | 0.700 | 0.400 | 0.300 | 0.0123 | −14.3 |",
        "| npo | mpu κ 0.01 | 0.600 | 0.400 | 0.300 | 0.0123 | −13.3 |",
        "| npo | mpu κ 0.1 | 0.500 | 0.400 | 0.300 | 0.0123 | −12.3 |"]


def test_the_scale_view_says_when_the_targets_evaluation_came_from_another_runs_cache():
    from mpu_cli.report.views.scale import _reused_cache

    own = {"command": ["mpu-run", "hydra.run.dir=/r/run2", "prepare.cache_dir=/r/run2/cache"]}
    other = {"command": ["mpu-run", "hydra.run.dir=/r/run2", "prepare.cache_dir=/r/run1/cache"]}
    assert not _reused_cache(own) and _reused_cache(other) and not _reused_cache({})
