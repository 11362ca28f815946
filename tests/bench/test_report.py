"""BENCHMARKS.md rewriting: figures are replaced, hand-written notes survive."""

from __future__ import annotations

from pathlib import Path

from bench.report import NOTES_MARK, write_section


def test_rewriting_a_section_replaces_its_figures_and_keeps_its_notes(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    write_section("Alpha", "| a | 1 |", path=path)
    write_section("Beta", "| b | 2 |", path=path)
    text = path.read_text().replace("| a | 1 |\n", f"| a | 1 |\n\n{NOTES_MARK}\nwhy a is 1\n")
    path.write_text(text)

    write_section("Alpha", "| a | 3 |", path=path)

    text = path.read_text()
    assert "| a | 1 |" not in text and "| a | 3 |" in text
    assert text.count("why a is 1") == 1
    assert text.index("| a | 3 |") < text.index("why a is 1") < text.index("## Beta")
    assert "| b | 2 |" in text


def test_a_section_without_notes_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    write_section("Alpha", "| a | 1 |\n\nold prose", path=path)
    write_section("Alpha", "| a | 2 |", path=path)
    text = path.read_text()
    assert "old prose" not in text and NOTES_MARK not in text
    assert text.count("## Alpha") == 1
