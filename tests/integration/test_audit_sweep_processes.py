"""`mpu-audit sweep=true`: every cell runs in a process of its own (so one cell's peak memory is its own), `only=`
runs some cells into a folder that holds others, and the sweep's table is written once every cell's report is in."""
import json

from mpu_cli.cli.audit import main as audit_main


def test_sweep_cells_run_alone_and_the_table_waits_for_every_cell(tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["sweep=true", "seed=0", "b1=false", "client.epochs=1", "cells=kappa=0.1,fit=false;kappa=1,m=4,fit=false",
            f"out={out}"]
    audit_main([*args, "only=1"])
    assert "privacy_sweep.md follows once every cell is there" in capsys.readouterr().out
    cells = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(cells) == 1 and cells[0].startswith("1_") and not (out / "privacy_sweep.md").exists()

    audit_main([*args, "only=0"])
    assert "wrote" in capsys.readouterr().out and (out / "privacy_sweep.md").is_file()
    reports = [json.loads((out / name / "privacy_report.json").read_text())
               for name in sorted(p.name for p in out.iterdir() if p.is_dir())]
    assert [(r["config"]["kappa"], r["config"]["m"]) for r in reports] == [(0.1, 2), (1.0, 4)]
    assert all(r["peak_rss_mb"] for r in reports)  # measured in the cell's own process
    rows = json.loads((out / "privacy_sweep.json").read_text())["rows"]
    assert [(row["kappa"], row["m"]) for row in rows] == [(0.1, 2), (1.0, 4)]
