"""Put the golden notebooks' outputs into the book's execution cache.

The test command replays every chapter with nbval, which compares each output with the golden
notebook book/NAME.ipynb. Building the website from those same verified outputs, instead of
executing every chapter a second time, keeps one execution per chapter per run. This script
reads each chapter book/NAME.md exactly as the book build reads it (MyST-NB's reader), copies in
the outputs of book/NAME.ipynb cell by cell, and stores the result in the jupyter-cache that
`execute_notebooks: cache` consults (_build/.jupyter_cache).
"""

import sys
from pathlib import Path

import nbformat
import yaml
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from myst_nb.core.read import read_myst_markdown_notebook
from myst_parser.config.main import MdParserConfig

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "_build" / ".jupyter_cache"


def primed_notebook(md_path, md_config):
    nb = read_myst_markdown_notebook(md_path.read_text(), config=md_config, path=md_path)
    golden = nbformat.read(md_path.with_suffix(".ipynb"), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    golden_code = [c for c in golden.cells if c.cell_type == "code"]
    if [c.source.strip() for c in code] != [c.source.strip() for c in golden_code]:
        sys.exit(f"{md_path.relative_to(ROOT)} and its golden notebook differ: run python scripts/golden.py {md_path.relative_to(ROOT)}")
    for cell, ref in zip(code, golden_code):
        cell.outputs, cell.execution_count = ref.outputs, ref.execution_count
    return nb


def main():
    extensions = yaml.safe_load((ROOT / "_config.yml").read_text())["parse"]["myst_enable_extensions"]
    md_config = MdParserConfig(enable_extensions=set(extensions))
    cache = get_cache(str(CACHE))
    for golden in sorted((ROOT / "book").glob("*.ipynb")):
        md_path = golden.with_suffix(".md")
        nb = primed_notebook(md_path, md_config)
        cache.cache_notebook_bundle(CacheBundleIn(nb, str(md_path)), check_validity=False, overwrite=True)
        assert cache.match_cache_notebook(nb) is not None
        print(f"cached the verified outputs of {md_path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
