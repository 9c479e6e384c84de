"""scripts/readme_tables.py: the marker rewriter touches only the text between a table's markers, and every
registered table has its markers in README.md."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("readme_tables", REPO / "scripts" / "readme_tables.py")
rt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rt)

README = """# Title

Some text with | a | pipe | table | that is not marked |

<!-- table: one -->
| old | table |
|---|---|
| 1 | 2 |
<!-- /table -->

Between the tables.
<!-- table: two -->
<!-- /table -->
Tail, no newline at the end"""


def test_only_the_text_between_the_markers_changes(tmp_path):
    new = rt.replace_tables(README, {"one": "| new |\n|---|\n| 3 |\n", "two": "caption\n\n| a |\n|---|"})
    assert new == README.replace("| old | table |\n|---|---|\n| 1 | 2 |", "| new |\n|---|\n| 3 |").replace(
        "<!-- table: two -->\n", "<!-- table: two -->\ncaption\n\n| a |\n|---|\n")
    assert rt.replace_tables(new, {"one": "| new |\n|---|\n| 3 |"}) == new  # a rerun changes nothing
    assert rt.replace_tables(README, {}) == README


def test_main_rewrites_a_file_and_keeps_a_failed_tables_old_text(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text(README)

    def broken():
        raise RuntimeError("the measuring command failed")

    monkeypatch.setattr(rt, "TABLES", {"one": rt.Table("one", "1 s", lambda: "| fresh |\n|---|"),
                                       "two": rt.Table("two", "1 s", broken)})
    assert rt.main(["--readme", str(readme)]) == 1
    text = readme.read_text()
    assert "| fresh |" in text and "| old | table |" not in text
    assert text.endswith("Between the tables.\n<!-- table: two -->\n<!-- /table -->\nTail, no newline at the end")
    assert rt.main(["--readme", str(readme), "--tables", "nosuch"]) == 2


def test_bad_markers_are_refused():
    with pytest.raises(rt.MarkerError, match="three"):
        rt.replace_tables(README, {"three": "x"})
    with pytest.raises(rt.MarkerError, match="no '<!-- /table -->'"):
        rt.replace_tables("<!-- table: one -->\n| a |\n", {"one": "x"})
    with pytest.raises(rt.MarkerError, match="not closed"):
        rt.replace_tables("<!-- table: one -->\n<!-- table: two -->\n<!-- /table -->\n", {"two": "x"})


def test_every_registered_table_has_its_markers_in_the_readme():
    marked = rt.marked_names((REPO / "README.md").read_text())
    assert set(rt.TABLES) <= set(marked), sorted(set(rt.TABLES) - set(marked))
    assert len(marked) == len(set(marked)), "a table is marked twice"
    assert sorted(set(marked) - set(rt.TABLES)) == [], "a marked table has no command"


def test_smollm2_table_gives_means_intervals_and_the_paired_degradation(tmp_path):
    from test_report import _write_run

    def summary(fp, fr):
        return {"forget_Q_A_Prob": fp, "forget_Q_A_ROUGE": fr, "retain_Q_A_Prob": 0.5, "retain_Q_A_ROUGE": 0.6}

    for seed, (clean, mpu) in enumerate([((0.10, 0.40), (0.12, 0.44)), ((0.20, 0.40), (0.22, 0.48))]):
        _write_run(tmp_path, f"clean_s{seed}", summary(*clean), arm="clean", seed=seed, algorithm__name="npo")
        _write_run(tmp_path, f"mpu_s{seed}", summary(*mpu), arm="mpu", kappa=0.1, seed=seed, algorithm__name="npo")
    text = rt.smollm2_markdown(tmp_path)
    rows = {tuple(r.split(" | ")[1:3]): r for r in text.splitlines() if r.startswith("| npo")}
    assert set(rows) == {("clean", "–"), ("mpu", "0.1")}
    # forget Prob of the clean arm: mean 0.15 over 2 seeds, t-interval 0.15 ± 12.71·0.0707/√2
    assert "| 2 | 0.15 [-0.485, 0.785] |" in rows[("clean", "–")]
    # deg_avg per seed: mean of (0.12−0.10)/0.10 and (0.44−0.40)/0.40 = 15 %; of 0.1 and 0.2 = 15 %: no spread
    assert "+15.0 % [+15.0, +15.0] (worse)" in rows[("mpu", "0.1")]


def test_bench_csv_becomes_a_table_of_the_columns_that_hold_values(tmp_path):
    csv = tmp_path / "bench.csv"
    csv.write_text("run,m,wall_s,server_pct,empty\nm-sweep,2,52.34,1.5812,\nm-sweep,4,80.0,2.25,\n")
    assert rt.bench_markdown(csv) == ("| run | m | wall_s | server_pct |\n|---|---|---|---|\n"
                                      "| m-sweep | 2 | 52.3 | 1.58 |\n| m-sweep | 4 | 80 | 2.25 |")


def test_a_break_map_folder_becomes_one_table(tmp_path):
    """The break map of a hand-made sweep (tests/test_breakmap.py's table): forget Prob per arm and κ, bold
    where the paired interval excludes clean, and how far each arm holds."""
    from helpers import BREAK_KEYS, break_map_table

    from mpu_cli.report.breakmap import write_break_map

    write_break_map(break_map_table(), tmp_path, BREAK_KEYS, plots=False)
    text = rt.break_markdown(tmp_path, seconds=125.0)
    assert text.startswith("`make reproduce-break` on ") and "2 min 5 s" in text and "3 seeds" in text
    lines = text.splitlines()
    assert lines[2] == "| algorithm | clean | arm | κ=0.1 | κ=1 | holds to |"
    assert lines[4].startswith("| npo | 0.460 ± 0.025 | noised | 0.460 ± 0.05 | **0.670 ± 0.05** | 0.1 / 0.1 |")
    assert "| mpu m=2 | **0.670 ± 0.05** | **0.670 ± 0.05** | <0.1 / <0.1 |" in text
    assert "| noised α=mean(m=2) | 0.460 ± 0.05 | 0.460 ± 0.05 | 1 / 1 |" in text
