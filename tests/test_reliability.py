"""The figures docs/RELIABILITY.md quotes: counted, summed and written as they should be."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability import BEGIN, END, Figures, rewrite_report, summed


def test_a_figure_is_named_area_dot_what_and_only_grows() -> None:
    figures = Figures()
    figures.add("crash.lost", 0)
    figures.add("crash.kills", 3)
    figures.merge({"crash.kills": 2})
    assert figures.counts == {"crash.lost": 0, "crash.kills": 5}
    with pytest.raises(ValueError):
        figures.add("Crash kills", 1)
    with pytest.raises(ValueError):
        figures.add("crash.kills", -1)


def test_the_workers_figures_are_summed_and_a_zero_is_kept() -> None:
    assert summed([{"a.b": 1, "a.lost": 0}, {"a.b": 2}]) == {"a.b": 3, "a.lost": 0}


def test_only_the_table_between_the_markers_is_rewritten(tmp_path: Path) -> None:
    report = tmp_path / "RELIABILITY.md"
    report.write_text(f"# Title\n\nprose\n{BEGIN}\nold table\n{END}\n\nmore prose\n")
    assert rewrite_report({"badinput.cases": 1234, "badinput.store_changed": 0}, report)
    text = report.read_text()
    assert text.startswith("# Title\n\nprose\n")
    assert text.endswith(f"{END}\n\nmore prose\n")
    assert "old table" not in text
    assert "| `badinput.cases` | 1,234 |" in text
    assert "| `badinput.store_changed` | 0 |" in text


def test_a_report_without_markers_is_left_alone(tmp_path: Path) -> None:
    report = tmp_path / "RELIABILITY.md"
    report.write_text("# nothing to replace\n")
    assert not rewrite_report({"a.b": 1}, report)
    assert report.read_text() == "# nothing to replace\n"
