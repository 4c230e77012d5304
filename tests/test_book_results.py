"""Every theorem, proposition, lemma and corollary of the book is named by a test that checks it."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = re.compile(r"```\{prf:(?:theorem|proposition|lemma|corollary)\}[^\n]*\n:label: ([\w-]+)")


def test_every_stated_result_has_a_numerical_check():
    labels = {label for page in (ROOT / "book").glob("*.md") for label in RESULT.findall(page.read_text())}
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != Path(__file__).name)
    assert len(labels) > 40  # the pattern finds the book's results (43 when written)
    assert sorted(label for label in labels if label not in tests) == []
