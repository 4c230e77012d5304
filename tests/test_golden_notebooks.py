"""The golden notebooks book/NAME.ipynb are the executed twins of the chapters book/NAME.md:
nbval replays them and the website is built from their outputs, so they must hold exactly the
chapter's cells, every code cell executed. Regenerate with `python scripts/golden.py`."""

from pathlib import Path

import jupytext
import nbformat
import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = sorted(p for p in BOOK.glob("*.md") if "```{code-cell}" in p.read_text())


def cells(nb):
    return [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in nb.cells]


def test_there_are_chapters():
    assert CHAPTERS, "no executable chapter found in book/"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_golden_notebook_matches_its_source(md):
    golden = md.with_suffix(".ipynb")
    assert golden.exists(), f"{golden.name} is missing: run python scripts/golden.py book/{md.name}"
    nb = nbformat.read(golden, as_version=4)
    assert cells(nb) == cells(jupytext.read(md)), f"{golden.name} is out of date: run python scripts/golden.py book/{md.name}"
    unexecuted = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.execution_count is None]
    assert not unexecuted, f"code cells {unexecuted} of {golden.name} were never executed"


def test_every_golden_notebook_has_a_source():
    orphans = [p.name for p in BOOK.glob("*.ipynb") if not p.with_suffix(".md").exists()]
    assert not orphans
