"""The repository carries what its code cites: every docs/*.md named in the code exists (with the
section named beside it), and nothing points at design notes a user of the repository lacks."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for folder in ("bench", "baselines", "deep", "datasets", "tests")
           for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".json")]
CITATION = re.compile(r'(docs/[\w.-]+\.md)(?:[,;]?\s*\\?"([^"\\]+)\\?")?')


def test_cited_documents_and_sections_exist():
    cited = 0
    for path in SOURCES:
        for document, section in CITATION.findall(path.read_text()):
            target = ROOT / document
            assert target.is_file(), f"{path.relative_to(ROOT)} cites missing {document}"
            if section:
                headings = re.findall(r"^#+ (.+)$", target.read_text(), re.MULTILINE)
                assert any(h.startswith(section) for h in headings), (path, document, section)
            cited += 1
    assert cited >= 8  # the survey presets, conventions and metric definitions


def test_no_code_cites_documents_outside_the_repository():
    outside = [str(p.relative_to(ROOT)) for p in SOURCES if p.name != "test_citations.py"
               and re.search(r"\b(DESIGN|REFERENCES)\.md", p.read_text())]
    assert outside == []
