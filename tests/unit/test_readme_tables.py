"""scripts/readme_tables.py: the marker rewriter touches only the text between a table's markers, and every
registered table has its markers in README.md. The tables' views are the package's (tests/test_report_views.py)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
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


def test_every_registered_table_has_its_markers_in_the_docs():
    marked = [n for f in rt.doc_files() for n in rt.marked_names(f.read_text())]
    assert set(rt.TABLES) <= set(marked), sorted(set(rt.TABLES) - set(marked))
    assert len(marked) == len(set(marked)), "a table is marked twice"
    assert sorted(set(marked) - set(rt.TABLES)) == [], "a marked table has no command"


@pytest.mark.parametrize("name,flag", [("frontier", "--frontier-dir"), ("frontier_smollm2", "--frontier-smollm2-dir")])
def test_a_frontier_table_is_formatted_from_a_finished_folder(tmp_path, name, flag):
    folder = tmp_path / "done"
    folder.mkdir()
    (folder / "frontier.md").write_text(f"{name}: caption\n\n| arm | client error |\n|---|---|\n| noised | 1 (A1) |\n\n")
    readme = tmp_path / "page.md"
    readme.write_text(f"text\n<!-- table: {name} -->\nold\n<!-- /table -->\nafter\n")
    assert rt.main(["--readme", str(readme), "--tables", name, flag, str(folder)]) == 0
    assert readme.read_text() == (f"text\n<!-- table: {name} -->\n{name}: caption\n\n| arm | client error |\n|---|---|\n"
                                  "| noised | 1 (A1) |\n<!-- /table -->\nafter\n")
