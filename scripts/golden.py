"""Execute chapters and store them as golden notebooks beside their sources.

    python scripts/golden.py                  # every chapter in _toc.yml
    python scripts/golden.py book/langevin.md # one chapter

Each MyST chapter book/NAME.md is executed top to bottom in a fresh kernel, with the working
directory book/, and written to book/NAME.ipynb with its outputs. nbval replays these notebooks
in the tests and compares every output, so regenerate them only when a change of output is
intended, and read the diff.
"""

import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def chapters():
    """The executable chapters: every .md under book/ with a code cell."""
    return sorted(p for p in (ROOT / "book").glob("*.md") if "```{code-cell}" in p.read_text())


def execute(md_path):
    md_path = Path(md_path).resolve()
    nb = jupytext.read(md_path)
    os.environ.setdefault("CI", "true")  # chapters turn progress bars off under CI
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(md_path.parent)}}).execute()
    seconds = time.perf_counter() - start
    for cell in nb.cells:  # volatile per-run metadata would make every regeneration a diff
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    out = md_path.with_suffix(".ipynb")
    nbformat.write(nb, out)
    print(f"{md_path.relative_to(ROOT)}: executed in {seconds:.1f} s -> {out.relative_to(ROOT)}")
    return seconds


if __name__ == "__main__":
    for path in sys.argv[1:] or chapters():
        execute(path)
