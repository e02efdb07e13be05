"""The docs' generated figures agree with the records that measured them, and the renderer reads those records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nbhelpers.tutorials import docs


def test_generated_blocks_match_their_records():
    assert docs.stale_files() == [], "run `python -m nbhelpers.tutorials.docs` and commit the result"


def test_the_toy_table_follows_the_record(tmp_path: Path):
    """Change a figure in a copy of the record: the rendered table changes with it (nothing is hard-coded)."""
    record = json.loads(docs.TOY_LESSONS_RECORD.read_text(encoding="utf-8"))
    sd = record["models"]["sd"]
    best = f"{sd['best_guidance']:g}"
    sd["accuracy_by_guidance"][best]["all"] = 0.123
    sd["attention_ratio"]["coarsest"]["mean"] = 9.87
    copy = tmp_path / "toy_lessons.json"
    copy.write_text(json.dumps(record), encoding="utf-8")
    table = docs.render_toy_models(lessons_record=copy)
    assert "| ... all three right | 12% /" in table
    assert "9.87 /" in table


def test_a_block_whose_markers_were_removed_is_reported(tmp_path: Path):
    with pytest.raises(ValueError, match="BEGIN/END markers"):
        docs.replace_block("no markers here", "toy-models", "x")


def test_check_mode_finds_a_stale_file(tmp_path: Path):
    shutil.copytree(docs.DOCS, tmp_path / "docs")
    page = tmp_path / "docs" / "stand-ins.md"
    page.write_text(docs.replace_block(page.read_text(encoding="utf-8"), "toy-models", "old\n"), encoding="utf-8")
    assert docs.stale_files(tmp_path / "docs") == [page]
    docs.stale_files(tmp_path / "docs", write=True)
    assert docs.stale_files(tmp_path / "docs") == []


def test_every_relative_link_in_the_docs_leads_to_a_file():
    """docs/cli.md linked benchmarks/README.md from docs/, where no such file is."""
    import re

    root = docs.PROJECT_ROOT
    pages = [root / "README.md", root / "CONTRIBUTING.md", root / "CHANGELOG.md", *sorted(docs.DOCS.glob("*.md"))]
    pages += sorted((root / "benchmarks").glob("*.md"))
    broken = [
        f"{page.relative_to(root)}: {target}"
        for page in pages
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8"))
        if not re.match(r"[a-z]+:|#", target) and not (page.parent / target.split("#")[0]).exists()
    ]
    assert broken == []
